package scheduler

import (
	"context"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// A pd-split pick names the prefill instance and the bootstrap port its
// agent registered, so an SGLang decode can reach the prefill's bootstrap
// server (header x-prefiller-bootstrap-port).
func TestPickCarriesPrefillBootstrapPort(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Policy = "pd-split" })
	pre := regMsg("10.0.0.1:8000")
	pre.Role, pre.BootstrapPort = llmrouterv1.Role_ROLE_PREFILL, 8998
	if _, err := s.Register(pre); err != nil {
		t.Fatal(err)
	}
	dec := regMsg("10.0.0.2:8000")
	dec.Role = llmrouterv1.Role_ROLE_DECODE
	if _, err := s.Register(dec); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Pick(context.Background(), pickReq("r1", "m"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetEndpoints()[0] != "10.0.0.2:8000" || resp.GetPrefillEndpoint() != "10.0.0.1:8000" || resp.GetPrefillBootstrapPort() != 8998 {
		t.Fatalf("pick = %v, want decode 10.0.0.2:8000, prefill 10.0.0.1:8000 with bootstrap port 8998", resp)
	}
	bad := regMsg("10.0.0.3:8000")
	bad.BootstrapPort = 70000
	if _, err := s.Register(bad); err == nil {
		t.Fatal("bootstrap_port 70000 accepted")
	}
}
