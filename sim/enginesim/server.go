package enginesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/sim/engine"
)

// Options configure a simulated vLLM server.
type Options struct {
	// Model is the served model name (vLLM's --served-model-name).
	Model string
	// Engine is the simulated instance's configuration.
	Engine engine.Config
	// DefaultMaxTokens is the output length of a request that gives neither
	// max_tokens nor max_completion_tokens.
	DefaultMaxTokens int
	// Seed makes ids and filler text reproducible.
	Seed int64
	// ServedLoRAs are adapter names accepted as models and listed in
	// /v1/models and vllm:lora_requests_info.
	ServedLoRAs []string
	// RuntimeLoRA serves vLLM's POST /v1/load_lora_adapter and
	// /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):
	// adapters come and go while the engine runs (lora.go).
	RuntimeLoRA bool
	// MaxBodyBytes bounds a request body (default 8 MiB); larger gets 413.
	MaxBodyBytes int64
	// MaxModelLen bounds prompt plus output tokens (default 131072, Llama
	// 3.1's context); longer requests get 400 as from vLLM.
	MaxModelLen int
	// ShutdownGrace is how long in-flight requests may finish once Serve's
	// context ends (default 5 s); negative stops at once.
	ShutdownGrace time.Duration
	// Role is both (default), prefill or decode: which side of a
	// disaggregated request the server takes (pd.go).
	Role string
	// API is vllm (default) or sglang: the request fields (SGLang's
	// base:adapter model names and lora_path: sglang.go), /v1/models owner
	// and /metrics names presented.
	API string
	// KVTransferPerBlock is what receiving one prompt block's KV cache from
	// a prefill instance costs a decode request (before it is scheduled).
	KVTransferPerBlock time.Duration
	// Bootstrap, for an SGLang prefill server, is the listener of its
	// bootstrap server (--disaggregation-bootstrap-port).
	Bootstrap net.Listener
	// Log may be nil.
	Log *zap.Logger
}

// DefaultModel is the model served when none is named.
const DefaultModel = "meta-llama/Llama-3.1-8B-Instruct"

const (
	defaultMaxBody     = 8 << 20
	defaultMaxTokens   = 128
	defaultMaxModelLen = 131072
	defaultGrace       = 5 * time.Second
	// submitQueue bounds requests handed to the engine goroutine but not yet
	// taken; handlers block beyond it.
	submitQueue = 1024
)

// Server is one simulated vLLM instance. Serve runs it once.
type Server struct {
	opts Options
	eng  *engine.Engine
	reg  *prometheus.Registry
	m    *metrics
	log  *zap.Logger
	// loras are the served adapters' names, replaced whole on a runtime
	// load or unload (lora.go): readers take the map of the moment.
	loras  atomic.Pointer[map[string]bool]
	loraMu sync.Mutex // serialises loads and unloads
	mux    *http.ServeMux
	start  time.Time
	nextID atomic.Uint64

	submit   chan *reqState
	abort    chan uint64
	flush    chan chan struct{}
	loopDone chan struct{}
	served   atomic.Bool

	// live is owned by the engine goroutine.
	live map[uint64]*reqState

	snapMu sync.Mutex
	snap   snapshot

	// Disaggregation (pd.go).
	addr       atomic.Value // the listener's address, for kv_transfer_params
	engineID   string
	rooms      roomBook
	bootClient *http.Client
}

// snapshot is the state /metrics reports, published by the engine goroutine.
type snapshot struct {
	stats        engine.Stats
	loraRunning  []string
	loraWaiting  []string
	loraUpdateAt time.Time
}

// reqState is one request shared between its handler and the engine
// goroutine. The engine goroutine never blocks on it: it updates the fields
// under mu and pokes notify (capacity 1).
type reqState struct {
	id           uint64
	req          engine.Request
	model        string
	finishReason string
	notify       chan struct{}

	// Owned by the engine goroutine.
	arrival, firstAt, lastAt time.Duration

	mu       sync.Mutex
	accepted bool
	tokens   int
	cached   int
	done     bool
	err      error
}

func (st *reqState) poke() {
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

// view is what a handler reads from a reqState.
type view struct {
	accepted, done bool
	tokens, cached int
	err            error
}

func (st *reqState) view() view {
	st.mu.Lock()
	defer st.mu.Unlock()
	return view{accepted: st.accepted, done: st.done, tokens: st.tokens, cached: st.cached, err: st.err}
}

// New builds a server; the engine configuration must be valid.
func New(opts Options) (*Server, error) {
	if opts.Model == "" {
		opts.Model = DefaultModel
	}
	if opts.DefaultMaxTokens == 0 {
		opts.DefaultMaxTokens = defaultMaxTokens
	}
	if opts.DefaultMaxTokens < 1 {
		return nil, fmt.Errorf("default max tokens %d: want 1 or more", opts.DefaultMaxTokens)
	}
	if opts.MaxModelLen == 0 {
		opts.MaxModelLen = defaultMaxModelLen
	}
	if opts.MaxModelLen < 1 {
		return nil, fmt.Errorf("max model len %d: want 1 or more", opts.MaxModelLen)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = defaultMaxBody
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = defaultGrace
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	switch opts.Role {
	case "":
		opts.Role = RoleBoth
	case RoleBoth, RolePrefill, RoleDecode:
	default:
		return nil, fmt.Errorf("role %q: accepted: both, prefill, decode", opts.Role)
	}
	switch opts.API {
	case "":
		opts.API = APIVLLM
	case APIVLLM, APISGLang:
	default:
		return nil, fmt.Errorf("engine %q: accepted: vllm, sglang", opts.API)
	}
	if opts.KVTransferPerBlock < 0 {
		return nil, fmt.Errorf("kv transfer per block %v: want 0 or more", opts.KVTransferPerBlock)
	}
	if opts.Bootstrap != nil && (opts.API != APISGLang || opts.Role != RolePrefill) {
		return nil, errors.New("a bootstrap server is for an SGLang prefill server (--engine sglang --role prefill)")
	}
	eng, err := engine.New(opts.Engine)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:       opts,
		eng:        eng,
		reg:        prometheus.NewRegistry(),
		log:        opts.Log,
		mux:        http.NewServeMux(),
		start:      time.Now(),
		submit:     make(chan *reqState, submitQueue),
		abort:      make(chan uint64, submitQueue),
		flush:      make(chan chan struct{}),
		loopDone:   make(chan struct{}),
		live:       map[uint64]*reqState{},
		engineID:   fmt.Sprintf("enginesim-%016x", splitmix(uint64(opts.Seed)^uint64(time.Now().UnixNano()))),
		bootClient: &http.Client{Timeout: 5 * time.Second},
	}
	loras := map[string]bool{}
	for _, l := range opts.ServedLoRAs {
		if l == "" || l == opts.Model {
			return nil, fmt.Errorf("served LoRA %q: want a name other than the base model", l)
		}
		loras[l] = true
	}
	s.loras.Store(&loras)
	s.snap.stats = eng.Stats()
	s.m = newMetrics(s)
	s.reg.MustRegister(s.m)
	s.mux.HandleFunc("POST /v1/chat/completions", s.handleCompletion(apiChat))
	s.mux.HandleFunc("POST /v1/completions", s.handleCompletion(apiCompletion))
	s.mux.HandleFunc("GET /v1/models", s.handleModels)
	if opts.RuntimeLoRA {
		s.mux.HandleFunc("POST /v1/load_lora_adapter", s.handleLoadLoRA)
		s.mux.HandleFunc("POST /v1/unload_lora_adapter", s.handleUnloadLoRA)
	}
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	if opts.API == APISGLang {
		s.mux.HandleFunc("GET /get_server_info", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"version": sglangVersion, "tp_size": 1,
				"disaggregation_mode": map[string]string{RoleBoth: "null", RolePrefill: "prefill", RoleDecode: "decode"}[opts.Role]})
		})
	} else {
		s.mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"version": simVersion})
		})
	}
	// vLLM's /reset_prefix_cache (a development endpoint) and SGLang's
	// /flush_cache empty the prefix cache: tests use it to make an engine
	// lose its cache behind the router's back.
	flushPath := "POST /reset_prefix_cache"
	if opts.API == APISGLang {
		flushPath = "POST /flush_cache"
	}
	s.mux.HandleFunc(flushPath, s.handleFlush)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /v1/realtime", s.handleRealtime)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// simVersion is the vLLM version whose API and metric names the simulator
// follows.
const simVersion = "0.10.1"

// sglangVersion is the SGLang version presented with --engine sglang.
const sglangVersion = "0.4.6"

// Registry is the registry /metrics renders.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler serves the API; requests only progress while Serve runs.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve runs the engine and the HTTP API on ln until ctx ends, then stops
// accepting connections at once, lets in-flight requests finish within the
// shutdown grace, and returns. A Server serves once; build a new one to
// restart.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("enginesim: Serve called twice; build a new Server")
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	go s.loop(loopCtx)

	handlerCtx, stopHandlers := context.WithCancel(context.Background())
	defer stopHandlers()
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return handlerCtx },
	}
	s.addr.Store(ln.Addr().String())
	if s.opts.Bootstrap != nil {
		boot := &http.Server{Handler: s.bootstrapHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = boot.Serve(s.opts.Bootstrap) }()
		defer boot.Close()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("enginesim serving", zap.String("addr", ln.Addr().String()), zap.String("model", s.opts.Model),
		zap.Int("num_gpu_blocks", s.opts.Engine.NumBlocks), zap.Int("block_size", s.opts.Engine.BlockSize))

	select {
	case err := <-errc:
		stopHandlers()
		stopLoop()
		<-s.loopDone
		return err
	case <-ctx.Done():
	}
	if s.opts.ShutdownGrace > 0 {
		sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
		err := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			s.log.Warn("enginesim: requests still running at the end of the shutdown grace; cancelling them", zap.Error(err))
		}
	} else {
		_ = ln.Close()
	}
	// Hijacked (WebSocket) and still-running handlers end with their context.
	stopHandlers()
	stopLoop()
	<-s.loopDone
	_ = srv.Close()
	<-errc
	s.log.Info("enginesim stopped", zap.String("addr", ln.Addr().String()))
	return nil
}

func (s *Server) now() time.Duration { return time.Since(s.start) }

var errStopped = errors.New("the engine is shutting down")

// loop owns the engine: it adds submitted requests, aborts abandoned ones
// and steps the engine at the model's step times.
func (s *Server) loop(ctx context.Context) {
	defer close(s.loopDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var wake <-chan time.Time
		if at, ok := s.eng.NextStepAt(); ok {
			if d := at - s.now(); d > 0 {
				timer.Reset(d)
				wake = timer.C
			} else {
				s.step()
				continue
			}
		}
		select {
		case <-ctx.Done():
			for id, st := range s.live {
				s.eng.Abort(id)
				st.mu.Lock()
				st.err = errStopped
				st.mu.Unlock()
				st.poke()
			}
			clear(s.live)
			s.publish()
			return
		case st := <-s.submit:
			s.add(st)
		case done := <-s.flush:
			s.eng.FlushPrefixCache()
			s.publish()
			close(done)
		case id := <-s.abort:
			if _, ok := s.live[id]; ok && s.eng.Abort(id) {
				delete(s.live, id)
				s.m.success.WithLabelValues("abort").Inc()
				s.publish()
			}
		case <-wake:
		}
	}
}

func (s *Server) add(st *reqState) {
	st.arrival = s.now()
	err := s.eng.Add(st.arrival, st.req)
	st.mu.Lock()
	st.accepted, st.err = err == nil, err
	st.mu.Unlock()
	st.poke()
	if err == nil {
		s.live[st.id] = st
		s.publish()
	}
}

func (s *Server) step() {
	evs := s.eng.Step(s.now())
	for _, ev := range evs {
		st, ok := s.live[ev.ID]
		if !ok {
			continue
		}
		switch ev.Kind {
		case engine.FirstToken:
			st.firstAt, st.lastAt = ev.At, ev.At
			s.m.ttft.Observe((ev.At - st.arrival).Seconds())
			s.m.queue.Observe((ev.Scheduled - st.arrival).Seconds())
		case engine.Token:
			itl := (ev.At - st.lastAt).Seconds()
			s.m.tpot.Observe(itl)
			s.m.itl.Observe(itl)
			st.lastAt = ev.At
		case engine.Finished:
			s.m.e2e.Observe((ev.At - st.arrival).Seconds())
			s.m.promptTokens.Observe(float64(st.req.PromptTokens))
			s.m.genTokens.Observe(float64(ev.Tokens))
			if ev.Tokens > 1 {
				s.m.reqTPOT.Observe((ev.At - st.firstAt).Seconds() / float64(ev.Tokens-1))
			}
			s.m.success.WithLabelValues(st.finishReason).Inc()
			delete(s.live, ev.ID)
		case engine.Preempted:
			continue
		}
		st.mu.Lock()
		st.tokens = ev.Tokens
		if ev.Kind == engine.FirstToken {
			st.cached = ev.CachedTokens
		}
		if ev.Kind == engine.Finished {
			st.done = true
		}
		st.mu.Unlock()
		st.poke()
	}
	s.publish()
}

// publish hands the engine's state to /metrics.
func (s *Server) publish() {
	snap := snapshot{stats: s.eng.Stats()}
	if loras := s.servedLoRAs(); len(loras) > 0 {
		run, wait := map[string]bool{}, map[string]bool{}
		for _, st := range s.live {
			if !loras[st.model] {
				continue
			}
			if st.firstAt > 0 {
				run[st.model] = true
			} else {
				wait[st.model] = true
			}
		}
		snap.loraRunning, snap.loraWaiting = sortedKeys(run), sortedKeys(wait)
		snap.loraUpdateAt = time.Now()
	}
	s.snapMu.Lock()
	s.snap = snap
	s.snapMu.Unlock()
}

func (s *Server) snapshot() snapshot {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	return s.snap
}

// enqueue hands a request to the engine goroutine; it fails when the server
// is stopping or the caller gives up.
func (s *Server) enqueue(ctx context.Context, st *reqState) error {
	select {
	case s.submit <- st:
		return nil
	case <-s.loopDone:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleFlush empties the engine's prefix cache.
func (s *Server) handleFlush(w http.ResponseWriter, r *http.Request) {
	done := make(chan struct{})
	select {
	case s.flush <- done:
	case <-s.loopDone:
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", errStopped.Error())
		return
	case <-r.Context().Done():
		return
	}
	<-done
	w.WriteHeader(http.StatusOK)
}

// cancel tells the engine a request's client went away.
func (s *Server) cancel(id uint64) {
	select {
	case s.abort <- id:
	case <-s.loopDone:
	}
}

// await blocks until the request changed or ends; ok is false when the
// client or the server went away.
func (s *Server) await(ctx context.Context, st *reqState) bool {
	select {
	case <-st.notify:
		return true
	case <-ctx.Done():
		return false
	case <-s.loopDone:
		// The loop failed every live request before exiting; one last look.
		return len(st.notify) > 0 || st.view().err != nil
	}
}
