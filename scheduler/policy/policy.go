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
	"github.com/llmrouter/llmrouter/scheduler/fleet"
)

// Role, Instance and Clock live in scheduler/fleet (a leaf every part
// imports); these names keep the policies' code unchanged.
type (
	Role        = fleet.Role
	Instance    = fleet.Instance
	Clock       = fleet.Clock
	SystemClock = fleet.SystemClock
)

const (
	RoleBoth    = fleet.RoleBoth
	RolePrefill = fleet.RolePrefill
	RoleDecode  = fleet.RoleDecode
)

// Request is what a policy knows of one request. The raw prompt never reaches
// the scheduler: BlockHashes stand for it (internal/prompthash).
type Request struct {
	ID          string
	Model       string
	BlockHashes []uint64
	BlockChars  int
	// Past its first HeadBlocks hashes, BlockHashes goes on in tail blocks
	// as long as BlocksPerTail blocks of BlockChars each (the gateway's
	// tail_block_chars, internal/prompthash.Tiered); BlocksPerTail 0: every
	// hash is one block. Policies count what an instance holds in blocks
	// of BlockChars: Blocks converts a number of leading hashes.
	HeadBlocks, BlocksPerTail int
	PromptTokens              int64
	MaxTokens                 int64
	Stream                    bool
	SessionKey                string
	Priority                  int
	LoRA                      string
	// Arrival is when the scheduler first saw the request (its clock).
	Arrival time.Time
	// Deadline is when the request's wait_schedule_timeout runs out: it
	// must have a place by then (saturation-filter holds predicted waits
	// against it). Zero: no deadline.
	Deadline time.Time
}

// Blocks is how many blocks of BlockChars the first m of the request's
// hashes cover.
func (r *Request) Blocks(m int) int {
	if r.BlocksPerTail <= 1 || m <= r.HeadBlocks {
		return m
	}
	return r.HeadBlocks + (m-r.HeadBlocks)*r.BlocksPerTail
}

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
	// Pick ranks candidates (never empty) for req. It must neither keep
	// nor write to the slice (it may be the scheduler's list of a pool).
	Pick(req *Request, candidates []*Instance) Decision
}

// Holder is implemented by policies that can tell when a request is
// better off waiting for an instance the stage held back as saturated than
// going to any candidate now: one that holds so much more of its prompt
// that computing the difference elsewhere would take longer than the
// request has waited so far. Sending such a request on moves a long prompt
// onto an instance that must compute it whole and keep it in its KV cache,
// which under KV pressure saturates that instance in turn. The scheduler
// asks only while some routable instance is saturated and others are not,
// and never at the request's deadline or with its queue full: then the
// best candidate takes it, as without a Holder. cands are the routable
// instances of the request's pool, each marked Saturated or not by the
// stage: the unsaturated ones are those the policy would pick among.
type Holder interface {
	Hold(req *Request, cands []*Instance, waited time.Duration) bool
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
