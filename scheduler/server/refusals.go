package server

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmrouter/llmrouter/internal/grpcx"
)

// refusalLogEvery bounds the log lines one peer's refused calls produce: a
// misconfigured agent retries forever (with backoff), and the operator
// needs to see it once in a while, not once per attempt.
const refusalLogEvery = 30 * time.Second

// maxRefusalPeers bounds the per-peer memory; beyond it the map starts over
// (at worst a few extra log lines).
const maxRefusalPeers = 1024

// refusals logs calls refused for a missing or wrong token (the token check
// itself, in internal/grpcx, only answers the caller).
type refusals struct {
	log  *zap.Logger
	seen refusalLog // by peer IP
}

func (r *refusals) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	r.note(ctx, info.FullMethod, err)
	return resp, err
}

func (r *refusals) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	r.note(ss.Context(), info.FullMethod, err)
	return err
}

func (r *refusals) note(ctx context.Context, method string, err error) {
	if status.Code(err) != codes.Unauthenticated {
		return
	}
	addr, ip := grpcx.PeerHost(ctx)
	logNow, suppressed := r.seen.due(ip, time.Now())
	if !logNow {
		return
	}
	r.log.Warn("call refused: missing or invalid token", zap.String("peer", addr), zap.String("method", method),
		zap.String("error", status.Convert(err).Message()), zap.Int("refused_since_last_log", suppressed))
}

// registrationRefusals limits the WARN of refused registrations to one per
// address and reason every refusalLogEvery: a rogue or misconfigured agent
// retries every second, and the operator needs the address named, not a
// line per attempt.
type registrationRefusals struct{ seen refusalLog }

// log reports whether this refusal is to be logged now, and how many were
// suppressed since the last logged one.
func (r *registrationRefusals) log(address, reason string, now time.Time) (bool, int) {
	return r.seen.due(address+"\x00"+reason, now)
}

// refusalLog remembers, by key, when a refusal was last logged and how many
// were suppressed since.
type refusalLog struct {
	mu   sync.Mutex
	seen map[string]*refusal
}

type refusal struct {
	at         time.Time
	suppressed int
}

// due reports whether key's refusal at now is to be logged (the first, or
// refusalLogEvery after the last logged one), and how many were suppressed
// since the last logged one.
func (r *refusalLog) due(key string, now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]*refusal{}
	}
	last := r.seen[key]
	if last != nil && now.Sub(last.at) < refusalLogEvery {
		last.suppressed++
		return false, 0
	}
	if len(r.seen) >= maxRefusalPeers {
		clear(r.seen)
	}
	suppressed := 0
	if last != nil {
		suppressed = last.suppressed
	}
	r.seen[key] = &refusal{at: now}
	return true, suppressed
}
