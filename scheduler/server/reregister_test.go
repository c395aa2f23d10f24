package server

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// connectAgent opens an agent stream, registers addr and reads the ack.
func connectAgent(t *testing.T, e *env, addr string) llmrouterv1.AgentService_ConnectClient {
	t.Helper()
	st, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg(addr)); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.GetRegistered().GetInstanceId() != addr {
		t.Fatalf("ack = %v, %v", m, err)
	}
	return st
}

// recv reads the next scheduler message.
func recv(t *testing.T, st llmrouterv1.AgentService_ConnectClient) *llmrouterv1.SchedulerMessage {
	t.Helper()
	m, err := st.Recv()
	if err != nil {
		t.Fatalf("stream ended: %v", err)
	}
	return m
}

func TestReRegisterOnSameStream(t *testing.T) {
	// The agent re-sends Register on its open stream when its engine
	// restarted or recovered, or when told KIND_REREGISTER: the scheduler
	// replaces the registration, acknowledges again and keeps the stream.
	e := start(t, nil)
	const addr = "10.0.0.7:8000"
	st := connectAgent(t, e, addr)
	if err := st.Send(reportMsg(&llmrouterv1.Report{Healthy: false, UnhealthyReason: "connection refused"})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unhealthy report applied", func() bool { return routable(e) == 0 })

	re := registerMsg(addr)
	re.GetRegister().Models = []string{"m", "m2"}
	re.GetRegister().NumGpuBlocks = 4096
	re.GetRegister().EngineVersion = "0.11.0"
	re.GetRegister().Initial = &llmrouterv1.Report{Healthy: true, Running: 2}
	if err := st.Send(re); err != nil {
		t.Fatal(err)
	}
	ack := recv(t, st).GetRegistered()
	if ack.GetInstanceId() != addr || ack.GetReportInterval().AsDuration() != 200*time.Millisecond {
		t.Fatalf("second ack = %v", ack)
	}
	inst, ok := e.sch.Registry().Get(addr)
	if !ok || !inst.Healthy || inst.NumGPUBlocks != 4096 || inst.EngineVersion != "0.11.0" || len(inst.Models) != 2 || inst.Running != 2 {
		t.Fatalf("registration not updated: %+v", inst)
	}
	if routable(e) != 1 {
		t.Fatal("re-registered healthy instance not routable")
	}
	// Reports after the re-registration apply to it.
	if err := st.Send(reportMsg(&llmrouterv1.Report{Healthy: true, Running: 5})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "report after re-registration", func() bool {
		in, _ := e.sch.Registry().Get(addr)
		return in.Running == 5
	})

	// A drain survives a re-registration, and the agent hears it again.
	if err := e.sch.Drain(addr, "maintenance"); err != nil {
		t.Fatal(err)
	}
	if c := recv(t, st).GetCommand(); c.GetKind() != llmrouterv1.Command_KIND_DRAIN {
		t.Fatalf("command = %v", c)
	}
	if err := st.Send(registerMsg(addr)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, st); m.GetRegistered().GetInstanceId() != addr {
		t.Fatalf("third ack = %v", m)
	}
	if c := recv(t, st).GetCommand(); c.GetKind() != llmrouterv1.Command_KIND_DRAIN {
		t.Fatalf("after re-registration of a drained instance: %v, want DRAIN again", c)
	}
	if inst, _ := e.sch.Registry().Get(addr); !inst.Draining || routable(e) != 0 {
		t.Fatalf("drain lost by re-registration: %+v", inst)
	}

	// Closing the stream orphans the current registration: silent, kept.
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration orphaned on stream close", func() bool { return silent(e, addr) })
}

func TestReRegisterWithAnotherAddress(t *testing.T) {
	e := start(t, nil)
	st := connectAgent(t, e, "10.0.0.7:8000")
	if err := st.Send(registerMsg("10.0.0.8:8000")); err != nil {
		t.Fatal(err)
	}
	if ack := recv(t, st).GetRegistered(); ack.GetInstanceId() != "10.0.0.8:8000" {
		t.Fatalf("ack = %v", ack)
	}
	if _, ok := e.sch.Registry().Get("10.0.0.7:8000"); ok || e.sch.Registry().Len() != 1 {
		t.Fatalf("old address still registered: %v", e.sch.Registry().List())
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new address orphaned on stream close", func() bool { return silent(e, "10.0.0.8:8000") })
	if e.sch.Registry().Len() != 1 {
		t.Fatalf("registry after close: %v", e.sch.Registry().List())
	}
}

func TestReRegisterRefusedEndsStream(t *testing.T) {
	e := start(t, nil)
	st := connectAgent(t, e, "10.0.0.7:8000")
	bad := registerMsg("10.0.0.7:8000")
	bad.GetRegister().Models = nil
	if err := st.Send(bad); err != nil {
		t.Fatal(err)
	}
	_, err := st.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "no models") {
		t.Fatalf("refused re-registration: %v, want InvalidArgument naming the models", err)
	}
	eventually(t, "removal after a refused re-registration", func() bool { return e.sch.Registry().Len() == 0 })
}

func TestRefusedTokenLoggedOncePerPeer(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	e := startLogged(t, func(c *config.Config) { c.Token = "s3cret" }, zap.New(core))
	client := llmrouterv1.NewAgentServiceClient(e.dial(t, "wrong"))
	for i := 0; i < 3; i++ {
		st, err := client.Connect(ctx(t))
		if err == nil {
			_ = st.Send(registerMsg("10.0.0.1:8000"))
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("attempt %d: %v, want Unauthenticated", i, err)
		}
	}
	eventually(t, "the refusal log line", func() bool { return logs.FilterMessageSnippet("missing or invalid token").Len() > 0 })
	time.Sleep(50 * time.Millisecond)
	got := logs.FilterMessageSnippet("missing or invalid token").All()
	if len(got) != 1 {
		t.Fatalf("%d refusal lines for one peer within %s, want 1", len(got), refusalLogEvery)
	}
	f := got[0].ContextMap()
	if !strings.HasPrefix(f["peer"].(string), "127.0.0.1:") || f["method"] != "/llmrouter.v1.AgentService/Connect" ||
		strings.Contains(got[0].Message+f["error"].(string), "s3cret") {
		t.Fatalf("refusal line = %v %v", got[0].Message, f)
	}
	if e.sch.Registry().Len() != 0 {
		t.Fatal("unauthenticated agent registered")
	}
	// A correct token is not logged as refused.
	good := llmrouterv1.NewAgentServiceClient(e.dial(t, "s3cret"))
	st, err := good.Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg("10.0.0.1:8000")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("missing or invalid token").Len(); n != 1 {
		t.Fatalf("refusal lines after a good call: %d", n)
	}
}
