package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
	"github.com/llmrouter/llmrouter/integration/stack"
)

// GET /v1/models through the data plane, on a fleet of two engines serving
// different models: every answer lists both (the gateway answers with the
// scheduler's list), where Envoy's round robin alone would answer with one
// engine's. GET /v1/models/{id} (OpenAI's models.retrieve) answers either
// model every time, whichever engine serves it, and 404 in OpenAI's shape
// for a model nobody serves. With the scheduler killed the requests still
// reach an engine: the gateway lets them through, one engine answers the
// list with its own model, and the retrieval with its own answer (the
// simulator serves no /v1/models/{id}: its own 404).
func TestModelsListsTheFleet(t *testing.T) {
	models := []string{"e2e-alpha", "e2e-beta"}
	s := stack.Start(t, stack.Options{
		Split: true, Policy: "least-request", Standin: binaries(t), Envoy: envoyBinary(),
		StartTimeout: startTimeout, Settle: settle, Client: &http.Client{Timeout: 10 * time.Second},
		StartEngines: func(t *testing.T, st *stack.Stack) {
			for i, m := range models {
				p := harness.Start(t, harness.Spec{Name: fmt.Sprintf("enginesim-%d", i+1),
					Args: []string{"enginesim", "--listen", "127.0.0.1:0", "--model", m, "--seed", fmt.Sprint(i + 1)}})
				addr := p.WaitLog(t, startTimeout, "enginesim serving", nil).Str("addr")
				st.Engines = append(st.Engines, &stack.Engine{Proc: p, Addr: addr, Seed: i + 1,
					Agent: st.StartAgent(t, fmt.Sprintf("agent-%d", i+1), addr, addr)})
			}
		},
	})
	get := func(path string) (int, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Listen+path, nil)
		resp, err := s.Client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, b, err
	}
	list := func() ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Listen+"/v1/models", nil)
		resp, err := s.Client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET /v1/models: %d %s", resp.StatusCode, b)
		}
		var l struct {
			Object string `json:"object"`
			Data   []struct {
				ID     string `json:"id"`
				Object string `json:"object"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.Object != "list" {
			return nil, fmt.Errorf("GET /v1/models body %q: %v", b, err)
		}
		var ids []string
		for _, d := range l.Data {
			ids = append(ids, d.ID)
		}
		return ids, nil
	}
	harness.Eventually(t, settle, "GET /v1/models to list both engines' models", func() error {
		ids, err := list()
		if err == nil && !slices.Equal(ids, models) {
			err = fmt.Errorf("listed %v, want %v", ids, models)
		}
		return err
	})
	// Every answer, not one in two.
	for i := range 4 {
		if ids, err := list(); err != nil || !slices.Equal(ids, models) {
			t.Fatalf("request %d: listed %v (%v), want %v", i, ids, err, models)
		}
	}
	for i := range 4 {
		for _, m := range models {
			code, b, err := get("/v1/models/" + m)
			var o struct {
				ID     string `json:"id"`
				Object string `json:"object"`
			}
			if err == nil {
				err = json.Unmarshal(b, &o)
			}
			if err != nil || code != 200 || o.ID != m || o.Object != "model" {
				t.Fatalf("request %d: GET /v1/models/%s: %d %s (%v)", i, m, code, b, err)
			}
		}
	}
	if code, b, err := get("/v1/models/e2e-gamma"); err != nil || code != 404 || !strings.Contains(string(b), `"code":"model_not_found"`) {
		t.Fatalf("GET /v1/models/e2e-gamma: %d %s (%v), want the gateway's 404", code, b, err)
	}
	if v := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_requests_total", "api", "models", "outcome", "answered"); v < 13 {
		t.Fatalf("the gateway counts %g answered GET /v1/models and /v1/models/{id}, want at least 13", v)
	}

	s.Scheduler.Kill(t)
	s.WaitGauge(t, settle, s.GatewayHTTP, "llmrouter_gateway_degraded", 1)
	harness.Eventually(t, settle, "GET /v1/models answered by an engine", func() error {
		ids, err := list()
		if err == nil && (len(ids) != 1 || !slices.Contains(models, ids[0])) {
			err = fmt.Errorf("listed %v, want one engine's model", ids)
		}
		return err
	})
	if code, b, err := get("/v1/models/" + models[0]); err != nil || code != 404 || !strings.Contains(string(b), "no route GET /v1/models/"+models[0]) {
		t.Fatalf("GET /v1/models/%s without a scheduler: %d %q (%v), want the engine's own answer", models[0], code, b, err)
	}
}
