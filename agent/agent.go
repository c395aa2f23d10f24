package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/reglimits"
)

// Options configure an Agent. OptionsFromConfig fills them from the
// configuration; tests set them directly.
type Options struct {
	EngineURL        string
	Advertise        string // ip:port Envoy reaches the engine at
	SchedulerAddress string
	// Engine is llm_gateway.infer_backend: "" detects.
	Engine string
	// Role is both, prefill or decode.
	Role           string
	ReportInterval time.Duration
	ScrapeTimeout  time.Duration
	// MetricsPath and HealthPath override the engine's defaults.
	MetricsPath string
	HealthPath  string
	MetricMap   map[string]string
	// DialOptions reach the scheduler (grpcx.DialOptions: token, TLS).
	DialOptions  []grpc.DialOption
	AgentVersion string
	// Reconnect backoff to the scheduler: exponential from BackoffBase,
	// capped at BackoffMax, with jitter. Zero values take the defaults.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// ProgressEvery is how often the readiness wait logs what is missing.
	ProgressEvery time.Duration
	// PDProxy says a pd proxy fronts the engine (Advertise is its
	// address): the registration asks for the prefill fleet, which
	// OnPrefillFleet receives (published address to bootstrap port).
	PDProxy        bool
	OnPrefillFleet func(map[string]int32)
	// BootstrapPort is registered for an SGLang prefill engine.
	BootstrapPort int32
	// ModelsRefresh is how often /v1/models is read again while the engine
	// runs, so adapters it loads or unloads at runtime reach the
	// scheduler; 0 means DefaultModelsRefresh.
	ModelsRefresh time.Duration
}

// Defaults for the fields Options may leave zero. The backoff cap is short
// because picks can resume only once an agent is back: after a scheduler
// restart its agents must re-register within about a second, however long
// it was down. A connection attempt a second per agent costs a dead
// scheduler nothing, and the jitter spreads a fleet's return.
const (
	DefaultBackoffBase   = 250 * time.Millisecond
	DefaultBackoffMax    = time.Second
	DefaultProgressEvery = 5 * time.Second
	// DefaultModelsRefresh: a LoRA adapter loaded at runtime (vLLM's
	// /v1/load_lora_adapter) is routable within this, an unloaded one
	// stops being picked within this; one small GET of a cheap endpoint.
	DefaultModelsRefresh = 5 * time.Second
	// metricsFailuresUnhealthy consecutive failed scrapes (with a passing
	// health check) mark the engine unhealthy: one slow scrape is noise, a
	// run of them means the scheduler is routing blind.
	metricsFailuresUnhealthy = 3
	// stuckAfter switches readiness progress logs from info to warn.
	stuckAfter = time.Minute
)

// OptionsFromConfig takes the agent's settings from the configuration.
func OptionsFromConfig(cfg config.Config, dial []grpc.DialOption, version string) Options {
	a := cfg.Agent
	return Options{
		EngineURL: a.EngineURL, Advertise: a.Advertise, SchedulerAddress: a.SchedulerAddress,
		Engine: cfg.Gateway.InferBackend, Role: a.Role,
		ReportInterval: a.ReportInterval, ScrapeTimeout: a.ScrapeTimeout,
		MetricsPath: a.MetricsPath, HealthPath: a.HealthPath, MetricMap: a.MetricMap,
		DialOptions: dial, AgentVersion: version,
		PDProxy: a.PDProxyListen != "", BootstrapPort: int32(a.BootstrapPort),
	}
}

// Agent is the sidecar of one engine.
type Agent struct {
	opts    Options
	log     *zap.Logger
	eng     *engineClient
	mm      MetricMap
	met     *agentMetrics
	role    pb.Role
	stated  *Adapter // infer_backend, when given
	changed chan struct{}
	readyCh chan struct{}
	seq     atomic.Uint64

	mu              sync.Mutex
	st              state
	metricsFailures int // consecutive failed scrapes while healthy

	// modelsRead is when /v1/models was last read (the poll goroutine's
	// alone).
	modelsRead time.Time
	// namesCut is how many models and adapters boundNames last left off
	// (the poll goroutine's alone), so a cut is logged when it changes.
	namesCut [2]int
}

// state is what the poller learnt, read by the session and /readyz.
type state struct {
	ready         bool // the engine came up at least once
	healthy       bool
	reason        string // why unhealthy, or what readiness still waits for
	info          engineInfo
	gen           uint64 // bumped on each (re)discovery: the session re-registers
	vals          values
	connected     bool
	connErr       string
	draining      bool
	mismatchSaid  bool
	reportCut     bool   // the last scrape's adapter lists were cut to reglimits
	missingMapped string // metric_map entries last found missing, logged on change
	// refreshed is the gen a models refresh set (refreshModels): the
	// engine is the one registered at gen-1, only its adapters changed.
	refreshed uint64
}

// engineInfo is what a Register carries about the engine.
type engineInfo struct {
	adapter     *Adapter
	version     string
	models      []string
	lora        []string
	blockSize   int64
	numBlocks   int64
	role        pb.Role
	metricsPath string
	healthPath  string // "" when the engine has none: a good scrape is the health check
	// listed: models came from /v1/models, which refreshModels reads
	// again; loraListed: lora did too (else from the metrics, kept).
	listed, loraListed bool
}

// values are the latest report numbers.
type values struct {
	running, waiting      float64
	kv                    float64
	promptTotal, genTot   float64
	promptRate, genRate   float64
	lora, loraWaiting     []string
	loraKnown             bool // lora and loraWaiting are the engine's account
	maxLoRA               int64
	prefixHit             float64
	promptKnown, genKnown bool
	at                    time.Time
}

// New checks the options and prepares an agent; Run starts it. Metrics are
// registered on reg.
func New(opts Options, log *zap.Logger, reg prometheus.Registerer) (*Agent, error) {
	if opts.Advertise == "" {
		return nil, errors.New("agent.advertise is required: the ip:port Envoy reaches the engine at (--advertise 10.0.0.5:8000)")
	}
	if ap, err := netip.ParseAddrPort(opts.Advertise); err != nil || ap.Port() == 0 {
		return nil, fmt.Errorf("agent.advertise %q: want ip:port, such as 10.0.0.5:8000 (Envoy keys endpoints by address, not host name)", opts.Advertise)
	} else if ap.Addr().IsUnspecified() {
		// The scheduler refuses it; better to say so at startup than in a
		// reconnect loop.
		return nil, fmt.Errorf("agent.advertise %q: an unspecified IP cannot be reached; advertise the address Envoy reaches the engine at, such as 10.0.0.5:8000", opts.Advertise)
	}
	if opts.SchedulerAddress == "" {
		return nil, errors.New("agent.scheduler_address is required (--scheduler host:port)")
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = 200 * time.Millisecond
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = time.Second
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.BackoffMax < opts.BackoffBase {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffBase)
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	if opts.ModelsRefresh <= 0 {
		opts.ModelsRefresh = DefaultModelsRefresh
	}
	eng, err := newEngineClient(opts.EngineURL, opts.ScrapeTimeout)
	if err != nil {
		return nil, err
	}
	mm, err := ParseMetricMap(opts.MetricMap)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, log: log, eng: eng, mm: mm, met: newAgentMetrics(reg),
		changed: make(chan struct{}, 1), readyCh: make(chan struct{})}
	switch opts.Role {
	case "", "both":
		a.role = pb.Role_ROLE_BOTH
	case "prefill":
		a.role = pb.Role_ROLE_PREFILL
	case "decode":
		a.role = pb.Role_ROLE_DECODE
	default:
		return nil, fmt.Errorf("agent.role %q: accepted: both, prefill, decode", opts.Role)
	}
	if opts.Engine != "" {
		if a.stated, err = AdapterFor(opts.Engine); err != nil {
			return nil, fmt.Errorf("llm_gateway.infer_backend: %w", err)
		}
	}
	return a, nil
}

// Run polls the engine and holds the scheduler stream until ctx ends. It
// returns only then (or on a configuration error): a scheduler that is down
// is retried forever.
func (a *Agent) Run(ctx context.Context) error {
	dial := append(slices.Clone(a.opts.DialOptions), grpc.WithConnectParams(grpc.ConnectParams{
		// gRPC's own reconnect backoff grows to two minutes by default; ours
		// is capped, and the connection must not lag behind it.
		Backoff:           backoff.Config{BaseDelay: a.opts.BackoffBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.opts.BackoffMax},
		MinConnectTimeout: max(a.opts.BackoffMax, 2*time.Second),
	}))
	conn, err := grpc.NewClient(a.opts.SchedulerAddress, dial...)
	if err != nil {
		return fmt.Errorf("agent.scheduler_address %q: %w", a.opts.SchedulerAddress, err)
	}
	defer conn.Close()
	a.log.Info("agent starting", zap.String("engine_url", a.opts.EngineURL), zap.String("advertise", a.opts.Advertise),
		zap.String("scheduler", a.opts.SchedulerAddress), zap.String("infer_backend", a.opts.Engine),
		zap.Duration("report_interval", a.opts.ReportInterval))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.pollLoop(ctx) }()
	go func() { defer wg.Done(); a.sessionLoop(ctx, pb.NewAgentServiceClient(conn)) }()
	wg.Wait()
	return nil
}

// Ready is the agent's /readyz: the engine answers and the scheduler has
// accepted the registration.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var why []string
	switch {
	case !a.st.ready:
		why = append(why, "engine not ready: "+orUnknown(a.st.reason))
	case !a.st.healthy:
		why = append(why, "engine unhealthy: "+orUnknown(a.st.reason))
	}
	if !a.st.connected {
		why = append(why, "scheduler not connected: "+orUnknown(a.st.connErr))
	}
	if len(why) > 0 {
		return errors.New(strings.Join(why, "; "))
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "starting"
	}
	return s
}

func (a *Agent) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// ---------------------------------------------------------------- engine side

func (a *Agent) pollLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.ReportInterval)
	defer t.Stop()
	start := time.Now()
	lastProgress := start
	for {
		a.pollOnce(ctx, start, &lastProgress)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce probes health, scrapes metrics and updates the state.
func (a *Agent) pollOnce(ctx context.Context, start time.Time, lastProgress *time.Time) {
	a.mu.Lock()
	ready, info := a.st.ready, a.st.info
	a.mu.Unlock()

	began := time.Now()
	m, healthErr, metricsErr := a.probe(ctx, ready, &info)
	a.met.scrapeDuration.Observe(time.Since(began).Seconds())
	if ctx.Err() != nil {
		return
	}
	if !ready {
		a.waitReady(ctx, m, healthErr, metricsErr, info, start, lastProgress)
		return
	}
	a.steady(ctx, m, healthErr, metricsErr)
	a.refreshModels(ctx)
}

// probe runs one health check and one scrape. Before the engine is known it
// also finds which health and metrics paths the engine serves.
func (a *Agent) probe(ctx context.Context, ready bool, info *engineInfo) (Metrics, error, error) {
	if !ready {
		info.healthPath, info.metricsPath = "", ""
	}
	healthPaths := []string{info.healthPath}
	if !ready {
		healthPaths = a.healthCandidates()
	}
	var healthErr error
	if ready && info.healthPath == "" {
		healthErr = nil // no health endpoint: the scrape below decides
	} else {
		healthErr = errNotFound
		for _, p := range healthPaths {
			_, _, err := a.eng.get(ctx, p, maxJSONBytes)
			if err == nil {
				info.healthPath, healthErr = p, nil
				break
			}
			healthErr = fmt.Errorf("GET %s: %w", p, err)
			if !errors.Is(err, errNotFound) {
				break
			}
		}
		if healthErr != nil && errors.Is(healthErr, errNotFound) && !ready && a.opts.HealthPath == "" {
			// No health endpoint at all (tried every candidate): an engine
			// that serves parsable metrics is alive.
			healthErr = nil
		}
	}
	if healthErr != nil {
		a.met.scrapeErrors.WithLabelValues("health").Inc()
		return nil, healthErr, nil
	}
	metricsPaths := []string{info.metricsPath}
	if !ready {
		metricsPaths = a.metricsCandidates()
	}
	var metricsErr error
	for _, p := range metricsPaths {
		body, hdr, err := a.eng.get(ctx, p, maxMetricsBytes)
		if err != nil {
			metricsErr = fmt.Errorf("GET %s: %w", p, err)
			a.met.scrapeErrors.WithLabelValues("metrics").Inc()
			if errors.Is(err, errNotFound) {
				continue
			}
			return nil, nil, metricsErr
		}
		m, err := Parse(body, hdr.Get("Content-Type"))
		if err != nil {
			metricsErr = fmt.Errorf("GET %s: %w", p, err)
			a.met.scrapeErrors.WithLabelValues("parse").Inc()
			continue
		}
		info.metricsPath = p
		return m, nil, nil
	}
	return nil, nil, metricsErr
}

func (a *Agent) healthCandidates() []string {
	if a.opts.HealthPath != "" {
		return []string{a.opts.HealthPath}
	}
	first := "/health"
	if a.stated != nil {
		first = a.stated.HealthPath
	}
	// Triton answers /v2/health/ready, not /health.
	return dedupe(first, "/health", "/v2/health/ready")
}

func (a *Agent) metricsCandidates() []string {
	if a.opts.MetricsPath != "" {
		return []string{a.opts.MetricsPath}
	}
	first := "/metrics"
	if a.stated != nil {
		first = a.stated.MetricsPath
	}
	// trtllm-serve serves Prometheus text at /prometheus/metrics (its
	// /metrics is JSON).
	return dedupe(first, "/metrics", "/prometheus/metrics")
}

func dedupe(xs ...string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// waitReady handles a probe while the engine has not come up yet.
func (a *Agent) waitReady(ctx context.Context, m Metrics, healthErr, metricsErr error, info engineInfo, start time.Time, lastProgress *time.Time) {
	var missing string
	switch {
	case healthErr != nil:
		missing = "health check: " + healthErr.Error()
	case metricsErr != nil:
		missing = "parsable metrics: " + metricsErr.Error()
	default:
		if err := a.discover(ctx, m, &info); err != nil {
			missing = err.Error()
		}
	}
	if missing != "" {
		a.mu.Lock()
		a.st.reason = missing
		a.mu.Unlock()
		if now := time.Now(); now.Sub(*lastProgress) >= a.opts.ProgressEvery {
			*lastProgress = now
			waited := now.Sub(start).Round(time.Second)
			fields := []zap.Field{zap.String("engine_url", a.opts.EngineURL), zap.String("missing", missing), zap.Duration("waited", waited)}
			if waited >= stuckAfter {
				a.log.Warn("engine still not ready", fields...)
			} else {
				a.log.Info("waiting for engine", fields...)
			}
		}
		return
	}
	a.mu.Lock()
	a.st.ready, a.st.healthy, a.st.reason = true, true, ""
	a.st.info = info
	a.st.gen++
	a.updateValuesLocked(info.adapter, m)
	a.mu.Unlock()
	a.met.engineHealthy.Set(1)
	a.log.Info("engine ready", a.infoFields(info, time.Since(start))...)
	close(a.readyCh)
	a.notify()
}

func (a *Agent) infoFields(info engineInfo, waited time.Duration) []zap.Field {
	return []zap.Field{
		zap.String("engine", info.adapter.Name), zap.String("version", info.version),
		zap.Strings("models", info.models), zap.Strings("lora_adapters", info.lora),
		zap.Int64("num_gpu_blocks", info.numBlocks), zap.Int64("block_size", info.blockSize),
		zap.String("role", info.role.String()), zap.String("metrics_path", info.metricsPath),
		zap.String("health_path", info.healthPath), zap.Duration("waited", waited.Round(time.Millisecond)),
	}
}

// steady handles a probe once the engine has been ready.
func (a *Agent) steady(ctx context.Context, m Metrics, healthErr, metricsErr error) {
	a.mu.Lock()
	wasHealthy, info, prev := a.st.healthy, a.st.info, a.st.vals
	a.mu.Unlock()

	if healthErr == nil && metricsErr == nil && (!wasHealthy || countersReset(info.adapter.Extract(m, a.mm), prev)) {
		// Recovery, or a restart quicker than a poll (its counters went
		// back): the engine may now serve another model or cache size, so
		// learn it again and re-register.
		if err := a.discover(ctx, m, &info); err != nil {
			healthErr = err
		} else {
			// The new generation (which makes the session re-register) and
			// the values and health it registers with change together, so a
			// report tick in between cannot register the recovered engine
			// as unhealthy or with the dead one's numbers.
			a.mu.Lock()
			a.st.info = info
			a.st.gen++
			a.metricsFailures = 0
			a.updateValuesLocked(info.adapter, m)
			if !a.st.healthy {
				a.st.healthy, a.st.reason = true, ""
				a.met.engineHealthy.Set(1)
			}
			a.mu.Unlock()
			a.notify()
			msg := "engine recovered"
			if wasHealthy {
				msg = "engine restarted (counters reset)"
			}
			a.log.Info(msg, a.infoFields(info, 0)...)
			return
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case healthErr != nil:
		a.markUnhealthyLocked(healthErr.Error())
		a.metricsFailures = 0
	case metricsErr != nil:
		a.metricsFailures++
		if a.metricsFailures >= metricsFailuresUnhealthy || !a.st.healthy {
			a.markUnhealthyLocked("metrics: " + metricsErr.Error())
		}
	default:
		a.metricsFailures = 0
		a.updateValuesLocked(a.st.info.adapter, m)
		if !a.st.healthy {
			a.st.healthy, a.st.reason = true, ""
			a.met.engineHealthy.Set(1)
			a.notify()
		}
	}
}

func (a *Agent) markUnhealthyLocked(reason string) {
	if a.st.healthy {
		a.log.Warn("engine unhealthy", zap.String("reason", reason))
		a.st.healthy = false
		a.met.engineHealthy.Set(0)
		a.st.reason = reason
		a.notify()
		return
	}
	a.st.reason = reason
}

// refreshModels reads /v1/models of the running engine again: vLLM loads
// and unloads LoRA adapters at runtime (/v1/load_lora_adapter with
// VLLM_ALLOW_RUNTIME_LORA_UPDATING), each served under its own model name,
// and the scheduler routes a request naming one only to the instances that
// registered it. A change re-registers; when only the adapters changed the
// registration says the engine is unchanged, so the scheduler keeps what it
// learnt of it. A failed read changes nothing: it is counted, and the next
// refresh tries again. It runs after a poll's values are in, every
// ModelsRefresh while the engine is healthy and its models came from
// /v1/models.
func (a *Agent) refreshModels(ctx context.Context) {
	a.mu.Lock()
	healthy, info := a.st.healthy, a.st.info
	a.mu.Unlock()
	if !healthy || !info.listed || time.Since(a.modelsRead) < a.opts.ModelsRefresh || ctx.Err() != nil {
		return
	}
	a.modelsRead = time.Now()
	models, lora, _, err := a.eng.models(ctx)
	loraListed := len(lora) > 0
	if !loraListed && !info.loraListed {
		lora = info.lora // from the metrics at discovery: /v1/models never named them
	}
	if err == nil {
		models, lora = a.boundNames(models, lora)
	}
	if err == nil && len(models) == 0 {
		err = errors.New("lists no base model")
	}
	if err != nil {
		a.met.scrapeErrors.WithLabelValues("models").Inc()
		a.log.Debug("models refresh failed; keeping the registered models", zap.Error(err))
		return
	}
	sameModels := sameSet(models, info.models)
	if sameModels && sameSet(lora, info.lora) {
		return
	}
	a.mu.Lock()
	a.st.info.models, a.st.info.lora, a.st.info.loraListed = models, lora, loraListed || info.loraListed
	a.st.gen++
	if sameModels {
		a.st.refreshed = a.st.gen
	}
	a.mu.Unlock()
	a.notify()
	a.log.Info("engine's models changed; re-registering", zap.Strings("models", models), zap.Strings("lora_adapters", lora),
		zap.Strings("were_models", info.models), zap.Strings("were_lora_adapters", info.lora))
}

// boundNames trims what the engine lists to what one registration may name
// (reglimits: names and bytes, models and adapters together, models
// first; a name too long is skipped), so the scheduler never refuses the
// registration for it: the names left off are not routed here, the rest
// are. It logs when what it leaves off changes.
func (a *Agent) boundNames(models, lora []string) ([]string, []string) {
	models, dm := reglimits.Names(models, 0, 0)
	n, size := reglimits.Size(models)
	lora, dl := reglimits.Names(lora, n, size)
	if cut := [2]int{dm, dl}; cut != a.namesCut {
		a.namesCut = cut
		if dm+dl > 0 {
			a.log.Warn("the engine lists more models and LoRA adapters than one registration may name; registering the first ones",
				zap.Int("models_left_off", dm), zap.Int("lora_adapters_left_off", dl), zap.Int("max_names", reglimits.MaxNames),
				zap.Int("max_names_bytes", reglimits.MaxNamesBytes), zap.Int("max_name_bytes", reglimits.MaxNameBytes))
		}
	}
	return models, lora
}

// sameSet: a and b hold the same names, in any order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// countersReset reports whether a token counter went backwards since the
// previous scrape, which only an engine restart does.
func countersReset(s Stats, prev values) bool {
	return (s.PromptTokensTotal != nil && prev.promptKnown && *s.PromptTokensTotal < prev.promptTotal) ||
		(s.GenerationTokensTotal != nil && prev.genKnown && *s.GenerationTokensTotal < prev.genTot)
}

// discover learns what a Register says about the engine: its kind, version,
// models and capacity.
func (a *Agent) discover(ctx context.Context, m Metrics, info *engineInfo) error {
	models, lora, ownedBy, modelsErr := a.eng.models(ctx)
	if modelsErr != nil {
		a.met.scrapeErrors.WithLabelValues("models").Inc()
	}
	a.modelsRead = time.Now()
	detected, ok := DetectKind(m, ownedBy)
	if !ok {
		detected, ok = a.eng.probe(ctx)
	}
	adapter := a.stated
	switch {
	case adapter != nil:
		if ok && detected != adapter.Name {
			a.mu.Lock()
			said := a.st.mismatchSaid
			a.st.mismatchSaid = true
			a.mu.Unlock()
			if !said {
				a.log.Warn("engine looks different from llm_gateway.infer_backend; using the stated backend",
					zap.String("infer_backend", adapter.Name), zap.String("detected", detected))
			}
		}
	case ok:
		adapter, _ = AdapterFor(detected)
	default:
		return fmt.Errorf("engine kind: no known engine metrics (%s), /v1/models owned_by %q, no engine-specific endpoint; set llm_gateway.infer_backend (%s)",
			sampleNames(m, 3), ownedBy, strings.Join(EngineNames(), ", "))
	}
	s := adapter.Extract(m, a.mm)
	info.adapter = adapter
	info.version = a.eng.version(ctx, adapter)
	info.models, info.lora = models, lora
	info.listed, info.loraListed = len(models) > 0, len(models) > 0 && len(lora) > 0
	if len(info.models) == 0 {
		info.models = s.Models // no /v1/models (Triton): the metrics' labels
	}
	if len(info.lora) == 0 {
		info.lora = s.LoRAAdapters
	}
	info.models, info.lora = a.boundNames(info.models, info.lora)
	info.blockSize, info.numBlocks = 0, 0
	if s.BlockSize != nil {
		info.blockSize = *s.BlockSize
	}
	if s.NumGPUBlocks != nil {
		info.numBlocks = *s.NumGPUBlocks
	}
	// An explicit prefill/decode role wins; "both" yields to an engine that
	// says it is one side of a disaggregated pair.
	info.role = a.role
	if a.role == pb.Role_ROLE_BOTH {
		switch s.Role {
		case "prefill":
			info.role = pb.Role_ROLE_PREFILL
		case "decode":
			info.role = pb.Role_ROLE_DECODE
		}
	}
	return nil
}

// updateValuesLocked maps a scrape to report values, deriving token rates
// from the counters' change since the previous scrape.
func (a *Agent) updateValuesLocked(adapter *Adapter, m Metrics) {
	s := adapter.Extract(m, a.mm)
	if missing := strings.Join(a.mm.Missing(m), ", "); missing != a.st.missingMapped {
		a.st.missingMapped = missing
		if missing != "" {
			a.log.Warn("agent.metric_map names series the engine does not export", zap.String("missing", missing))
		}
	}
	now := time.Now()
	prev := a.st.vals
	v := values{at: now, prefixHit: -1, lora: s.LoRAAdapters, loraWaiting: s.LoRAWaiting, loraKnown: s.LoRAAdapters != nil}
	// The scheduler would cut them too, counting and logging each report.
	var cutR, cutW int
	v.lora, cutR = reglimits.Names(v.lora, 0, 0)
	v.loraWaiting, cutW = reglimits.Names(v.loraWaiting, 0, 0)
	if cut := cutR+cutW > 0; cut != a.st.reportCut {
		a.st.reportCut = cut
		if cut {
			a.log.Warn("the engine's LoRA metrics name more adapters than a report may; reporting the first ones",
				zap.Int("running_left_off", cutR), zap.Int("waiting_left_off", cutW), zap.Int("max_names", reglimits.MaxNames))
		}
	}
	if s.MaxLoRA != nil {
		v.maxLoRA = *s.MaxLoRA
	}
	get := func(p *float64) float64 {
		if p == nil {
			return 0
		}
		return *p
	}
	v.running, v.waiting, v.kv = get(s.Running), get(s.Waiting), get(s.KVCacheUsage)
	if s.PrefixCacheHitRatio != nil {
		v.prefixHit = *s.PrefixCacheHitRatio
	}
	dt := now.Sub(prev.at).Seconds()
	rate := func(cur *float64, prevVal float64, prevKnown bool, gauge *float64) float64 {
		switch {
		case cur != nil && prevKnown && dt > 0:
			d := *cur - prevVal
			if d < 0 { // counter reset: the engine restarted
				d = *cur
			}
			return d / dt
		case cur == nil && gauge != nil:
			return *gauge
		}
		return 0
	}
	v.promptRate = rate(s.PromptTokensTotal, prev.promptTotal, prev.promptKnown, s.PromptTokensPerSecond)
	v.genRate = rate(s.GenerationTokensTotal, prev.genTot, prev.genKnown, s.GenerationTokensPerSecond)
	v.promptTotal, v.promptKnown = get(s.PromptTokensTotal), s.PromptTokensTotal != nil
	v.genTot, v.genKnown = get(s.GenerationTokensTotal), s.GenerationTokensTotal != nil
	a.st.vals = v
	a.met.engineRequests.WithLabelValues("running").Set(v.running)
	a.met.engineRequests.WithLabelValues("waiting").Set(v.waiting)
	a.met.engineKV.Set(v.kv)
}

// ---------------------------------------------------------------- scheduler side

// snapshot is a consistent copy of what the session sends.
type snapshot struct {
	gen      uint64
	healthy  bool
	reason   string
	info     engineInfo
	vals     values
	draining bool
	// refreshed: state.refreshed.
	refreshed uint64
}

func (a *Agent) snapshot() snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return snapshot{gen: a.st.gen, refreshed: a.st.refreshed, healthy: a.st.healthy, reason: a.st.reason, info: a.st.info, vals: a.st.vals, draining: a.st.draining}
}

func (a *Agent) report(s snapshot) *pb.Report {
	v := s.vals
	r := &pb.Report{
		Healthy:                   s.healthy,
		Running:                   int64(math.Round(v.running)),
		Waiting:                   int64(math.Round(v.waiting)),
		KvCacheUsage:              v.kv,
		PromptTokensTotal:         v.promptTotal,
		GenerationTokensTotal:     v.genTot,
		PromptTokensPerSecond:     v.promptRate,
		GenerationTokensPerSecond: v.genRate,
		LoraAdapters:              v.lora,
		WaitingLoraAdapters:       v.loraWaiting,
		MaxLora:                   v.maxLoRA,
		LoraStateKnown:            v.loraKnown,
		PrefixCacheHitRatio:       v.prefixHit,
		Sequence:                  a.seq.Add(1),
	}
	if !s.healthy {
		r.UnhealthyReason = s.reason
	}
	// The adapters /v1/models lists are those the engine can serve, not
	// those it runs; they stand in only for an engine that does not say
	// which it runs. One whose lora_requests_info names no adapter in any
	// series has run none since it started (vLLM keeps every series it
	// made, and the newest naming one is read, as upstream reads it), so it
	// reports none: the Gateway API Inference Extension too sees no adapter
	// active on such an engine. (Upstream leaves its max_lora unknown then;
	// loraFromInfo reads it from the newest series, so free slots count.)
	if !v.loraKnown && len(r.LoraAdapters) == 0 {
		r.LoraAdapters = s.info.lora
	}
	return r
}

func (a *Agent) register(s snapshot) *pb.AgentMessage {
	return &pb.AgentMessage{Msg: &pb.AgentMessage_Register{Register: &pb.Register{
		Address:        a.opts.Advertise,
		Engine:         s.info.adapter.Name,
		EngineVersion:  s.info.version,
		Models:         s.info.models,
		LoraAdapters:   s.info.lora,
		NumGpuBlocks:   s.info.numBlocks,
		BlockSize:      s.info.blockSize,
		Role:           s.info.role,
		AgentVersion:   a.opts.AgentVersion,
		ReportInterval: durationpb.New(a.opts.ReportInterval),
		Initial:        a.report(s),
		BootstrapPort:  a.opts.BootstrapPort,
		PdProxy:        a.opts.PDProxy,
	}}}
}

func (a *Agent) setConnected(ok bool, err error) {
	a.mu.Lock()
	a.st.connected = ok
	if err != nil {
		a.st.connErr = err.Error()
	} else if ok {
		a.st.connErr = ""
	}
	a.mu.Unlock()
	if ok {
		a.met.connected.Set(1)
	} else {
		a.met.connected.Set(0)
	}
}

// sessionLoop keeps one stream to the scheduler alive, re-dialling with
// capped exponential backoff and jitter for as long as ctx lives.
func (a *Agent) sessionLoop(ctx context.Context, client pb.AgentServiceClient) {
	select {
	case <-ctx.Done():
		return
	case <-a.readyCh:
	}
	delay := a.opts.BackoffBase
	failures := 0
	var lastSaid time.Time
	for {
		registered, err := a.session(ctx, client)
		a.setConnected(false, err)
		if ctx.Err() != nil {
			return
		}
		if registered {
			delay, failures = a.opts.BackoffBase, 0
		}
		failures++
		// Full jitter over the upper half, so agents of a fleet that lost
		// the same scheduler do not come back in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		a.met.reconnects.Inc()
		// One warning when the link goes, then a reminder every half
		// minute rather than a line per attempt. A refusal (bad token,
		// address not allowed, malformed registration) will not heal by
		// retrying: it is an error, with what to fix.
		switch {
		case refused(err) && (failures == 1 || time.Since(lastSaid) >= 30*time.Second):
			a.log.Error("scheduler refused the agent; retrying, but the configuration must change",
				zap.Error(err), zap.String("hint", refusalHint(err)), zap.Int("attempts", failures), zap.Duration("retry_in", wait))
			lastSaid = time.Now()
		case failures == 1:
			a.log.Warn("scheduler stream ended; reconnecting", zap.Error(err), zap.Duration("retry_in", wait))
			lastSaid = time.Now()
		case time.Since(lastSaid) >= 30*time.Second:
			a.log.Warn("scheduler still unreachable; reconnecting", zap.Error(err), zap.Int("attempts", failures), zap.Duration("retry_in", wait))
			lastSaid = time.Now()
		default:
			a.log.Debug("scheduler reconnect failed", zap.Error(err), zap.Int("attempts", failures), zap.Duration("retry_in", wait))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, a.opts.BackoffMax)
	}
}

// refused reports whether the scheduler turned the agent away, as opposed
// to being unreachable or restarting.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

func refusalHint(err error) string {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return "set LLMROUTER_TOKEN (token) to the scheduler's shared token"
	case codes.PermissionDenied:
		return "agent.advertise must be the engine's own routable IP: inside llm_scheduler.allowed_cidrs, never link-local, multicast or broadcast, loopback only while the scheduler listens on loopback, and with mTLS among this agent's certificate SANs"
	}
	return "the scheduler rejected the registration; see the error for the field"
}

// session runs one Connect stream: Register, then a Report every interval
// (and at once on an engine health change), re-sending Register when the
// engine was rediscovered or the scheduler asks. registered says whether the
// scheduler acknowledged the registration.
func (a *Agent) session(ctx context.Context, client pb.AgentServiceClient) (registered bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(sctx)
	if err != nil {
		return false, err
	}
	msgs := make(chan *pb.SchedulerMessage, 8)
	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-sctx.Done():
				return
			}
		}
	}()
	// Send errors are io.EOF; the stream's real status comes from Recv.
	fail := func(err error) (bool, error) {
		select {
		case rerr := <-recvErr:
			return registered, rerr
		case <-time.After(time.Second):
			return registered, err
		}
	}
	snap := a.snapshot()
	regGen := snap.gen
	if err := stream.Send(a.register(snap)); err != nil {
		return fail(err)
	}
	a.met.registrations.Inc()
	interval := a.opts.ReportInterval
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var out *pb.AgentMessage
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return registered, ctx.Err()
		case err := <-recvErr:
			return registered, err
		case msg := <-msgs:
			switch m := msg.Msg.(type) {
			case *pb.SchedulerMessage_Registered:
				if !registered {
					a.log.Info("registered with scheduler", zap.String("instance_id", m.Registered.GetInstanceId()),
						zap.String("scheduler", a.opts.SchedulerAddress))
					// A new stream is a new registration, never drained: a
					// drain from before the reconnect (or from a scheduler
					// that restarted since) no longer holds. On a
					// re-registration over this same stream the scheduler
					// keeps a drain and says so again after the ack.
					a.setDraining(false, "new registration")
				}
				registered = true
				a.setConnected(true, nil)
				if d := m.Registered.GetReportInterval().AsDuration(); d >= 10*time.Millisecond && d != interval {
					a.log.Info("report interval set by scheduler", zap.Duration("report_interval", d))
					interval = d
					tick.Reset(interval)
				}
			case *pb.SchedulerMessage_PrefillFleet:
				if a.opts.OnPrefillFleet != nil {
					peers := make(map[string]int32, len(m.PrefillFleet.GetPeers()))
					for _, p := range m.PrefillFleet.GetPeers() {
						peers[p.GetAddress()] = p.GetBootstrapPort()
					}
					a.opts.OnPrefillFleet(peers)
				}
				continue
			case *pb.SchedulerMessage_Command:
				if a.command(m.Command) {
					snap := a.snapshot()
					regGen = snap.gen
					out = a.register(snap)
				}
			}
		case <-tick.C:
		case <-a.changed:
		}
		if out == nil {
			snap := a.snapshot()
			if snap.gen != regGen {
				out = a.register(snap)
				// Only adapters changed since the last registration on
				// this stream: the scheduler keeps what it learnt.
				out.GetRegister().EngineUnchanged = snap.refreshed == snap.gen && snap.gen == regGen+1
				regGen = snap.gen
			} else {
				out = &pb.AgentMessage{Msg: &pb.AgentMessage_Report{Report: a.report(snap)}}
			}
		}
		if err := stream.Send(out); err != nil {
			return fail(err)
		}
		if _, ok := out.Msg.(*pb.AgentMessage_Register); ok {
			a.met.registrations.Inc()
		} else {
			a.met.reports.Inc()
		}
	}
}

// command applies a scheduler command; it reports whether to re-register.
// Drain and resume are the scheduler's decision about picks: the agent
// records them (for /metrics and logs) and keeps reporting, so in-flight
// requests are still accounted while they finish.
func (a *Agent) command(c *pb.Command) bool {
	a.log.Info("scheduler command", zap.String("kind", c.GetKind().String()), zap.String("reason", c.GetReason()))
	switch c.GetKind() {
	case pb.Command_KIND_DRAIN:
		a.setDraining(true, "")
	case pb.Command_KIND_RESUME:
		a.setDraining(false, "")
	case pb.Command_KIND_REREGISTER:
		return true
	}
	return false
}

// setDraining records the scheduler's drain state; why, when given, is
// logged if the state changes (commands are logged where they arrive).
func (a *Agent) setDraining(draining bool, why string) {
	a.mu.Lock()
	changed := a.st.draining != draining
	a.st.draining = draining
	a.mu.Unlock()
	if draining {
		a.met.draining.Set(1)
	} else {
		a.met.draining.Set(0)
	}
	if changed && why != "" {
		a.log.Info("drain state", zap.Bool("draining", draining), zap.String("reason", why))
	}
}

// EngineKind is the detected (or stated) engine kind, "" before the engine
// was first ready.
func (a *Agent) EngineKind() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.info.adapter == nil {
		return ""
	}
	return a.st.info.adapter.Name
}

// Draining reports whether the scheduler has drained this instance.
func (a *Agent) Draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.draining
}
