// Package schedclient is the gateway's gRPC client of the scheduler's
// PickerService. It implements extproc.Scheduler, extproc.ModelLister and
// extproc.Availability: it watches the connection and probes the
// scheduler's health service so the gateway learns within a second that the
// scheduler is gone (and then answers Envoy at once without a pick), and
// learns by itself that it is back.
//
// Per-call deadlines (llm_gateway.pick_timeout until the scheduler answers
// QUEUED, the queue wait after) are set by the gateway on the context it
// passes, so the in-process scheduler of all-in-one gets the same bounds.
package schedclient

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
)

// Probe timing: a probe every ProbeInterval, each bounded by ProbeTimeout, so
// a scheduler that vanishes without closing the connection (host down,
// network partition) is noticed within their sum; a closed connection is
// noticed at once from the connectivity state.
const (
	ProbeInterval = 200 * time.Millisecond
	ProbeTimeout  = 600 * time.Millisecond
)

// Client talks to the scheduler.
type Client struct {
	cc     *grpc.ClientConn
	picker llmrouterv1.PickerServiceClient
	health healthpb.HealthClient
	log    *zap.Logger

	ready  atomic.Bool
	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Dial connects to the scheduler at addr with the configured token and TLS.
// It does not wait: until the first successful probe, Available is false.
func Dial(cfg config.Config, addr string, log *zap.Logger) (*Client, error) {
	opts, err := grpcx.DialOptions(cfg)
	if err != nil {
		return nil, err
	}
	// Reconnect quickly after the scheduler restarts (the default backoff
	// grows to two minutes); picks resume within about a second.
	opts = append(opts, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: time.Second,
	}))
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cc:     cc,
		picker: llmrouterv1.NewPickerServiceClient(cc),
		health: healthpb.NewHealthClient(cc),
		log:    log,
		kick:   make(chan struct{}, 1),
		cancel: cancel,
	}
	c.wg.Add(2)
	go c.probeLoop(ctx)
	go c.watchState(ctx)
	return c, nil
}

// Available reports whether the scheduler answered the last probe and the
// connection has not dropped since.
func (c *Client) Available() bool { return c.ready.Load() }

func (c *Client) setReady(v bool, why string) {
	if c.ready.Swap(v) != v {
		if v {
			c.log.Info("scheduler reachable", zap.String("target", c.cc.Target()))
		} else {
			c.log.Warn("scheduler unreachable", zap.String("target", c.cc.Target()), zap.String("reason", why))
		}
	}
}

func (c *Client) probeLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(ProbeInterval)
	defer t.Stop()
	for {
		c.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *Client) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	resp, err := c.health.Check(pctx, &healthpb.HealthCheckRequest{})
	if ctx.Err() != nil {
		return
	}
	switch status.Code(err) {
	case codes.OK:
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			c.setReady(true, "")
		} else {
			c.setReady(false, "health: "+resp.GetStatus().String())
		}
	case codes.Unimplemented, codes.NotFound:
		// The server answered: it is there, only without a health service.
		c.setReady(true, "")
	default:
		c.setReady(false, err.Error())
	}
}

// watchState marks the scheduler unreachable the moment a ready connection
// drops, and asks for a probe on every change.
func (c *Client) watchState(ctx context.Context) {
	defer c.wg.Done()
	state := c.cc.GetState()
	for c.cc.WaitForStateChange(ctx, state) {
		state = c.cc.GetState()
		if state != connectivity.Ready {
			c.setReady(false, "connection "+state.String())
		}
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// ErrUnavailable is returned at once while the scheduler is unreachable.
var ErrUnavailable = status.Error(codes.Unavailable, "scheduler unreachable")

// Pick asks for a pick; queued is called once if the scheduler queues the
// request, before the final answer.
func (c *Client) Pick(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	if !c.Available() {
		return nil, ErrUnavailable
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.picker.Pick(ctx, req)
	if err != nil {
		return nil, err
	}
	sawQueued := false
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.Internal, "scheduler ended the pick without an answer")
		}
		if err != nil {
			return nil, err
		}
		switch resp.Status {
		case llmrouterv1.PickResponse_QUEUED:
			if !sawQueued && queued != nil {
				sawQueued = true
				queued(resp)
			}
		case llmrouterv1.PickResponse_ROUTED, llmrouterv1.PickResponse_REJECTED, llmrouterv1.PickResponse_PASSTHROUGH:
			return resp, nil
		default:
			return nil, status.Errorf(codes.Internal, "scheduler answered pick status %v", resp.Status)
		}
	}
}

// Report sends an outcome; it fails at once while the scheduler is
// unreachable (the scheduler's inflight timeout then releases the pick).
func (c *Client) Report(ctx context.Context, r *llmrouterv1.OutcomeReport) error {
	if !c.Available() {
		return ErrUnavailable
	}
	_, err := c.picker.Report(ctx, r)
	return err
}

// ListModels asks for the models the fleet serves; it fails at once while
// the scheduler is unreachable (the gateway then lets GET /v1/models
// through to an engine). The caller bounds it with its context.
func (c *Client) ListModels(ctx context.Context, req *llmrouterv1.ListModelsRequest) (*llmrouterv1.ListModelsResponse, error) {
	if !c.Available() {
		return nil, ErrUnavailable
	}
	return c.picker.ListModels(ctx, req)
}

// Close stops the watchers and the connection.
func (c *Client) Close() error {
	c.cancel()
	err := c.cc.Close()
	c.wg.Wait()
	return err
}
