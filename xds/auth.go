package xds

import (
	"context"
	"net"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmrouter/llmrouter/internal/grpcx"
)

// refusedMessage replaces grpcx's refusal text, which speaks of the agents'
// LLMROUTER_TOKEN: Envoy logs this message, and its operator needs to know
// which token its bootstrap lacks.
const refusedMessage = ": Envoy's bootstrap must present llm_scheduler.xds_token " +
	"(render it with `llmrouter bootstrap` and LLMROUTER_LLM_SCHEDULER_XDS_TOKEN set)"

// maxRefusedPeers bounds the set of peers already logged; past it the set
// starts over, so a flood of addresses costs memory and log lines only in
// proportion.
const maxRefusedPeers = 256

// refusals remembers which peer hosts were logged: Envoy retries a refused
// stream every few seconds for as long as it runs, and one line per host says
// all there is to say (the metric counts every refusal).
type refusals struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

func newRefusals() *refusals { return &refusals{seen: map[string]struct{}{}} }

// first reports whether host is refused for the first time.
func (r *refusals) first(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[host]; ok {
		return false
	}
	if len(r.seen) >= maxRefusedPeers {
		clear(r.seen)
	}
	r.seen[host] = struct{}{}
	return true
}

func (s *Server) refusedUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, s.refusal(ctx, info.FullMethod, err)
}

func (s *Server) refusedStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return s.refusal(ss.Context(), info.FullMethod, h(srv, ss))
}

// refusal counts and logs a call the token check turned away (the discovery
// handlers themselves never answer Unauthenticated), never the token itself,
// and rewords the status for Envoy's log.
func (s *Server) refusal(ctx context.Context, method string, err error) error {
	if status.Code(err) != codes.Unauthenticated {
		return err
	}
	s.m.unauthenticated.Inc()
	reason := "no token"
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("authorization")) > 0 {
		reason = "wrong token"
	}
	addr, host := grpcx.PeerHost(ctx)
	if s.refused.first(host) {
		s.log.Warn("xds client refused: "+reason+" (logged once per host; llmrouter_xds_unauthenticated_total counts every refusal)",
			zap.String("peer", addr), zap.String("method", method))
	}
	return status.Error(codes.Unauthenticated, "xds: "+reason+refusedMessage)
}

// loopback reports whether addr is reachable from this host only.
func loopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
