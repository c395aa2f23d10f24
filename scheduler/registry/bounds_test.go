package registry

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/promtest"
	"github.com/llmrouter/llmrouter/internal/reglimits"
)

// names returns n distinct names of size bytes each (size >= 8).
func names(prefix string, n, size int) []string {
	out := make([]string, n)
	for i := range out {
		s := fmt.Sprintf("%s%07d", prefix, i)
		out[i] = s + strings.Repeat("x", size-len(s))
	}
	return out
}

// TestRegistrationBounds: a registration naming more models and adapters
// than reglimits allows, in names or bytes, a name too long, or an engine,
// engine_version or agent_version too long, is refused as invalid, the
// message naming the field, what was sent and what is accepted; one at
// every limit is admitted whole. A refused re-registration leaves the
// registration it would have replaced as it was.
func TestRegistrationBounds(t *testing.T) {
	base := func(models, adapters []string) *llmrouterv1.Register {
		return &llmrouterv1.Register{Address: "10.0.0.1:80", Engine: "vllm", Models: models, LoraAdapters: adapters}
	}
	long := strings.Repeat("v", reglimits.MaxLabelBytes+1)
	for _, c := range []struct {
		name string
		reg  *llmrouterv1.Register
		want []string // substrings of the error; none: admitted
	}{
		{"names at the limit", base([]string{"m"}, names("a", reglimits.MaxNames-1, 8)), nil},
		{"bytes at the limit, names at their length limit",
			base(names("m", 1, reglimits.MaxNameBytes), names("a", reglimits.MaxNamesBytes/reglimits.MaxNameBytes-1, reglimits.MaxNameBytes)), nil},
		{"one name too many", base([]string{"m"}, names("a", reglimits.MaxNames, 8)),
			[]string{"1025 names (1 models, 1024 lora_adapters)", "at most 1024 per registration"}},
		{"one byte too many", base([]string{"m"}, names("a", reglimits.MaxNamesBytes/reglimits.MaxNameBytes, reglimits.MaxNameBytes)),
			[]string{"262145 bytes of names", "at most 262144 bytes"}},
		{"a model name too long", base([]string{"m", strings.Repeat("n", reglimits.MaxNameBytes+1)}, nil),
			[]string{"models[1] is 1025 bytes long", "names of at most 1024 bytes"}},
		{"an adapter name too long", base([]string{"m"}, []string{"a", "b", strings.Repeat("n", 5000)}),
			[]string{"lora_adapters[2] is 5000 bytes long", "at most 1024 bytes"}},
		{"engine too long", &llmrouterv1.Register{Address: "10.0.0.1:80", Engine: long, Models: []string{"m"}},
			[]string{"engine is 257 bytes long", "at most 256 bytes"}},
		{"engine_version too long", &llmrouterv1.Register{Address: "10.0.0.1:80", EngineVersion: long, Models: []string{"m"}},
			[]string{"engine_version is 257 bytes long"}},
		{"agent_version too long", &llmrouterv1.Register{Address: "10.0.0.1:80", AgentVersion: long, Models: []string{"m"}},
			[]string{"agent_version is 257 bytes long"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := New(Options{})
			_, err := r.Register(c.reg, nil)
			if c.want == nil {
				if err != nil {
					t.Fatalf("at the limit: %v", err)
				}
				in, _ := r.Get("10.0.0.1:80")
				if len(in.Models)+len(in.Adapters) != len(c.reg.Models)+len(c.reg.LoraAdapters) {
					t.Fatalf("admitted %d models and %d adapters of %d and %d", len(in.Models), len(in.Adapters), len(c.reg.Models), len(c.reg.LoraAdapters))
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range append(c.want, "10.0.0.1:80") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if len(err.Error()) > 512 {
				t.Errorf("error is %d bytes long: it must not quote the input", len(err.Error()))
			}
			if r.Len() != 0 {
				t.Fatal("a refused registration was admitted")
			}
		})
	}

	t.Run("refused re-registration keeps the registration", func(t *testing.T) {
		r := New(Options{})
		lease, err := r.Register(base([]string{"m"}, []string{"sql"}), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Register(base([]string{"m"}, names("a", 5000, 8)), lease); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
		in, _ := r.Get("10.0.0.1:80")
		select {
		case <-lease.Done():
			t.Fatal("the refused re-registration ended the lease")
		default:
		}
		if len(in.Adapters) != 1 || in.Adapters[0] != "sql" {
			t.Fatalf("adapters = %v, want [sql]", in.Adapters)
		}
	})
}

// TestReportBounds: a report is never refused for naming too much (the
// engine stays routable); each list keeps its leading names within the
// bounds, skipping names too long to keep whole, and the reason is cut.
// Every cut report counts per field; a WARN says so once when the cut
// begins, an INFO when reports fit again. The instance serves r3…r1022,
// w1, w2 and sql (1,023 adapters beside its model, the most a registration
// may name): of the running names a cut keeps, r0…r2 and r1023 are not
// served and dropped (TestReportAdaptersServed).
func TestReportBounds(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	pr := prometheus.NewRegistry()
	r := New(Options{Log: zap.New(core), Metrics: pr})
	served := append(names("r", reglimits.MaxNames-1, 8), "w1", "w2", "sql")[3:]
	lease, err := r.Register(&llmrouterv1.Register{Address: "10.0.0.1:80", Models: []string{"m"}, LoraAdapters: served,
		Initial: &llmrouterv1.Report{Healthy: true, LoraAdapters: names("r", 2000, 8), LoraStateKnown: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := r.Get(lease.ID)
	if len(in.LoRAs) != reglimits.MaxNames-4 || in.LoRAs[0] != names("r", 4, 8)[3] {
		t.Fatalf("initial report: %d adapters kept, want the served ones of the first %d", len(in.LoRAs), reglimits.MaxNames)
	}
	big := &llmrouterv1.Report{
		Healthy: true, Running: 7, LoraStateKnown: true,
		LoraAdapters:        names("r", 3000, 8),
		WaitingLoraAdapters: []string{"w1", strings.Repeat("n", reglimits.MaxNameBytes+1), "w2"},
		UnhealthyReason:     strings.Repeat("é", 3000),
	}
	for range 3 {
		in, err = r.Report(lease.ID, lease.Gen, big)
		if err != nil {
			t.Fatalf("a report past the bounds was refused: %v", err)
		}
	}
	if !in.Healthy || in.Running != 7 {
		t.Fatalf("the rest of the report was not applied: %+v", in)
	}
	if len(in.LoRAs) != reglimits.MaxNames-4 || in.LoRAs[len(in.LoRAs)-1] != names("r", reglimits.MaxNames-1, 8)[reglimits.MaxNames-2] {
		t.Fatalf("%d running adapters kept, want the served ones of the first %d", len(in.LoRAs), reglimits.MaxNames)
	}
	if strings.Join(in.WaitingLoRAs, ",") != "w1,w2" {
		t.Fatalf("waiting = %v, want [w1 w2]: the name too long skipped, never shortened", in.WaitingLoRAs)
	}
	if len(in.UnhealthyReason) > reglimits.MaxReasonBytes+len("…") || !strings.HasPrefix(in.UnhealthyReason, "éé") ||
		!strings.HasSuffix(in.UnhealthyReason, "…") {
		t.Fatalf("reason is %d bytes, want at most %d and cut at a rune", len(in.UnhealthyReason), reglimits.MaxReasonBytes)
	}
	for field, want := range map[string]float64{"lora_adapters": 4, "waiting_lora_adapters": 3, "unhealthy_reason": 3} {
		if v := promtest.Value(t, pr, "llmrouter_scheduler_report_truncated_total", "field", field); v != want {
			t.Errorf("truncated{field=%q} = %g, want %g", field, v, want)
		}
	}
	if n := logs.FilterMessageSnippet("names more than the scheduler keeps").Len(); n != 2 {
		// Once at registration (lora_adapters), once when the cut fields
		// changed; not once per report.
		t.Fatalf("%d WARN lines for cut reports, want 2", n)
	}
	if _, err := r.Report(lease.ID, lease.Gen, &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"sql"}}); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("within the scheduler's bounds again").Len(); n != 1 {
		t.Fatalf("%d INFO lines for reports fitting again, want 1", n)
	}
	if v := promtest.Value(t, pr, "llmrouter_scheduler_report_truncated_total", "field", "lora_adapters"); v != 4 {
		t.Fatalf("a report within bounds counted as cut: %g", v)
	}
}

// TestReportAdaptersServed: the adapters a report names running or waiting
// that the registration does not list as served are dropped, so routing
// and the policies see only adapters the registration vouched for (vLLM's
// newest series naming an adapter may still name one unloaded at runtime; an
// agent may name anything); the rest of the report applies. Every such
// report counts per field; a WARN names the instance and the first such
// adapter once per registration, not per report.
func TestReportAdaptersServed(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	pr := prometheus.NewRegistry()
	r := New(Options{Log: zap.New(core), Metrics: pr})
	register := func(served []string, holder *Lease, ini *llmrouterv1.Report) *Lease {
		t.Helper()
		l, err := r.Register(&llmrouterv1.Register{Address: "10.0.0.1:80", Models: []string{"m"}, LoraAdapters: served, Initial: ini}, holder)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	lease := register([]string{"sql", "chat"}, nil, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2,
		LoraAdapters: []string{"ghost", "sql"}, WaitingLoraAdapters: []string{"chat", "ghost2"}})
	check := func(when string, i Instance, loras, waiting []string, running, waitingCount float64) {
		t.Helper()
		if strings.Join(i.LoRAs, ",") != strings.Join(loras, ",") || strings.Join(i.WaitingLoRAs, ",") != strings.Join(waiting, ",") {
			t.Errorf("%s: loras %q, waiting %q; want %q, %q", when, i.LoRAs, i.WaitingLoRAs, loras, waiting)
		}
		if i.MaxLoRA != 2 {
			t.Errorf("%s: max_lora %d: the rest of the report was not applied", when, i.MaxLoRA)
		}
		for field, want := range map[string]float64{"lora_adapters": running, "waiting_lora_adapters": waitingCount} {
			if v := promtest.Value(t, pr, "llmrouter_scheduler_report_unserved_adapters_total", "field", field); v != want {
				t.Errorf("%s: unserved_adapters{field=%q} = %g, want %g", when, field, v, want)
			}
		}
	}
	in, _ := r.Get(lease.ID)
	check("registered", in, []string{"sql"}, []string{"chat"}, 1, 1)
	warns := logs.FilterMessageSnippet("did not register as served")
	if warns.Len() != 1 || warns.All()[0].ContextMap()["first"] != "ghost" || warns.All()[0].ContextMap()["instance"] != "10.0.0.1:80" {
		t.Fatalf("WARN lines %v, want one naming the instance and ghost", warns.All())
	}
	for range 3 {
		var err error
		if in, err = r.Report(lease.ID, lease.Gen, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2,
			LoraAdapters: []string{"chat", "ghost"}}); err != nil {
			t.Fatal(err)
		}
	}
	check("three reports running ghost", in, []string{"chat"}, nil, 4, 1)
	in, _ = r.Report(lease.ID, lease.Gen, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2, LoraAdapters: []string{"sql", "chat"}})
	check("a report naming served adapters alone", in, []string{"sql", "chat"}, nil, 4, 1)
	// An engine that does not say what it runs names what it serves; names
	// it does not serve leave the list as it was.
	in, _ = r.Report(lease.ID, lease.Gen, &llmrouterv1.Report{Healthy: true, MaxLora: 2, LoraAdapters: []string{"ghost"}})
	check("state unknown, ghost alone", in, []string{"sql", "chat"}, nil, 5, 1)
	if n := logs.FilterMessageSnippet("did not register as served").Len(); n != 1 {
		t.Fatalf("%d WARN lines for one registration, want 1", n)
	}

	// ghost loaded at runtime: the agent re-registers serving it, and it is
	// kept; a new registration logs its own first unserved name.
	lease = register([]string{"sql", "chat", "ghost"}, lease, nil)
	in, _ = r.Report(lease.ID, lease.Gen, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2,
		LoraAdapters: []string{"ghost"}, WaitingLoraAdapters: []string{"other"}})
	check("re-registered serving ghost", in, []string{"ghost"}, nil, 5, 2)
	if warns := logs.FilterMessageSnippet("did not register as served"); warns.Len() != 2 || warns.All()[1].ContextMap()["first"] != "other" {
		t.Fatalf("WARN lines %v, want a second one naming other", warns.All())
	}
}
