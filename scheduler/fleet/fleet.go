// Package fleet holds the plain types every part of the scheduler shares —
// an instance as policies see it, its role, the clock — and nothing else, so
// that the registry, the policies, the scheduling framework, xDS and the
// simulator can all use them without importing one another. It imports only
// the standard library.
package fleet

import "time"

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

// Clock gives the scheduler its notion of now, so the simulator can run it in
// virtual time.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

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

	// Saturated is set when the instance is over a saturation threshold
	// (by saturation-filter). Routable is set by the scheduler while the
	// instance may take picks: healthy, verified, not draining and
	// reporting (routable-filter keeps only those).
	Saturated bool
	Routable  bool
	// BatchLimit is the running count at which the engine was last seen
	// holding requests back (max_num_seqs, or a full KV cache) on two
	// reports in a row (the larger of their two counts), raised when it
	// runs more; 0 until it has held requests back that long. One report
	// of requests waiting teaches nothing: a request that arrives between
	// two engine steps waits for a moment on any engine (see
	// admission.BatchLimit). Speed is the engine's
	// pace against the scheduler's cost model, measured from its reports
	// and smoothed (1: as the model says; 0.1: ten times slower); 0 until
	// measured. Both are kept by scheduler/admission, which reads them for
	// every candidate with work queued: 32 bits each keeps them in the
	// first cache line with Saturated.
	BatchLimit int32
	Speed      float32
	// SaturationMemo is scheduler/admission's remembered verdict on this
	// instance, in the first cache line's last word; 0 (the default) has
	// admission judge afresh every time. Its owner opts in with
	// admission.Remember and calls it again after every change of the
	// fields above (see there).
	SaturationMemo uint32
	// BatchHeld is the running count of the last report if it showed
	// requests waiting, 0 if it did not: scheduler/admission's memory of
	// a hold begun, which a second such report makes BatchLimit. Read
	// once per report, not per candidate, so it lies past the first
	// cache line.
	BatchHeld int32

	ID      string // stable identity (the advertised address today)
	Address string // ip:port written into the pick
	Engine  string
	Role    Role
	Models  []string
	LoRAs   []string
	// WaitingLoRAs are adapters whose requests wait for the engine to load
	// them; MaxLoRA is how many adapters the engine runs at once, 0 when
	// unknown (vLLM's lora_requests_info; other engines say neither).
	WaitingLoRAs []string
	MaxLoRA      int64

	PromptTPS float64 // prompt tokens/s over the last report interval
	GenTPS    float64 // generation tokens/s over the last report interval
	// PrefixCacheHitRatio is the engine's share of prompt tokens served
	// from its prefix cache (0..1); -1 when it does not say.
	PrefixCacheHitRatio float64
	// PromptTokensTotal is the engine's cumulative prompt tokens (0 when
	// it does not say): with PrefixCacheHitRatio, its cumulative prefix
	// hits, so a policy can measure the hit ratio of an interval.
	PromptTokensTotal float64
	NumGPUBlocks      int64 // 0 when unknown
	BlockSize         int64 // tokens per KV block, 0 when unknown
	LastReport        time.Time
}

// Load is the request count a policy should consider: what the engine last
// reported plus what the scheduler sent since.
func (i *Instance) Load() int64 { return i.Running + i.Waiting + i.InflightRequests }

// UncachedShare is the share of a prompt the engine must compute: 1 − its
// prefix-cache hit ratio, 1 when it reports none. Admission and prefix-cache
// charge unreported picks' prompts at this rate, so both read it here.
func (i *Instance) UncachedShare() float64 {
	if h := i.PrefixCacheHitRatio; h >= 0 && h <= 1 {
		return 1 - h
	}
	return 1
}
