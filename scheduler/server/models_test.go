package server

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// ListModels over the gRPC API, with the token: the union of what the
// routable instances serve (base models and adapters, each name once,
// sorted, adapters with their parent when it is unambiguous); nothing an
// instance serves that is verifying, draining, unhealthy or silent.
func TestListModelsListsWhatRoutableInstancesServe(t *testing.T) {
	const unverifiable = "10.0.0.4:8000"
	verify := func(_ context.Context, in registry.Instance) error {
		if in.Address == unverifiable {
			return errors.New("does not answer as vllm")
		}
		return nil
	}
	e := startWith(t, func(c *config.Config) { c.Token = "s3cret" }, scheduler.Deps{Verify: verify}, nil)
	sch, clk := e.sch, e.clock

	leases := map[string]*registry.Lease{}
	reg := func(addr string, models, adapters []string) {
		t.Helper()
		l, err := sch.Register(&llmrouterv1.Register{Address: addr, Engine: "vllm", Models: models, LoraAdapters: adapters,
			ReportInterval: durationpb.New(200 * time.Millisecond), Initial: &llmrouterv1.Report{Healthy: true}})
		if err != nil {
			t.Fatal(err)
		}
		leases[addr] = l
	}
	// Registered out of order: the answer is sorted all the same.
	reg("10.0.0.3:8000", []string{"qwen", "qwen-alias"}, []string{"sql-lora", "qwen"})
	reg("10.0.0.1:8000", []string{"llama"}, []string{"sql-lora", "chat-lora"})
	reg("10.0.0.2:8000", []string{"llama"}, []string{"chat-lora"})
	reg(unverifiable, []string{"only-verifying"}, nil)
	reg("10.0.0.5:8000", []string{"only-draining", "llama"}, nil)
	reg("10.0.0.6:8000", []string{"only-unhealthy"}, []string{"unhealthy-lora"})
	reg("10.0.0.7:8000", []string{"only-silent"}, nil)
	eventually(t, "verification of the other instances", func() bool {
		for a := range leases {
			if in, _ := sch.Registry().Get(a); a != unverifiable && !in.Verified {
				return false
			}
		}
		return true
	})
	if err := sch.Drain("10.0.0.5:8000", "test"); err != nil {
		t.Fatal(err)
	}
	if err := sch.InstanceReport("10.0.0.6:8000", leases["10.0.0.6:8000"].Gen, &llmrouterv1.Report{Healthy: false, UnhealthyReason: "health 503"}); err != nil {
		t.Fatal(err)
	}
	sch.Orphan("10.0.0.7:8000", leases["10.0.0.7:8000"].Gen, "agent gone")
	for a, want := range map[string]string{unverifiable: registry.StateVerifying, "10.0.0.5:8000": registry.StateDraining,
		"10.0.0.6:8000": registry.StateUnhealthy, "10.0.0.7:8000": registry.StateSilent, "10.0.0.1:8000": registry.StateHealthy} {
		if in, ok := sch.Registry().Get(a); !ok || in.State() != want {
			t.Fatalf("%s: registered %v, state %q, want %q", a, ok, in.State(), want)
		}
	}

	client := llmrouterv1.NewPickerServiceClient(e.dial(t, "s3cret"))
	resp, err := client.ListModels(ctx(t), &llmrouterv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	created := clk.Now().Unix()
	want := []*llmrouterv1.ServedModel{
		{Name: "chat-lora", LoraAdapter: true, Parent: "llama", Instances: 2},
		{Name: "llama", Instances: 2},
		{Name: "qwen", Instances: 1},
		{Name: "qwen-alias", Instances: 1},
		// Its instances serve two base models: no parent is named.
		{Name: "sql-lora", LoraAdapter: true, Instances: 2},
	}
	if resp.Truncated || len(resp.Models) != len(want) {
		t.Fatalf("ListModels = %v, want %v", resp, want)
	}
	for i, w := range want {
		g := resp.Models[i]
		if g.Name != w.Name || g.LoraAdapter != w.LoraAdapter || g.Parent != w.Parent || g.Instances != w.Instances || g.CreatedUnix != created {
			t.Fatalf("model %d = %v, want %v (created %d)", i, g, w, created)
		}
	}

	// The drained instance back in service brings its model back.
	if err := sch.Resume("10.0.0.5:8000", "test"); err != nil {
		t.Fatal(err)
	}
	resp, err = client.ListModels(ctx(t), &llmrouterv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp); !slices.Equal(got, []string{"chat-lora", "llama", "only-draining", "qwen", "qwen-alias", "sql-lora"}) {
		t.Fatalf("after resume: %v", got)
	}

	for _, token := range []string{"", "wrong"} {
		_, err := llmrouterv1.NewPickerServiceClient(e.dial(t, token)).ListModels(ctx(t), &llmrouterv1.ListModelsRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: ListModels err = %v, want Unauthenticated", token, err)
		}
	}
}

func names(r *llmrouterv1.ListModelsResponse) []string {
	var out []string
	for _, m := range r.GetModels() {
		out = append(out, m.GetName())
	}
	return out
}
