package registry

import (
	"slices"
	"testing"

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
		if _, err := r.Register(reg("10.0.0.1:"+string(rune('1'+i%9))+"0", 0)); err != nil {
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
	if _, err := r.Register(reg("10.0.0.2:80", 0)); err != nil {
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
		if _, err := r.Register(reg(a, llmrouterv1.Role_ROLE_DECODE)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Report("10.0.0.2:80", 0, &llmrouterv1.Report{Healthy: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDraining("10.0.0.3:80", true, "test"); err != nil {
		t.Fatal(err)
	}
	rt := r.Routable()
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

func TestIPv4MappedAddressNormalised(t *testing.T) {
	r := New(Options{})
	l, err := r.Register(reg("[::ffff:10.0.0.1]:80", 0))
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
	if _, err := r.Register(reg(a, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDraining(a, true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(reg(a, 0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get(a); !got.Draining || len(r.Routable()) != 0 {
		t.Fatalf("after re-registration: draining %v, routable %d; the drain must carry over", got.Draining, len(r.Routable()))
	}
	r.Remove(a, 0, "gone")
	if _, err := r.Register(reg(a, 0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get(a); got.Draining || len(r.Routable()) != 1 {
		t.Fatalf("a fresh registration after removal: draining %v, routable %d", got.Draining, len(r.Routable()))
	}
}
