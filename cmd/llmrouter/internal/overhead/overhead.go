// Package overhead measures what the gateway adds to a request: the ext_proc
// exchange Envoy's blocking filter makes for every request (request headers,
// then the buffered body, each answered) over loopback gRPC, with the real
// scheduler in-process deciding with its real policy over a registered fleet.
//
// The load generator speaks ext_proc as Envoy does (internal/envoytest) and
// runs open loop: requests start on a fixed schedule whatever the latency, so
// a slow answer cannot hide by slowing the load down. A second, closed-loop
// phase finds the decisions per second the gateway and scheduler sustain.
//
// Generator and server share this machine's cores, so the numbers are an
// upper bound on what the gateway adds beside a real Envoy.
package overhead

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/scheduler"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all" // every plugin and policy by name
)

// Options shape one measurement.
type Options struct {
	Instances   int           // registered engine instances (64)
	Policy      string        // scheduling policy (prefix-cache)
	PromptBytes int           // size of each request's prompt (4 KiB)
	Rate        float64       // open-loop requests per second (1,000)
	Duration    time.Duration // open-loop phase length
	// Concurrency of the closed-loop phase that measures decisions per
	// second; 0 skips it.
	Concurrency int
	// ClosedDuration is the closed-loop phase length.
	ClosedDuration time.Duration
	Seed           uint64
	// Progress, when set, is called about once a second.
	Progress func(done, total int)
}

// Defaults are the measurement: 64 instances, 4 KiB prompts, 1,000
// requests per second.
func Defaults() Options {
	return Options{Instances: 64, Policy: "prefix-cache", PromptBytes: 4 << 10, Rate: 1000,
		Duration: 10 * time.Second, Concurrency: 32, ClosedDuration: 5 * time.Second, Seed: 1}
}

// Result is what one measurement found.
type Result struct {
	Instances   int     `json:"instances"`
	Policy      string  `json:"policy"`
	PromptBytes int     `json:"prompt_bytes"`
	Rate        float64 `json:"rate"`
	Requests    int     `json:"requests"`
	Failed      int     `json:"failed"`
	// Added latency of the ext_proc exchange, milliseconds.
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	// AchievedRate is the rate the generator actually kept.
	AchievedRate float64 `json:"achieved_rate"`
	// DecisionsPerSecond is the closed-loop throughput (0 when skipped).
	DecisionsPerSecond float64 `json:"decisions_per_second"`
}

func (o Options) validate() error {
	switch {
	case o.Instances < 1:
		return fmt.Errorf("instances = %d: want 1 or more", o.Instances)
	case o.PromptBytes < 1:
		return fmt.Errorf("prompt size = %d bytes: want 1 or more", o.PromptBytes)
	case o.Rate <= 0:
		return fmt.Errorf("rate = %g: want a positive number of requests per second", o.Rate)
	case o.Duration <= 0:
		return fmt.Errorf("duration = %s: want a positive duration", o.Duration)
	case o.Concurrency < 0:
		return fmt.Errorf("concurrency = %d: want 0 or more", o.Concurrency)
	}
	return nil
}

// system runs the scheduler and gateway on loopback.
type system struct {
	sched  *scheduler.Scheduler
	gw     *extproc.Server
	srv    *grpc.Server
	conn   *grpc.ClientConn
	filter *envoytest.Filter
	addrs  []string
}

func start(o Options) (*system, error) {
	cfg := config.Default()
	cfg.Scheduler.Policy = o.Policy
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := zap.NewNop()
	sched, err := scheduler.New(cfg, scheduler.Deps{Log: log, Metrics: prometheus.NewRegistry(),
		Rand: rand.New(rand.NewPCG(o.Seed, 1))})
	if err != nil {
		return nil, err
	}
	s := &system{sched: sched}
	for i := range o.Instances {
		addr := fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250+1)
		s.addrs = append(s.addrs, addr)
		if _, err := sched.Register(&llmrouterv1.Register{
			Address: addr, Engine: "vllm", Models: []string{"model"}, NumGpuBlocks: 29000, BlockSize: 16,
			ReportInterval: durationpb.New(200 * time.Millisecond),
			Initial:        &llmrouterv1.Report{Healthy: true, GenerationTokensPerSecond: 2000, PromptTokensPerSecond: 20000},
		}); err != nil {
			return nil, err
		}
	}
	s.gw = extproc.New(extproc.OptionsFromConfig(cfg.Gateway), sched, prometheus.NewRegistry(), log)
	s.srv = grpc.NewServer(extproc.GRPCServerOptions()...)
	s.gw.Register(s.srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = s.srv.Serve(ln) }()
	// The Envoy stand-in marshals with the gateway's codec and pool: gRPC's
	// default ones clear a 1 MiB buffer for every 256 KiB body, a cost of
	// this generator that Envoy does not have and that would otherwise be
	// taken from the gateway's share of the two cores.
	client, conn, err := envoytest.Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		experimental.WithBufferPool(extproc.BufferPool()), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(extproc.Codec())))
	if err != nil {
		s.srv.Stop()
		return nil, err
	}
	s.conn = conn
	// Envoy's filter #1 as the bootstrap configures it. The message timeout
	// is Envoy's 200 ms: an answer later than that is a failure, as it would
	// be in production (Envoy would fail open and round-robin).
	s.filter = &envoytest.Filter{Client: client, MessageTimeout: 200 * time.Millisecond,
		MaxMessageTimeout: cfg.Gateway.WaitScheduleTimeout + extproc.QueueTimeoutSlack,
		FailureModeAllow:  true, ReceivingNamespaces: []string{"envoy.lb", extproc.GatewayNamespace}}
	return s, nil
}

func (s *system) stop() {
	_ = s.conn.Close()
	s.srv.Stop()
	s.gw.Close()
}

// reports keeps the fleet looking like engines reporting every 200 ms, so
// in-flight picks are folded into "running" and nothing saturates.
func (s *system) reports(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, a := range s.addrs {
				_ = s.sched.InstanceReport(a, 0, &llmrouterv1.Report{Healthy: true, Running: 4,
					KvCacheUsage: 0.3, GenerationTokensPerSecond: 2000, PromptTokensPerSecond: 20000})
			}
			s.sched.Tick()
		}
	}
}

// prompts builds request bodies: conversations under a few shared system
// prompts, each distinct after its prefix, so the prefix index does real work.
// The generator shares the cores with the gateway, so its own cost is kept
// small: each body is one copy of a prebuilt template (per system prompt)
// into a reused buffer, with the request's number stamped at the start of
// the user message. Block hashes chain, so every block after the stamp is
// new to the index, as it is with a fully distinct user text.
type prompts struct {
	templates [][]byte // a whole body per system prompt, user text filler
	stampAt   []int    // where the user text starts in each template
	rng       *rand.Rand
	mu        sync.Mutex
	n         int
	bufs      sync.Pool
}

// stampLen is the room the request number takes at the start of the user
// text ("question 0000000042; "), so a body is exactly its template's size.
const stampLen = len("question 0000000000; ")

func newPrompts(size int, seed uint64) *prompts {
	p := &prompts{rng: rand.New(rand.NewPCG(seed, 2))}
	filler := strings.Repeat("about topic 17, and then some more words; ", size/40+1)
	for i := range 8 {
		sys := strings.Repeat(fmt.Sprintf("You are assistant %d. Follow the policy. ", i), size/80+1)[:size/2]
		userLen := max(stampLen, size-len(sys))
		user := strings.Repeat(" ", stampLen) + filler[:userLen-stampLen]
		head := `{"model":"model","stream":true,"max_tokens":128,"messages":[{"role":"system","content":"` +
			sys + `"},{"role":"user","content":"`
		p.templates = append(p.templates, []byte(head+user+`"}]}`))
		p.stampAt = append(p.stampAt, len(head))
	}
	return p
}

// next returns a request id and its body; release gives the body back once
// the request has been sent.
func (p *prompts) next() (id string, body []byte) {
	p.mu.Lock()
	p.n++
	n := p.n
	k := p.rng.IntN(len(p.templates))
	p.mu.Unlock()
	tpl := p.templates[k]
	var buf []byte
	if b, ok := p.bufs.Get().(*[]byte); ok && cap(*b) >= len(tpl) {
		buf = (*b)[:len(tpl)]
	} else {
		buf = make([]byte, len(tpl))
	}
	copy(buf, tpl)
	at := p.stampAt[k]
	var stamp [stampLen]byte
	copy(buf[at:at+stampLen], fmt.Appendf(stamp[:0], "question %010d; ", n%10_000_000_000))
	return "req-" + strconv.Itoa(n), buf
}

func (p *prompts) release(body []byte) { p.bufs.Put(&body) }

// one sends one request through filter #1 and reports its completion to the
// scheduler (as filter #2 would), returning the exchange's latency.
func (s *system) one(ctx context.Context, p *prompts) (time.Duration, error) {
	id, body := p.next()
	defer p.release(body)
	req := envoytest.Request{Headers: []envoytest.Header{
		{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"},
		{Key: ":authority", Value: "llm"}, {Key: ":scheme", Value: "http"},
		{Key: "content-type", Value: "application/json"}, {Key: "x-request-id", Value: id},
		{Key: "content-length", Value: strconv.Itoa(len(body))},
	}, Body: body}
	t0 := time.Now()
	res := s.filter.Do(ctx, req)
	lat := time.Since(t0)
	if res.Err != nil {
		return lat, res.Err
	}
	dest, ok := envoytest.Get(res.Headers, extproc.HeaderDestination)
	if !ok || dest == "" {
		return lat, errors.New("no pick in the forwarded headers")
	}
	primary, _, _ := strings.Cut(dest, ",")
	// The scheduler keys a pick by the gateway's per-stream id, not the
	// client's x-request-id; Envoy hands it to filter #2 in the gateway's
	// metadata, which is where the outcome comes from in production.
	pickID := res.Metadata[extproc.GatewayNamespace].GetFields()[extproc.MetadataKeyPickID].GetStringValue()
	if pickID == "" {
		return lat, errors.New("no pick id in the gateway's metadata")
	}
	_ = s.sched.Report(ctx, &llmrouterv1.OutcomeReport{RequestId: pickID, Endpoint: primary, Model: "model",
		Success: true, HttpStatus: 200, PromptTokens: int64(len(body) / 4), CompletionTokens: 128})
	return lat, nil
}

// warmUpRequests are sent one at a time before a measurement.
const warmUpRequests = 200

// warmUp calls one n times and fails once more than a tenth of the calls
// failed, naming the first error. A busy machine makes the odd exchange
// miss Envoy's 200 ms message timeout, which the measurement counts as a
// failure and goes on; a warm-up ending the whole run on one such miss
// made the benchmark fail at random on a loaded machine. A broken system
// fails every call and still ends the run, after n/10+1 calls.
func warmUp(n int, one func() error) error {
	var failed int
	var first error
	for range n {
		err := one()
		if err == nil {
			continue
		}
		if failed++; first == nil {
			first = err
		}
		if failed > n/10 {
			return fmt.Errorf("warm-up: %d of %d requests failed, the first: %w", failed, n, first)
		}
	}
	return nil
}

// Run performs one measurement.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	s, err := start(o)
	if err != nil {
		return Result{}, err
	}
	defer s.stop()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.reports(rctx)
	p := newPrompts(o.PromptBytes, o.Seed)

	// Warm up connections, pools and the prefix index.
	if err := warmUp(warmUpRequests, func() error { _, err := s.one(ctx, p); return err }); err != nil {
		return Result{}, err
	}

	total := int(o.Rate * o.Duration.Seconds())
	lats := make([]time.Duration, total)
	var failed atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / o.Rate)
	begin := time.Now()
	lastProgress := begin
	for i := range total {
		due := begin.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			lat, err := s.one(ctx, p)
			lats[i] = lat
			if err != nil {
				failed.Add(1)
			}
		}(i)
		if o.Progress != nil && time.Since(lastProgress) > time.Second {
			o.Progress(i, total)
			lastProgress = time.Now()
		}
	}
	sent := time.Since(begin)
	wg.Wait()
	if o.Progress != nil {
		o.Progress(total, total)
	}

	r := Result{Instances: o.Instances, Policy: o.Policy, PromptBytes: o.PromptBytes, Rate: o.Rate,
		Requests: total, Failed: int(failed.Load()), AchievedRate: float64(total) / sent.Seconds()}
	slices.Sort(lats)
	q := func(f float64) float64 {
		return float64(lats[min(len(lats)-1, int(f*float64(len(lats))))]) / float64(time.Millisecond)
	}
	r.P50ms, r.P90ms, r.P99ms, r.P999ms = q(0.5), q(0.9), q(0.99), q(0.999)
	r.MaxMs = float64(lats[len(lats)-1]) / float64(time.Millisecond)

	if o.Concurrency > 0 && o.ClosedDuration > 0 {
		var done atomic.Int64
		cctx, ccancel := context.WithTimeout(ctx, o.ClosedDuration)
		t0 := time.Now()
		var cwg sync.WaitGroup
		for range o.Concurrency {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				for cctx.Err() == nil {
					if _, err := s.one(ctx, p); err == nil {
						done.Add(1)
					}
				}
			}()
		}
		cwg.Wait()
		ccancel()
		r.DecisionsPerSecond = float64(done.Load()) / time.Since(t0).Seconds()
	}
	return r, nil
}

// Table renders results as the overhead table of docs/benchmarks.md.
func Table(rs []Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %-13s %7s %8s %7s %8s %8s %8s %8s %8s %12s\n",
		"instances", "policy", "prompt", "rate/s", "failed", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "decisions/s")
	for _, r := range rs {
		fmt.Fprintf(&b, "%-9d %-13s %6dK %8.0f %7d %8.3f %8.3f %8.3f %8.3f %8.2f %12.0f\n",
			r.Instances, r.Policy, r.PromptBytes>>10, r.AchievedRate, r.Failed, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs, r.DecisionsPerSecond)
	}
	return b.String()
}
