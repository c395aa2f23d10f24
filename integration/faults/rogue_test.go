//go:build faults

package faults

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// TestRogueAgents: agents that probe a real engine but advertise another
// address — a listener of the test's own that is no engine, a link-local
// metadata address, a closed loopback port, and a live engine's address held
// by its own agent (ID takeover). No request reaches the listener, none of
// those addresses becomes an endpoint of the data plane, the takeover is
// refused with a WARN naming the address, and the fleet keeps serving.
func TestRogueAgents(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{})
	trap := newTrap(t)
	closed := harness.FreeAddr(t)
	victim := s.Engines[1]
	rogue := map[string]string{ // name: advertised address
		"rogue-listener": trap.addr,
		"rogue-metadata": "169.254.169.254:80",
		"rogue-closed":   closed,
		"rogue-takeover": victim.Addr,
	}
	for name, adv := range rogue {
		s.StartAgent(t, name, s.Engines[0].Addr, adv)
	}
	l := s.openLoop(steadyRate, 8*time.Second, chatReq{}, nil)
	// Watch the data plane's endpoints while the rogues try.
	leaked := map[string]bool{}
	for time.Since(l.began) < 8*time.Second {
		if have, err := s.Endpoints(); err == nil {
			for _, adv := range rogue {
				if adv != victim.Addr && have[adv] {
					leaked[adv] = true
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	judge(t, row, l.wait(), l.began, false)

	if len(leaked) > 0 {
		t.Errorf("rogue addresses became endpoints of the data plane: %v", leaked)
	}
	if n, reqs := trap.served(); n > 0 {
		t.Errorf("%d requests reached the non-engine listener %s: %v", n, trap.addr, reqs)
	} else {
		t.Logf("the non-engine listener got %d connections and no engine request (probes: %v)", trap.conns(), reqs)
	}
	list, err := s.Instances()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		for name, adv := range rogue {
			if adv != victim.Addr && (in.Address == adv || in.ID == adv) && in.State != "verifying" {
				t.Errorf("%s's advertised %s is an instance past verification: %+v", name, adv, in)
			}
		}
	}
	// The takeover: refused with a WARN naming the address, and the real
	// registration never replaced.
	warned := s.Scheduler.Logs("", func(l harness.Line) bool {
		return l.Str("level") == "warn" && strings.Contains(l.Raw, victim.Addr)
	})
	if len(warned) == 0 {
		t.Errorf("no WARN in the scheduler's log naming %s, the address the takeover agent claimed", victim.Addr)
	} else {
		t.Logf("scheduler: %s", warned[0].Raw)
	}
	if replaced := len(s.Scheduler.Logs("instance re-registered", func(l harness.Line) bool { return l.Str("instance") == victim.Addr })); replaced > 0 {
		t.Errorf("the registration of %s was replaced %d times while the takeover agent ran", victim.Addr, replaced)
	}
	s.WaitFleet(t, settle)
	s.logSignals(t)
	s.alive(t)
}

// trap is a plain HTTP listener that is no engine: it records every request.
type trap struct {
	addr string
	mu   sync.Mutex
	reqs []string
	n    int // connections
}

func newTrap(t *testing.T) *trap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &trap{addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tr.mu.Lock()
			tr.reqs = append(tr.reqs, r.Method+" "+r.URL.Path)
			tr.mu.Unlock()
			http.Error(w, "not an engine", http.StatusNotFound)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				tr.mu.Lock()
				tr.n++
				tr.mu.Unlock()
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return tr
}

// served counts the requests that carried traffic meant for an engine (any
// but the GETs a verifying probe sends) and lists every request.
func (tr *trap) served() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, r := range tr.reqs {
		if !strings.HasPrefix(r, "GET ") || strings.Contains(r, "completions") {
			n++
		}
	}
	return n, append([]string(nil), tr.reqs...)
}

func (tr *trap) conns() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.n
}
