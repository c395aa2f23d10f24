package registry

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/scheduler/fleet"
)

func reg(addr string, role llmrouterv1.Role) *llmrouterv1.Register {
	return &llmrouterv1.Register{Address: addr, Models: []string{"m", "m", ""}, Role: role}
}

func TestWatchCoalescesAndNeverBlocks(t *testing.T) {
	r := New(Options{})
	ch, cancel := r.Watch()
	for i := range 100 { // nobody reads: the registry must not block
		if _, err := r.Register(reg(fmt.Sprintf("10.0.%d.%d:80", i/200, i%200+1), 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("signals not coalesced")
	default:
	}
	cancel()
	cancel() // idempotent
	if _, err := r.Register(reg("10.1.0.1:80", 0), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("signal after cancel")
	default:
	}
}

func TestRoutableSortedAndFiltered(t *testing.T) {
	r := New(Options{})
	for _, a := range []string{"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"} {
		if _, err := r.Register(reg(a, llmrouterv1.Role_ROLE_DECODE), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Report("10.0.0.2:80", 0, &llmrouterv1.Report{Healthy: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDraining("10.0.0.3:80", true, "test"); err != nil {
		t.Fatal(err)
	}
	rt := r.Published()
	if len(rt) != 1 || rt[0].ID != "10.0.0.1:80" || rt[0].Role != fleet.RoleDecode || !slices.Equal(rt[0].Models, []string{"m"}) {
		t.Fatalf("routable = %+v", rt)
	}
	var states []string
	for _, i := range r.List() {
		states = append(states, i.ID+"="+i.State())
	}
	want := []string{"10.0.0.1:80=healthy", "10.0.0.2:80=unhealthy", "10.0.0.3:80=draining"}
	if !slices.Equal(states, want) {
		t.Fatalf("list = %v, want %v", states, want)
	}
}

// TestReportCopiesLoRAState: the adapters an engine runs, those waiting to
// be loaded and its adapter slots reach the instance from the registration's
// first report and from every report after it. Running adapters keep their
// last list when a report names none and does not say the engine's state is
// known (TestReportLoRAStateKnown has the other case); waiting
// adapters and slots are what the latest report says, a negative max_lora
// being unknown (0).
func TestReportCopiesLoRAState(t *testing.T) {
	r := New(Options{})
	rg := reg("10.0.0.1:80", 0)
	rg.LoraAdapters = []string{"sql", "chat", "tools"}
	rg.Initial = &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"sql", "sql"},
		WaitingLoraAdapters: []string{"chat", "", "chat", "tools"}, MaxLora: 4}
	if _, err := r.Register(rg, nil); err != nil {
		t.Fatal(err)
	}
	check := func(when string, i Instance, loras, waiting []string, maxLoRA int64) {
		t.Helper()
		if !slices.Equal(i.LoRAs, loras) || !slices.Equal(i.WaitingLoRAs, waiting) || i.MaxLoRA != maxLoRA {
			t.Errorf("%s: loras %q, waiting %q, max_lora %d; want %q, %q, %d", when, i.LoRAs, i.WaitingLoRAs, i.MaxLoRA, loras, waiting, maxLoRA)
		}
	}
	check("registered", r.List()[0], []string{"sql"}, []string{"chat", "tools"}, 4)
	i, err := r.Report("10.0.0.1:80", 0, &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"chat"}, WaitingLoraAdapters: []string{"sql"}, MaxLora: 4})
	if err != nil {
		t.Fatal(err)
	}
	check("report", i, []string{"chat"}, []string{"sql"}, 4)
	if i, err = r.Report("10.0.0.1:80", 0, &llmrouterv1.Report{Healthy: true, MaxLora: -2}); err != nil {
		t.Fatal(err)
	}
	check("report naming no adapter, bad max_lora", i, []string{"chat"}, []string{}, 0)
}

// TestReportLoRAStateKnown: a report that says it carries the engine's own
// account of its adapters (lora_state_known) replaces the instance's lists
// with exactly what it names, none included, so the adapters registration
// listed (those the engine serves, from /v1/models) are not taken for
// running ones, and an adapter the engine stopped running is dropped. A
// report that does not say so and names none leaves them as they were.
func TestReportLoRAStateKnown(t *testing.T) {
	r := New(Options{})
	served := []string{"sql", "chat"}
	for _, tc := range []struct {
		addr  string
		known bool
		want  []string
	}{
		{"10.0.0.1:80", true, []string{}},
		{"10.0.0.2:80", false, served},
	} {
		rg := reg(tc.addr, 0)
		rg.LoraAdapters = served
		rg.Initial = &llmrouterv1.Report{Healthy: true, MaxLora: 2, LoraStateKnown: tc.known}
		if _, err := r.Register(rg, nil); err != nil {
			t.Fatal(err)
		}
		i, _ := r.Get(tc.addr)
		if !slices.Equal(i.LoRAs, tc.want) {
			t.Errorf("registered with /v1/models %q, initial report naming none (known %v): loras %q, want %q", served, tc.known, i.LoRAs, tc.want)
		}
	}
	steps := []struct {
		what             string
		rep              *llmrouterv1.Report
		loras, waitingLo []string
	}{
		{"runs sql", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, LoraAdapters: []string{"sql"}}, []string{"sql"}, []string{}},
		{"stopped running sql, chat waits", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, WaitingLoraAdapters: []string{"chat"}}, []string{}, []string{"chat"}},
		{"runs chat", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, LoraAdapters: []string{"chat"}}, []string{"chat"}, []string{}},
		{"state not said, none named", &llmrouterv1.Report{Healthy: true}, []string{"chat"}, []string{}},
		{"runs none", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true}, []string{}, []string{}},
	}
	for _, st := range steps {
		i, err := r.Report("10.0.0.1:80", 0, st.rep)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(i.LoRAs, st.loras) || !slices.Equal(i.WaitingLoRAs, st.waitingLo) {
			t.Errorf("%s: loras %q, waiting %q; want %q, %q", st.what, i.LoRAs, i.WaitingLoRAs, st.loras, st.waitingLo)
		}
	}
}

func TestIPv4MappedAddressNormalised(t *testing.T) {
	r := New(Options{})
	l, err := r.Register(reg("[::ffff:10.0.0.1]:80", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.ID != "10.0.0.1:80" {
		t.Fatalf("id = %q", l.ID)
	}
}

// TestDrainCarriesOverReRegistration: an instance drained by the operator
// that registers again (its engine restarted) is never routable in
// between; a fresh registration after it was removed starts undrained.
func TestDrainCarriesOverReRegistration(t *testing.T) {
	r := New(Options{})
	const a = "10.0.0.1:80"
	first, err := r.Register(reg(a, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDraining(a, true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(reg(a, 0), first); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get(a); !got.Draining || len(r.Published()) != 0 {
		t.Fatalf("after re-registration: draining %v, routable %d; the drain must carry over", got.Draining, len(r.Published()))
	}
	r.Remove(a, 0, "gone")
	if _, err := r.Register(reg(a, 0), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get(a); got.Draining || len(r.Published()) != 1 {
		t.Fatalf("a fresh registration after removal: draining %v, routable %d", got.Draining, len(r.Published()))
	}
}

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// A live registration's address cannot be taken over; a silent one's can
// (its agent is gone or stalled, and a restarted agent must get back in),
// and the takeover ends the old lease.
func TestTakeoverOnlyOfSilent(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := New(Options{Clock: clk})
	const a = "10.0.0.1:80"
	first, err := r.Register(reg(a, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(reg(a, 0), nil); !errors.Is(err, ErrTaken) {
		t.Fatalf("takeover of a live registration: %v, want ErrTaken", err)
	}
	stranger := &Lease{ID: a, Gen: first.Gen + 100}
	if _, err := r.Register(reg(a, 0), stranger); !errors.Is(err, ErrTaken) {
		t.Fatalf("takeover with a foreign lease: %v, want ErrTaken", err)
	}
	clk.t = clk.t.Add(3 * DefaultReportInterval)
	if res := r.Sweep(); len(res.Silenced) != 1 || len(r.Published()) != 1 {
		t.Fatalf("sweep = %+v, published %d", res, len(r.Published()))
	}
	second, err := r.Register(reg(a, 0), nil)
	if err != nil {
		t.Fatalf("registration over a silent one: %v", err)
	}
	select {
	case <-first.Done():
	default:
		t.Fatal("silent registration's lease not ended")
	}
	if got, _ := r.Get(a); got.Silent || second.Gen == first.Gen {
		t.Fatalf("new registration = %+v", got)
	}
}

// Verification and silence decide what is published and what is picked.
func TestPublishedVersusRoutable(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := New(Options{Clock: clk, Verify: true})
	l, err := r.Register(reg("10.0.0.1:80", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Published()) != 0 {
		t.Fatal("unverified instance published")
	}
	if _, ok := r.MarkVerified(l.ID, l.Gen+1); ok {
		t.Fatal("a stale generation verified the instance")
	}
	if _, ok := r.MarkVerified(l.ID, l.Gen); !ok || len(r.Published()) != 1 {
		t.Fatal("verified instance not published")
	}
	clk.t = clk.t.Add(time.Second)
	r.Sweep()
	got, _ := r.Get(l.ID)
	if got.Routable() || !got.Published() || len(r.Published()) != 1 {
		t.Fatalf("silent: routable %v published %v", got.Routable(), got.Published())
	}
	// Alone and silent it is a panic (100 % > 50 %): the probe may not
	// remove it.
	if _, ok := r.ConfirmDown(l.ID, l.Gen, "probe failed"); ok {
		t.Fatal("confirmed down during a panic episode")
	}
	if on, n := r.Panic(); !on || n != 1 {
		t.Fatalf("panic = %v, episodes %d", on, n)
	}
}

// An orphaned registration (its stream ended) stays published and silent;
// its lease ends once, and removing it later (grace) does not end it again.
func TestOrphanKeepsPublished(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := New(Options{Clock: clk, SilentGrace: 5 * time.Second, PanicThreshold: 1})
	l, err := r.Register(reg("10.0.0.1:80", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Orphan(l.ID, l.Gen+1, "stale"); ok {
		t.Fatal("a stale generation orphaned the registration")
	}
	if _, ok := r.Orphan(l.ID, l.Gen, "stream closed"); !ok {
		t.Fatal("not orphaned")
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("lease not ended")
	}
	got, _ := r.Get(l.ID)
	if !got.Silent || got.Routable() || len(r.Published()) != 1 {
		t.Fatalf("orphan: %+v, published %d", got, len(r.Published()))
	}
	clk.t = clk.t.Add(6 * time.Second)
	if res := r.Sweep(); len(res.Removed) != 1 || r.Len() != 0 {
		t.Fatalf("orphan past the grace: %+v", res)
	}
	if l.Reason() != "stream closed" {
		t.Fatalf("reason = %q, want the first", l.Reason())
	}
}

// After its owner resumes from a stall, an instance's silence counts from
// then: the reports that arrived meanwhile have not been read yet.
func TestSilenceCountsFromResume(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := New(Options{Clock: clk})
	l, err := r.Register(reg("10.0.0.1:80", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(2 * time.Second) // the owner did not run
	r.Resumed(clk.t)
	if res := r.Sweep(); len(res.Silenced) != 0 || res.Panic {
		t.Fatalf("silenced on resuming: %+v", res)
	}
	clk.t = clk.t.Add(3*DefaultReportInterval - time.Millisecond)
	if res := r.Sweep(); len(res.Silenced) != 0 {
		t.Fatalf("silenced within missed_reports of resuming: %+v", res)
	}
	clk.t = clk.t.Add(time.Millisecond) // still no report: silent now
	if res := r.Sweep(); len(res.Silenced) != 1 || res.Silenced[0].ID != l.ID {
		t.Fatalf("not silenced missed_reports after resuming: %+v", res)
	}
}

// TestServedAdaptersKeptApartFromRunning: the adapters a registration
// lists are what the instance serves (Adapters, Serves) whatever its
// reports say it runs; a re-registration changing only them keeps the
// instance verified, one changing its base models is verified again.
func TestServedAdaptersKeptApartFromRunning(t *testing.T) {
	r := New(Options{Verify: true})
	const a = "10.0.0.1:80"
	rg := reg(a, 0)
	rg.Engine, rg.LoraAdapters = "vllm", []string{"sql", "sql", "chat"}
	l, err := r.Register(rg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.MarkVerified(a, l.Gen); !ok {
		t.Fatal("not verified")
	}
	i, _ := r.Report(a, 0, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, LoraAdapters: []string{"chat"}})
	if !slices.Equal(i.Adapters, []string{"sql", "chat"}) || !slices.Equal(i.LoRAs, []string{"chat"}) || !i.Serves("sql") || !i.Serves("m") || i.Serves("poetry") {
		t.Fatalf("served %q, running %q; want served [sql chat] (sql served though not running), running [chat]", i.Adapters, i.LoRAs)
	}
	rg = reg(a, 0)
	rg.Engine, rg.LoraAdapters, rg.EngineUnchanged = "vllm", []string{"chat", "tools"}, true
	if l, err = r.Register(rg, l); err != nil {
		t.Fatal(err)
	}
	if i, _ = r.Get(a); !i.Verified || !slices.Equal(i.Adapters, []string{"chat", "tools"}) || i.Serves("sql") {
		t.Fatalf("after an adapter change: verified %v, served %q; want verified, [chat tools]", i.Verified, i.Adapters)
	}
	rg = reg(a, 0)
	rg.Engine, rg.Models = "vllm", []string{"m2"}
	if _, err = r.Register(rg, l); err != nil {
		t.Fatal(err)
	}
	if i, _ = r.Get(a); i.Verified || len(i.Adapters) != 0 {
		t.Fatalf("after a base model change: verified %v, served %q; want verified again, none", i.Verified, i.Adapters)
	}
}
