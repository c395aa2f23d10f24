package server

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Server is the scheduler's gRPC API.
type Server struct {
	sch *scheduler.Scheduler
	// mtls: agents present client certificates (tls.client_ca_file), so an
	// advertised host must be one of the certificate's SANs.
	mtls    bool
	log     *zap.Logger
	grpc    *grpc.Server
	health  *health.Server
	refused registrationRefusals
	// stopping closes at shutdown: agent streams never end by themselves,
	// so they are told to go (and re-register elsewhere or later).
	stopping chan struct{}
}

// New builds the gRPC server (not yet listening).
func New(cfg config.Config, sch *scheduler.Scheduler, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opts, err := grpcx.ServerOptions(cfg)
	if err != nil {
		return nil, err
	}
	// Outermost, so it sees the token check's refusals.
	ref := &refusals{log: log}
	opts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(ref.unary), grpc.ChainStreamInterceptor(ref.stream)}, opts...)
	s := &Server{sch: sch, log: log, grpc: grpc.NewServer(opts...), stopping: make(chan struct{}),
		mtls: cfg.TLS.ClientCAFile != "" && cfg.TLS.CertFile != ""}
	llmrouterv1.RegisterAgentServiceServer(s.grpc, &agents{s: s})
	llmrouterv1.RegisterPickerServiceServer(s.grpc, &picker{s: s})
	s.health = grpcx.RegisterHealth(s.grpc)
	for _, svc := range []string{"", llmrouterv1.AgentService_ServiceDesc.ServiceName, llmrouterv1.PickerService_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	return s, nil
}

// GRPC is the underlying server, for registering more services (xDS may
// share it) before Serve.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Serve serves on ln until ctx ends, then stops gracefully: health turns
// NOT_SERVING, agent streams are ended with Unavailable, queued picks get
// httpserve.ShutdownGrace to finish before being cut.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(ln) }()
	s.log.Info("grpc listening", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.health.Shutdown()
	close(s.stopping)
	grpcx.Stop(s.grpc, httpserve.ShutdownGrace)
	return nil
}

// ---------------------------------------------------------------- agents

type agents struct {
	llmrouterv1.UnimplementedAgentServiceServer
	s *Server
}

// registrationError maps a registry error to a gRPC status.
func registrationError(err error) error {
	switch {
	case errors.Is(err, registry.ErrNotAllowed):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, registry.ErrTaken):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, registry.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (a *agents) Connect(stream llmrouterv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "the first message on an agent stream must be Register")
	}
	lease, err := a.register(stream.Context(), reg, nil)
	if err != nil {
		return err
	}
	// lease changes when the agent re-registers on this stream; the deferred
	// end must take the registration current at the end. A stream that just
	// ends (the agent stopped, was killed or cut off) says nothing about the
	// engine: the instance is orphaned — silent, still published — not
	// removed. A registration this stream got wrong is removed.
	reason, orphan := "stream closed", true
	defer func() {
		if orphan {
			a.s.sch.Orphan(lease.ID, lease.Gen, reason)
		} else {
			a.s.sch.Deregister(lease.ID, lease.Gen, reason)
		}
	}()
	if err := sendAck(stream, lease, reg); err != nil {
		return err
	}
	// A decode agent's pd proxy sends prefill work only to the instances
	// named here, so it follows the routable set.
	fleetChanged, unwatch := a.s.sch.Registry().Watch()
	defer unwatch()
	var fleet fleetSender
	if err := fleet.send(stream, a.s.sch.Registry(), reg); err != nil {
		return err
	}

	// One goroutine receives, this one sends and applies: gRPC allows exactly
	// that, and applying here keeps the lease in one goroutine's hands.
	msgs := make(chan *llmrouterv1.AgentMessage)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case m := <-msgs:
			switch {
			case m.GetReport() != nil:
				if err := a.s.sch.InstanceReport(lease.ID, lease.Gen, m.GetReport()); err != nil {
					reason, orphan = "report refused", false
					return status.Error(codes.FailedPrecondition, "report refused: "+err.Error()+"; re-register")
				}
			case m.GetRegister() != nil:
				next, err := a.reRegister(stream, lease, m.GetRegister())
				if next != nil {
					lease = next
					reg = m.GetRegister()
				}
				if err != nil {
					reason, orphan = "re-registration failed: "+err.Error(), false
					return err
				}
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			reason = "stream error: " + err.Error()
			return err
		case <-lease.Done():
			// Replaced by another stream's registration, or removed for
			// missed reports: the agent re-registers if it is still alive.
			return status.Error(codes.Aborted, "registration ended: "+lease.Reason())
		case cmd := <-lease.Commands():
			if err := sendCommand(stream, cmd); err != nil {
				return err
			}
		case <-fleetChanged:
			if err := fleet.send(stream, a.s.sch.Registry(), reg); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-a.s.stopping:
			reason, orphan = "scheduler shutting down", false
			return status.Error(codes.Unavailable, "scheduler shutting down; re-register with backoff")
		}
	}
}

// register admits a registration (holder: the stream's current lease, if
// any), mapping a refusal to its gRPC status. With mTLS the advertised host
// must be one of the agent certificate's SANs.
func (a *agents) register(ctx context.Context, reg *llmrouterv1.Register, holder *registry.Lease) (*registry.Lease, error) {
	if a.s.mtls {
		if err := checkSAN(ctx, reg.GetAddress()); err != nil {
			a.refused(ctx, reg, err)
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
	}
	lease, err := a.s.sch.RegisterAs(reg, holder)
	if err != nil {
		a.refused(ctx, reg, err)
		return nil, registrationError(err)
	}
	return lease, nil
}

// refused logs a refused registration at WARN, naming the address, once per
// address and reason every refusalLogEvery.
func (a *agents) refused(ctx context.Context, reg *llmrouterv1.Register, err error) {
	ok, suppressed := a.s.refused.log(reg.GetAddress(), err.Error(), time.Now())
	if !ok {
		return
	}
	peerAddr, _ := grpcx.PeerHost(ctx)
	a.s.log.Warn("registration refused", zap.String("address", reg.GetAddress()), zap.String("peer", peerAddr),
		zap.Error(err), zap.Int("refused_since_last_log", suppressed))
}

// reRegister applies a Register sent on an open stream: the agent saw its
// engine restart or recover (models, KV capacity or version may differ), or
// the scheduler asked with KIND_REREGISTER. It replaces the registration,
// acknowledges again, forwards commands still queued for the old
// registration and keeps an operator's drain.
func (a *agents) reRegister(stream llmrouterv1.AgentService_ConnectServer, old *registry.Lease, reg *llmrouterv1.Register) (*registry.Lease, error) {
	prev, _ := a.s.sch.Registry().Get(old.ID)
	lease, err := a.register(stream.Context(), reg, old)
	if err != nil {
		return nil, err
	}
	if lease.ID != old.ID {
		// The agent now advertises another address: the old one is no
		// longer served by this stream.
		a.s.sch.Deregister(old.ID, old.Gen, "re-registered as "+lease.ID)
	}
	if err := sendAck(stream, lease, reg); err != nil {
		return lease, err
	}
	for pending := true; pending; {
		select {
		case cmd := <-old.Commands():
			if err := sendCommand(stream, cmd); err != nil {
				return lease, err
			}
		default:
			pending = false
		}
	}
	if lease.ID == old.ID && prev.Draining {
		// The registry kept the drain across the new registration (so no
		// pick reached the instance meanwhile); Drain queues the command
		// that tells the agent again, after the ack.
		if err := a.s.sch.Drain(lease.ID, "kept across re-registration"); err != nil {
			a.s.log.Warn("drain not restored after re-registration", zap.String("instance", lease.ID), zap.Error(err))
		}
	}
	return lease, nil
}

func sendAck(stream llmrouterv1.AgentService_ConnectServer, lease *registry.Lease, reg *llmrouterv1.Register) error {
	// The registry counts missed reports with the agent's own interval, so
	// that is the interval acknowledged.
	interval := reg.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = registry.DefaultReportInterval
	}
	return stream.Send(&llmrouterv1.SchedulerMessage{Msg: &llmrouterv1.SchedulerMessage_Registered{
		Registered: &llmrouterv1.RegisterAck{InstanceId: lease.ID, ReportInterval: durationpb.New(interval)},
	}})
}

func sendCommand(stream llmrouterv1.AgentService_ConnectServer, cmd *llmrouterv1.Command) error {
	return stream.Send(&llmrouterv1.SchedulerMessage{Msg: &llmrouterv1.SchedulerMessage_Command{Command: cmd}})
}

// fleetSender tells one agent that runs a pd proxy the prefill fleet when
// it changed since the last message.
type fleetSender struct {
	last []*llmrouterv1.PrefillPeer
	sent bool
}

func (f *fleetSender) send(stream llmrouterv1.AgentService_ConnectServer, reg registry.View, self *llmrouterv1.Register) error {
	if !self.GetPdProxy() {
		return nil
	}
	peers := PrefillPeers(reg)
	if f.sent && slices.EqualFunc(peers, f.last, func(a, b *llmrouterv1.PrefillPeer) bool {
		return a.GetAddress() == b.GetAddress() && a.GetBootstrapPort() == b.GetBootstrapPort()
	}) {
		return nil
	}
	f.last, f.sent = peers, true
	return stream.Send(&llmrouterv1.SchedulerMessage{Msg: &llmrouterv1.SchedulerMessage_PrefillFleet{
		PrefillFleet: &llmrouterv1.PrefillFleet{Peers: peers},
	}})
}

// PrefillPeers lists the published instances (silent ones included: a pick
// made just before the silence may name one) that may prefill for another
// (roles prefill and both), sorted by address: the instances pd-split can
// name in x-prefiller-host-port.
func PrefillPeers(reg registry.View) []*llmrouterv1.PrefillPeer {
	var out []*llmrouterv1.PrefillPeer
	for _, in := range reg.List() {
		if in.Published() && in.Role != policy.RoleDecode {
			out = append(out, &llmrouterv1.PrefillPeer{Address: in.Address, BootstrapPort: in.BootstrapPort})
		}
	}
	return out
}

// ---------------------------------------------------------------- gateways

type picker struct {
	llmrouterv1.UnimplementedPickerServiceServer
	s *Server
}

func (p *picker) Pick(req *llmrouterv1.PickRequest, stream llmrouterv1.PickerService_PickServer) error {
	// A failed QUEUED send means the gateway is gone: the stream's context
	// ends too, which takes the request out of the queue.
	resp, err := p.s.sch.Pick(stream.Context(), req, func(q *llmrouterv1.PickResponse) { _ = stream.Send(q) })
	if err != nil {
		return status.FromContextError(err).Err()
	}
	if err := stream.Send(resp); err != nil {
		if resp.GetStatus() == llmrouterv1.PickResponse_ROUTED && req.GetRequestId() != "" {
			// Nobody will use or report this pick: release it now rather
			// than after inflight_timeout.
			_ = p.s.sch.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: req.GetRequestId()})
		}
		return err
	}
	return nil
}

func (p *picker) Report(ctx context.Context, r *llmrouterv1.OutcomeReport) (*llmrouterv1.ReportAck, error) {
	if err := p.s.sch.Report(ctx, r); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &llmrouterv1.ReportAck{}, nil
}

// ListModels lists the models the fleet serves now (scheduler.ListModels),
// for the gateways' answer to GET /v1/models; the token check is the
// server's, as for Pick and Report.
func (p *picker) ListModels(ctx context.Context, req *llmrouterv1.ListModelsRequest) (*llmrouterv1.ListModelsResponse, error) {
	return p.s.sch.ListModels(ctx, req)
}
