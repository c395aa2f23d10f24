// Package policy defines what a scheduling policy is and how policies are
// found by name. Each policy lives in its own package below this one and
// registers itself in init (scheduler/policy/all imports every one), so
// changing one policy never touches another.
//
// A policy sees plain data: the request's features and a slice of candidate
// instances that the scheduler has already filtered (healthy, serving the
// model, not draining, and — unless the request waited out its queue time —
// not saturated). It returns them ranked, best first. It never blocks and
// never calls out.
package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/config"
)

// Role is the phase of a request an instance serves.
type Role int

const (
	RoleBoth Role = iota
	RolePrefill
	RoleDecode
)

func (r Role) String() string {
	switch r {
	case RolePrefill:
		return "prefill"
	case RoleDecode:
		return "decode"
	}
	return "both"
}

// Request is what a policy knows of one request. The raw prompt never reaches
// the scheduler: BlockHashes stand for it (internal/prompthash).
type Request struct {
	ID           string
	Model        string
	BlockHashes  []uint64
	BlockChars   int
	PromptTokens int64
	MaxTokens    int64
	Stream       bool
	SessionKey   string
	Priority     int
	LoRA         string
	// Arrival is when the scheduler first saw the request (its clock).
	Arrival time.Time
}

// Instance is a read-only view of one engine instance at decision time.
// Its ID never changes for the life of an *Instance, so policies may cache
// what they derive from the ID by pointer.
//
// The fields every policy reads for every candidate come first, so that a
// pass over a thousand candidates touches about one cache line of each.
type Instance struct {
	// From the last agent report.
	Running      int64
	Waiting      int64
	KVCacheUsage float64 // 0..1

	// InflightRequests and InflightPromptTokens count picks made since the
	// instance's last report, which Running/Waiting do not show yet (the next
	// report is taken to include them). InflightDecodeTokens counts the
	// expected output of every pick no gateway has reported complete.
	InflightRequests     int64
	InflightPromptTokens int64 // prompt tokens of unreported picks (estimate)
	InflightDecodeTokens int64 // output tokens still to generate for in-flight picks (estimate)

	// Saturated is set when the instance is over a saturation threshold.
	Saturated bool

	ID      string // stable identity (the advertised address today)
	Address string // ip:port written into the pick
	Engine  string
	Role    Role
	Models  []string
	LoRAs   []string

	PromptTPS float64 // prompt tokens/s over the last report interval
	GenTPS    float64 // generation tokens/s over the last report interval
	// PrefixCacheHitRatio is the engine's share of prompt tokens served
	// from its prefix cache (0..1); -1 when it does not say.
	PrefixCacheHitRatio float64
	NumGPUBlocks        int64 // 0 when unknown
	BlockSize           int64 // tokens per KV block, 0 when unknown
	LastReport          time.Time
}

// Load is the request count a policy should consider: what the engine last
// reported plus what the scheduler sent since.
func (i *Instance) Load() int64 { return i.Running + i.Waiting + i.InflightRequests }

// Decision is a policy's answer.
type Decision struct {
	// Ranked holds candidates best first; the scheduler keeps the first
	// 1+retry_count as the pick and its fallbacks.
	Ranked []*Instance
	// Prefill is the prefill instance of a disaggregated (pd-split) request;
	// nil otherwise.
	Prefill *Instance
}

// Policy ranks candidates for a request.
type Policy interface {
	Name() string
	// Pick ranks candidates (never empty) for req. It must not keep the slice.
	Pick(req *Request, candidates []*Instance) Decision
}

// Observer is implemented by policies that keep state across decisions (a
// prefix index, session affinity). The scheduler calls it serially with Pick.
type Observer interface {
	// Picked is called once the scheduler commits to a decision.
	Picked(req *Request, d Decision)
	// Completed is called when a gateway reports the request done.
	Completed(reqID string, instanceID string, promptTokens, completionTokens int64)
	// Removed is called when an instance leaves the fleet.
	Removed(instanceID string)
}

// Clock gives the scheduler its notion of now, so the simulator can run it in
// virtual time.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Deps is what a policy may use when it is built.
type Deps struct {
	Config config.Config
	Clock  Clock
	Log    *zap.Logger
	// Rand breaks ties. Deterministic for a seed in the simulator.
	Rand *rand.Rand
	// Build builds another policy by name (pd-split composes two).
	Build func(name string) (Policy, error)
	// Metrics, when set, is where a policy registers its own series (the
	// prefix index's size). Nil: the policy exports nothing.
	Metrics prometheus.Registerer
}

// Factory builds a policy.
type Factory func(Deps) (Policy, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a policy available by name. It panics on a duplicate, which
// is a programming error caught by any test.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[name]; dup {
		panic("policy: duplicate registration of " + name)
	}
	factories[name] = f
}

// New builds the named policy.
func New(name string, d Deps) (Policy, error) {
	mu.RLock()
	f, ok := factories[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown policy %q; registered: %v", name, Names())
	}
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Rand == nil {
		d.Rand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6c6c6d))
	}
	if d.Build == nil {
		d.Build = func(n string) (Policy, error) { return New(n, d) }
	}
	return f(d)
}

// Names lists the registered policies, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for n := range factories {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// RankBy sorts candidates by ascending score and breaks exact ties at random,
// so equal instances share the load instead of the first one taking it all.
// It returns a new slice.
func RankBy(r *rand.Rand, cands []*Instance, score func(*Instance) float64) []*Instance {
	type scored struct {
		inst *Instance
		s    float64
		tie  uint64
	}
	xs := make([]scored, len(cands))
	for i, c := range cands {
		xs[i] = scored{c, score(c), r.Uint64()}
	}
	slices.SortFunc(xs, func(a, b scored) int {
		switch {
		case a.s < b.s:
			return -1
		case a.s > b.s:
			return 1
		case a.tie < b.tie:
			return -1
		case a.tie > b.tie:
			return 1
		}
		return 0
	})
	out := make([]*Instance, len(xs))
	for i, x := range xs {
		out[i] = x.inst
	}
	return out
}
