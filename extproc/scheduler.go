package extproc

import (
	"context"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// Scheduler is what the gateway asks for picks and tells about outcomes. The
// in-process scheduler (all-in-one) and the gRPC client (schedclient)
// both implement it.
//
// Pick returns the final answer (ROUTED or REJECTED). When the request has to
// wait in the admission queue, it first calls queued (once) with the QUEUED
// answer, so the gateway can extend Envoy's message timeout before waiting.
type Scheduler interface {
	Pick(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error)
	Report(ctx context.Context, r *llmrouterv1.OutcomeReport) error
}

// Availability is implemented by a Scheduler that knows whether it can be
// reached (the gRPC client watches its connection). The gateway asks it before
// every pick, so an unreachable scheduler costs a request nothing.
type Availability interface {
	Available() bool
}
