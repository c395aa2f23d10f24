package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/agent"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/enginesim"
)

// loraFleet is a verifying control plane (least-request, the gateway in
// process) for simulated engines that register behind real agents.
type loraFleet struct {
	t      *testing.T
	ctx    context.Context
	cancel context.CancelFunc
	a      serverAddrs
	done   <-chan error
	dial   []grpc.DialOption
	agents sync.WaitGroup
}

func newLoRAFleet(t *testing.T) *loraFleet {
	t.Helper()
	cfg := inProcessConfig()
	cfg.Scheduler.VerifyEngines = true
	cfg.Scheduler.Policy = "least-request"
	l := &loraFleet{t: t}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	t.Cleanup(l.cancel)
	l.a, l.done = startControlPlane(t, l.ctx, cfg, true)
	var err error
	if l.dial, err = grpcx.DialOptions(cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

// start starts a simulated engine presenting api (vllm or sglang) that
// serves the base model and loras (and loads more at runtime, vLLM's way),
// behind a real agent registering with the fleet's scheduler.
func (l *loraFleet) start(api string, loras ...string) string {
	t := l.t
	t.Helper()
	ec := engine.DefaultConfig()
	ec.StepBase = 2 * time.Millisecond
	s, err := enginesim.New(enginesim.Options{Engine: ec, DefaultMaxTokens: 4, Seed: 1, ShutdownGrace: -1, ServedLoRAs: loras, RuntimeLoRA: true, API: api})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := servetest.Loopback(t, s)
	ag, err := agent.New(agent.Options{EngineURL: "http://" + addr, Advertise: addr, SchedulerAddress: l.a.API, DialOptions: l.dial,
		ReportInterval: 100 * time.Millisecond, ModelsRefresh: 100 * time.Millisecond, AgentVersion: "test"}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l.agents.Add(1)
	go func() { defer l.agents.Done(); _ = ag.Run(l.ctx) }()
	return addr
}

// stop stops the agents, then the control plane.
func (l *loraFleet) stop() {
	l.cancel()
	l.agents.Wait()
	stopped(l.t, "control plane", l.done, 10*time.Second)
}

// TestLoRAAdaptersEndToEnd: two simulated vLLM engines, one serving the
// adapter sql (--lora-modules), each behind a real agent; the scheduler
// (verifying engine addresses) and the gateway in process; requests sent
// to the gateway's ext_proc as Envoy sends them. A request naming sql goes
// to the engine serving it; an adapter loaded at runtime on the other
// engine (/v1/load_lora_adapter) becomes routable there, and one unloaded
// is answered 404 again, each within the agents' models refresh; GET
// /v1/models, answered by the gateway, follows what the fleet serves.
func TestLoRAAdaptersEndToEnd(t *testing.T) {
	fl := newLoRAFleet(t)
	ctx, a := fl.ctx, fl.a
	startEngine := func(loras ...string) string {
		t.Helper()
		return fl.start(enginesim.APIVLLM, loras...)
	}
	withSQL, plain := startEngine("sql"), startEngine()

	f := extProcFilter(t, a.ExtProc)
	ask := func(model string) *envoytest.Result {
		t.Helper()
		r := f.Do(ctx, envoytest.Request{
			Headers: []envoytest.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"}},
			Body:    []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"how many rows are there?"}]}`),
		})
		if r.Err != nil {
			t.Fatalf("model %s: %v", model, r.Err)
		}
		return r
	}
	// listed is GET /v1/models as the gateway answers it: "id<parent"
	// (parent only for adapters), space-separated.
	listed := func() string {
		t.Helper()
		r := f.Do(ctx, envoytest.Request{Headers: []envoytest.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/v1/models"}}})
		if r.Err != nil || r.Immediate == nil || r.Immediate.Status != 200 {
			t.Fatalf("GET /v1/models: err %v, immediate %v: want the gateway's answer", r.Err, r.Immediate)
		}
		var l struct {
			Object string `json:"object"`
			Data   []struct {
				ID     string `json:"id"`
				Object string `json:"object"`
				Parent string `json:"parent"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.Immediate.Body, &l); err != nil || l.Object != "list" {
			t.Fatalf("GET /v1/models body %q: %v", r.Immediate.Body, err)
		}
		var ids []string
		for _, d := range l.Data {
			id := d.ID
			if d.Parent != "" {
				id += "<" + d.Parent
			}
			ids = append(ids, id)
		}
		return strings.Join(ids, " ")
	}
	notServed := func(model string) bool {
		imm := ask(model).Immediate
		return imm != nil && imm.Status == 404 && strings.Contains(string(imm.Body), "model_not_found")
	}
	waitFor(t, "both engines verified and routable", func() bool { return strings.Contains(dest(ask(enginesim.DefaultModel)), ",") })
	for range 3 {
		if got := dest(ask("sql")); got != withSQL {
			t.Fatalf("destination for sql = %q, want %s alone, the engine serving it", got, withSQL)
		}
	}
	if !notServed("chat") {
		t.Fatal("chat answered before any engine serves it, want 404 model_not_found")
	}
	// GET /v1/models lists the fleet's models, not one engine's: the base
	// model both serve and the adapter only one does, with its parent.
	if got := listed(); got != enginesim.DefaultModel+" sql<"+enginesim.DefaultModel {
		t.Fatalf("GET /v1/models lists %q, want the base model and sql (parent the base model)", got)
	}

	load := func(addr, path, body string) {
		t.Helper()
		resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s on %s: %d %s", path, addr, resp.StatusCode, b)
		}
	}
	load(plain, "/v1/load_lora_adapter", `{"lora_name":"chat","lora_path":"/adapters/chat"}`)
	waitFor(t, "chat routed to the engine that loaded it", func() bool { return dest(ask("chat")) == plain })
	waitFor(t, "GET /v1/models to list chat", func() bool {
		return listed() == "chat<"+enginesim.DefaultModel+" "+enginesim.DefaultModel+" sql<"+enginesim.DefaultModel
	})
	load(withSQL, "/v1/unload_lora_adapter", `{"lora_name":"sql"}`)
	waitFor(t, "sql answered 404 once unloaded", func() bool { return notServed("sql") })
	waitFor(t, "GET /v1/models to no longer list sql", func() bool {
		return listed() == "chat<"+enginesim.DefaultModel+" "+enginesim.DefaultModel
	})
	if got := dest(ask(enginesim.DefaultModel)); !strings.Contains(got, withSQL) || !strings.Contains(got, plain) {
		t.Fatalf("base model's destinations after the adapter changes = %q, want both engines (still verified, not drained)", got)
	}

	fl.stop()
}

// TestSGLangAdapterSyntaxEndToEnd: SGLang's ways of asking for a LoRA
// adapter through the gateway, over real agents and a verifying scheduler:
// an SGLang engine serving sql, a vLLM engine serving sql and an SGLang
// engine serving the base model alone. "model": "<base>:sql" goes to the
// SGLang engine serving sql and nowhere else: that engine answers the
// unchanged body 200, where the vLLM engine answers it 404 and the other
// SGLang engine 400. "model": "<base>" with "lora_path": "sql" goes there
// too; with a lora_path nobody serves, to the base model's engines as
// before; "<base>:poetry" is 404 listing the served models.
func TestSGLangAdapterSyntaxEndToEnd(t *testing.T) {
	fl := newLoRAFleet(t)
	ctx, a := fl.ctx, fl.a
	sglSQL := fl.start(enginesim.APISGLang, "sql")
	vllmSQL := fl.start(enginesim.APIVLLM, "sql")
	sglPlain := fl.start(enginesim.APISGLang)

	f := extProcFilter(t, a.ExtProc)
	const msgs = `"messages":[{"role":"user","content":"how many rows are there?"}]`
	ask := func(fields string) *envoytest.Result {
		t.Helper()
		r := f.Do(ctx, envoytest.Request{
			Headers: []envoytest.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"}},
			Body:    []byte(`{` + fields + `,` + msgs + `}`),
		})
		if r.Err != nil {
			t.Fatalf("{%s}: %v", fields, r.Err)
		}
		return r
	}
	// send is the engine at addr answering the body the gateway let
	// through unchanged.
	send := func(addr, fields string) int {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(`{`+fields+`,"max_tokens":2,`+msgs+`}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	base := enginesim.DefaultModel
	waitFor(t, "all three engines verified and routable", func() bool {
		d := dest(ask(`"model":"` + base + `"`))
		return strings.Contains(d, sglSQL) && strings.Contains(d, vllmSQL) && strings.Contains(d, sglPlain)
	})
	inModel := `"model":"` + base + `:sql"`
	for range 3 {
		if got := dest(ask(inModel)); got != sglSQL {
			t.Fatalf("destination for {%s} = %q, want %s alone, the SGLang engine serving sql", inModel, got, sglSQL)
		}
	}
	for addr, want := range map[string]int{sglSQL: 200, vllmSQL: 404, sglPlain: 400} {
		if got := send(addr, inModel); got != want {
			t.Fatalf("{%s} sent to %s answered %d, want %d", inModel, addr, got, want)
		}
	}
	withPath := `"model":"` + base + `","lora_path":"sql"`
	if got := dest(ask(withPath)); got != sglSQL {
		t.Fatalf("destination for {%s} = %q, want %s alone", withPath, got, sglSQL)
	}
	if got := send(sglSQL, withPath); got != 200 {
		t.Fatalf("{%s} sent to %s answered %d, want 200", withPath, sglSQL, got)
	}
	if got := dest(ask(`"model":"` + base + `","lora_path":"poetry"`)); strings.Count(got, ",") != 2 {
		t.Fatalf("destination for lora_path poetry, served nowhere = %q, want the base model's three engines, as before lora_path was read", got)
	}
	imm := ask(`"model":"` + base + `:poetry"`).Immediate
	if imm == nil || imm.Status != 404 || !strings.Contains(string(imm.Body), "model_not_found") || !strings.Contains(string(imm.Body), "served models: "+base+", sql") {
		t.Fatalf("answer for %s:poetry: %+v, want 404 model_not_found listing %s, sql", base, imm, base)
	}

	fl.stop()
}
