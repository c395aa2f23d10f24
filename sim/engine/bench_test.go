package engine

import (
	"fmt"
	"math/rand"
	"testing"
	"time"
)

// workload is a stream of chat-like requests: 32 shared system prompts of
// 1024 tokens plus 64..1088 tokens of question, 16..400 output tokens.
type workload struct {
	rng    *rand.Rand
	shared [][]uint64
	next   uint64
}

func newWorkload(seed int64) *workload {
	w := &workload{rng: rand.New(rand.NewSource(seed))}
	for g := 0; g < 32; g++ {
		w.shared = append(w.shared, hashes(fmt.Sprint("sys", g), 64))
	}
	return w
}

func (w *workload) request() Request {
	w.next++
	q := 64 + w.rng.Intn(1024)
	prompt := 1024 + q
	hs := make([]uint64, 0, prompt/16)
	hs = append(hs, w.shared[w.rng.Intn(len(w.shared))]...)
	hs = append(hs, hashes(fmt.Sprint("q", w.next), q/16)...)
	return Request{ID: w.next, PromptTokens: prompt, MaxTokens: 16 + w.rng.Intn(384), BlockHashes: hs}
}

// BenchmarkStep measures one engine step with a full batch (max_num_seqs =
// 256 running, mostly decoding, a few prefills), replacing every finished
// request so the batch stays realistic.
func BenchmarkStep(b *testing.B) {
	e, _ := New(DefaultConfig())
	w := newWorkload(1)
	reqs := make([]Request, 0, 1<<16)
	for i := 0; i < 300; i++ {
		reqs = append(reqs, w.request())
	}
	for _, r := range reqs {
		if err := e.Add(0, r); err != nil {
			b.Fatal(err)
		}
	}
	// Pre-build replacements so the timed loop measures the engine only.
	for i := 0; i < cap(reqs)-len(reqs); i++ {
		reqs = append(reqs, w.request())
	}
	next := 300
	// Warm up into steady state.
	for i := 0; i < 2000; i++ {
		at, _ := e.NextStepAt()
		for _, ev := range e.Step(at) {
			if ev.Kind == Finished && next < len(reqs) {
				_ = e.Add(at, reqs[next])
				next++
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		at, _ := e.NextStepAt()
		for _, ev := range e.Step(at) {
			if ev.Kind == Finished {
				if next == len(reqs) {
					next = 300 // ids are free again by now
				}
				_ = e.Add(at, reqs[next])
				next++
			}
		}
	}
	b.StopTimer()
	st := e.Stats()
	b.ReportMetric(float64(st.Running), "running")
}

// BenchmarkTenSimulatedMinutes runs one instance for 10 virtual minutes under
// Poisson arrivals near its capacity: the cluster simulator runs five of
// these, so 5× this must stay well under 30 s.
func BenchmarkTenSimulatedMinutes(b *testing.B) {
	for i := 0; i < b.N; i++ {
		e, _ := New(DefaultConfig())
		w := newWorkload(int64(i))
		rng := rand.New(rand.NewSource(int64(i)))
		const horizon = 10 * time.Minute
		const rate = 12.0 // requests per second
		arrival := time.Duration(0)
		pending := w.request()
		for {
			at, busy := e.NextStepAt()
			if !busy || arrival <= at {
				if arrival > horizon {
					if !busy {
						break
					}
				} else {
					if err := e.Add(arrival, pending); err != nil {
						b.Fatal(err)
					}
					pending = w.request()
					arrival += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
					continue
				}
			}
			e.Step(at)
		}
		if i == 0 {
			st := e.Stats()
			b.ReportMetric(float64(st.Steps), "steps")
			b.ReportMetric(float64(st.Finished), "finished")
			b.ReportMetric(float64(st.PrefixHits)/float64(st.PrefixQueries), "hit-ratio")
			b.ReportMetric(float64(st.BusyTime)/float64(horizon), "busy")
		}
	}
}
