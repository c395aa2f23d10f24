package agent

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmrouter/llmrouter/internal/reglimits"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// TestAgentNoticesAdapterChanges: vLLM loads and unloads LoRA adapters at
// runtime (/v1/load_lora_adapter), and /v1/models lists them as they come
// and go. The running agent reads /v1/models again every ModelsRefresh and
// re-registers on a change, saying the engine is unchanged so the scheduler
// keeps what it learnt; an unchanged list, or a /v1/models that fails for a
// while, re-registers nothing and leaves the engine healthy, the failures
// counted.
func TestAgentNoticesAdapterChanges(t *testing.T) {
	engine := newFakeVLLM(t)
	sched := newFakeScheduler(t)
	engine.start(t)
	opts := testOptions(engine, sched)
	opts.ModelsRefresh = 50 * time.Millisecond
	a, _ := startAgent(t, opts, zap.NewNop())

	first := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
	if !slices.Equal(first.GetLoraAdapters(), []string{"sql-lora"}) || first.GetEngineUnchanged() {
		t.Fatalf("first registration: adapters %q, engine_unchanged %v; want [sql-lora], false", first.GetLoraAdapters(), first.GetEngineUnchanged())
	}
	// quiet reads what the agent sends until done says stop, failing on
	// any re-registration or unhealthy report meanwhile.
	quiet := func(what string, done func() bool) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !done() {
			select {
			case m := <-sched.msgs:
				if m.GetRegister() != nil {
					t.Fatalf("%s: re-registered %v", what, m.GetRegister())
				}
				if !m.GetReport().GetHealthy() {
					t.Fatalf("%s: reported unhealthy: %v", what, m.GetReport())
				}
			case <-tick.C:
			}
		}
	}
	for1s := func() func() bool {
		end := time.Now().Add(time.Second)
		return func() bool { return !time.Now().Before(end) }
	}
	quiet("nothing changed", for1s())

	engine.set(func(e *fakeVLLM) { e.adapters = []string{"sql-lora", "chat-lora"} })
	re := sched.next(t, "re-registration after an adapter load", 5*time.Second, isRegister).GetRegister()
	if !slices.Equal(re.GetModels(), []string{"m"}) || !slices.Equal(re.GetLoraAdapters(), []string{"sql-lora", "chat-lora"}) ||
		!re.GetEngineUnchanged() || re.GetNumGpuBlocks() != 1000 || !re.GetInitial().GetHealthy() {
		t.Fatalf("re-registration after chat-lora loaded = %v; want models [m], adapters [sql-lora chat-lora], engine_unchanged, the same capacity", re)
	}

	before := value(t, a.met.scrapeErrors.WithLabelValues("models"))
	engine.set(func(e *fakeVLLM) { e.modelsDown = true })
	// A refresh rides on a poll (every 200 ms here): three failed ones come
	// within about 600 ms, later on a loaded machine, where a fixed second
	// could hold none. Counted is what matters, not when.
	failing := time.Now().Add(20 * time.Second)
	quiet("/v1/models failing", func() bool {
		after := value(t, a.met.scrapeErrors.WithLabelValues("models"))
		if after < before+3 && time.Now().After(failing) {
			t.Fatalf("llmrouter_agent_scrape_errors_total{kind=models} went %v -> %v over 20 s of failing refreshes", before, after)
		}
		return after >= before+3
	})

	engine.set(func(e *fakeVLLM) { e.modelsDown, e.adapters = false, nil })
	re = sched.next(t, "re-registration after the adapters were unloaded", 5*time.Second, isRegister).GetRegister()
	if len(re.GetLoraAdapters()) != 0 || !re.GetEngineUnchanged() {
		t.Fatalf("re-registration after every adapter unloaded: adapters %q, engine_unchanged %v; want none, true", re.GetLoraAdapters(), re.GetEngineUnchanged())
	}
	if err := a.Ready(); err != nil {
		t.Fatalf("Ready after the refreshes: %v", err)
	}
}

// TestAgentTrimsToRegistrationBounds: an engine listing more adapters than
// one registration may name, one of them too long, and a long version
// string, still gets registered: the agent registers the model and the
// first adapters within reglimits' bounds, skips the long name, cuts the
// version, and the registration passes the scheduler's own check. It logs
// the cut once, and a refresh finding the same list re-registers nothing.
func TestAgentTrimsToRegistrationBounds(t *testing.T) {
	engine := newFakeVLLM(t)
	adapters := []string{strings.Repeat("long", reglimits.MaxNameBytes)}
	for i := range 2000 {
		adapters = append(adapters, fmt.Sprintf("lora-%04d", i))
	}
	engine.adapters = adapters
	engine.version = strings.Repeat("0.10.", 100)
	sched := newFakeScheduler(t)
	engine.start(t)
	opts := testOptions(engine, sched)
	opts.ModelsRefresh = 50 * time.Millisecond
	core, logs := observer.New(zapcore.InfoLevel)
	startAgent(t, opts, zap.New(core))

	reg := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
	got := reg.GetLoraAdapters()
	if !slices.Equal(reg.GetModels(), []string{"m"}) || len(got) != reglimits.MaxNames-1 || got[0] != "lora-0000" ||
		got[len(got)-1] != fmt.Sprintf("lora-%04d", reglimits.MaxNames-2) {
		t.Fatalf("registered models %q and %d adapters (%q ... %q); want [m] and lora-0000 ... lora-%04d",
			reg.GetModels(), len(got), got[0], got[len(got)-1], reglimits.MaxNames-2)
	}
	if n := len(reg.GetEngineVersion()); n > reglimits.MaxLabelBytes || !strings.HasPrefix(reg.GetEngineVersion(), "0.10.") {
		t.Fatalf("engine_version %d bytes, want its start within %d", n, reglimits.MaxLabelBytes)
	}
	if _, err := registry.New(registry.Options{AllowLoopback: true}).Register(reg, nil); err != nil {
		t.Fatalf("the scheduler's registry refuses what the agent registered: %v", err)
	}
	// Five refreshes or so, each finding the same list.
	until := time.After(time.Second)
	for done := false; !done; {
		select {
		case m := <-sched.msgs:
			if m.GetRegister() != nil {
				t.Fatal("re-registered though the engine's list did not change")
			}
		case <-until:
			done = true
		}
	}
	if n := logs.FilterMessageSnippet("more models and LoRA adapters than one registration").Len(); n != 1 {
		t.Fatalf("%d WARN lines for the cut, want 1", n)
	}
}
