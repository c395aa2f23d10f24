package rank

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func insts(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprint(i)}
	}
	return out
}

func TestTopOrdersFirstKAndKeepsAll(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 5, 63, 64, 200, 1024} {
		c := insts(n)
		sc := make([]float64, n)
		for i := range sc {
			sc[i] = float64(r.IntN(40))
		}
		k := 7
		got := Top(r, c, sc, k)
		if len(got) != n {
			t.Fatalf("n=%d: %d returned", n, len(got))
		}
		score := map[*policy.Instance]float64{}
		for i, x := range c {
			score[x] = sc[i]
		}
		want := slices.Clone(sc)
		slices.Sort(want)
		exact := min(k, n)
		if n < FullBelow {
			exact = n
		}
		for i := range exact {
			if score[got[i]] != want[i] {
				t.Fatalf("n=%d: position %d has score %v, want %v", n, i, score[got[i]], want[i])
			}
		}
		seen := map[*policy.Instance]bool{}
		for _, x := range got {
			if seen[x] {
				t.Fatalf("n=%d: %s twice", n, x.ID)
			}
			seen[x] = true
		}
	}
}

func TestTopBreaksTiesAtRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{4, 300} {
		c := insts(n)
		sc := make([]float64, n)
		for i := range sc {
			sc[i] = 1
		}
		sc[n-1] = 5 // the one worse candidate never leads
		first := map[string]int{}
		for range 2000 {
			first[Top(r, c, sc, 3)[0].ID]++
		}
		if first[fmt.Sprint(n-1)] != 0 {
			t.Fatalf("n=%d: the worse candidate led %d times", n, first[fmt.Sprint(n-1)])
		}
		if n == 4 {
			for i := range 3 {
				if f := first[fmt.Sprint(i)]; f < 500 || f > 850 {
					t.Fatalf("tied candidate %d led %d of 2000 picks, want about 667", i, f)
				}
			}
		} else if len(first) < 200 {
			t.Fatalf("n=%d: only %d distinct leaders over 2000 picks among %d tied", n, len(first), n-1)
		}
	}
}

// A Ranker must rank exactly as Top does for the same random stream (the
// prefix-cache policy's decisions depend on it) and return only the k best
// once there are FullBelow candidates or more.
func TestRankerAgreesWithTop(t *testing.T) {
	var rk Ranker
	sc := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{1, 2, 40, 63, 64, 65, 300, 1024} {
		for _, k := range []int{0, 1, 5, n, n + 1} {
			c := insts(n)
			scores := make([]float64, n)
			for i := range scores {
				scores[i] = float64(sc.IntN(8)) // many exact ties
			}
			want := Top(rand.New(rand.NewPCG(uint64(n), uint64(k))), c, scores, k)
			got := rk.Top(rand.New(rand.NewPCG(uint64(n), uint64(k))), c, scores, k)
			wantLen := n
			if n >= FullBelow && k < n {
				wantLen = max(k, 1)
			}
			if len(got) != wantLen {
				t.Fatalf("n=%d k=%d: %d returned, want %d", n, k, len(got), wantLen)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("n=%d k=%d: position %d is %s, Top has %s", n, k, i, got[i].ID, want[i].ID)
				}
			}
		}
	}
}

func TestRankerAllocatesOnlyItsResult(t *testing.T) {
	var rk Ranker
	r := rand.New(rand.NewPCG(4, 4))
	c := insts(1024)
	scores := make([]float64, len(c))
	for i := range scores {
		scores[i] = float64(r.IntN(100))
	}
	allocs := testing.AllocsPerRun(50, func() {
		if got := rk.Top(r, c, scores, 5); len(got) != 5 {
			t.Fatalf("%d returned, want 5", len(got))
		}
	})
	if allocs > 1 {
		t.Fatalf("%.1f allocations per Top over 1,024 candidates, want 1 (the result)", allocs)
	}
}

// TestStreamAgreesWithTop: offering every candidate — or skipping, once
// Full, those scoring above Threshold — selects exactly what Top does, with
// the same random draws (the generator is in the same state afterwards).
func TestStreamAgreesWithTop(t *testing.T) {
	var rk Ranker
	sc := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{64, 65, 300, 1024} {
		for _, k := range []int{1, 4, 9} {
			for _, skip := range []bool{false, true} {
				c := insts(n)
				scores := make([]float64, n)
				for i := range scores {
					scores[i] = float64(sc.IntN(50)) // many exact ties
				}
				rw, rg := rand.New(rand.NewPCG(uint64(n), uint64(k))), rand.New(rand.NewPCG(uint64(n), uint64(k)))
				want := Top(rw, c, scores, k)[:k]
				st := rk.Stream(rg, k)
				skipped := 0
				for i, s := range scores {
					if skip && st.Full() && s > st.Threshold() {
						skipped++
						continue
					}
					st.Offer(int32(i), s)
				}
				got := rk.Ranked(st, c)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("n=%d k=%d skip=%v: %v, Top gives %v", n, k, skip, got, want)
				}
				if rw.Uint64() != rg.Uint64() {
					t.Fatalf("n=%d k=%d skip=%v: the generators drew differently", n, k, skip)
				}
				if skip && skipped < n/4 {
					t.Fatalf("n=%d k=%d: only %d of %d skipped; the test does not exercise skipping", n, k, skipped, n)
				}
			}
		}
	}
}
