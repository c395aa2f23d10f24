package envoytest

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// scripted answers each message with answer(msg); nil sends nothing.
type scripted struct {
	extprocv3.UnimplementedExternalProcessorServer
	answer func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse
}

func (s *scripted) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		for _, a := range s.answer(m) {
			if a == nil {
				time.Sleep(time.Second) // hang
				continue
			}
			if err := stream.Send(a); err != nil {
				return nil
			}
		}
	}
}

func start(t *testing.T, answer func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse) *Filter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, &scripted{answer: answer})
	go func() { _ = g.Serve(ln) }()
	client, cc, err := Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); g.Stop() })
	return &Filter{Client: client, MessageTimeout: 200 * time.Millisecond, FailureModeAllow: true, ReceivingNamespaces: []string{"envoy.lb"}}
}

func hdrResp(m *extprocv3.HeaderMutation, md *structpb.Struct) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
		Response: &extprocv3.CommonResponse{HeaderMutation: m}}}, DynamicMetadata: md}
}

func set(k, v string, raw bool) *corev3.HeaderValueOption {
	h := &corev3.HeaderValue{Key: k}
	if raw {
		h.RawValue = []byte(v)
	} else {
		h.Value = v
	}
	return &corev3.HeaderValueOption{Header: h, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

func TestMutationRulesRawValueAndNamespaces(t *testing.T) {
	f := start(t, func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		md, _ := structpb.NewStruct(map[string]any{"envoy.lb": map[string]any{"k": "v"}, "other": map[string]any{"x": "y"}})
		return []*extprocv3.ProcessingResponse{hdrResp(&extprocv3.HeaderMutation{
			SetHeaders:    []*corev3.HeaderValueOption{set("x-envoy-foo", "1", true), set(":authority", "evil", true), set("x-raw", "ok", true), set("x-value-only", "lost", false)},
			RemoveHeaders: []string{":path", "x-drop"},
		}, md)}
	})
	res := f.Do(context.Background(), Request{Headers: []Header{{":path", "/x"}, {":authority", "a"}, {"x-drop", "1"}}})
	if res.Err != nil || !res.Continued {
		t.Fatalf("err=%v", res.Err)
	}
	if want := []string{"remove :path", "set x-envoy-foo", "set :authority"}; !slices.Equal(res.Refused, want) {
		t.Fatalf("refused = %v, want %v", res.Refused, want)
	}
	if v, _ := Get(res.Headers, ":authority"); v != "a" {
		t.Fatalf(":authority changed to %q", v)
	}
	if v, _ := Get(res.Headers, "x-raw"); v != "ok" {
		t.Fatalf("x-raw = %q", v)
	}
	if v, ok := Get(res.Headers, "x-value-only"); !ok || v != "" || !slices.Equal(res.ValueOnly, []string{"x-value-only"}) {
		t.Fatalf("a value-only header must arrive empty, as in Envoy: %q %v", v, res.ValueOnly)
	}
	if _, ok := Get(res.Headers, "x-drop"); ok {
		t.Fatal("x-drop not removed")
	}
	if res.Metadata["envoy.lb"] == nil || res.Metadata["other"] != nil || !slices.Equal(res.DroppedNamespaces, []string{"other"}) {
		t.Fatalf("metadata = %v dropped = %v", res.Metadata, res.DroppedNamespaces)
	}

	// disallow_is_error: the refusal fails the request; failure_mode_allow
	// continues it unmodified; without it the client gets a 500.
	f.DisallowIsError = true
	if res := f.Do(context.Background(), Request{Headers: []Header{{":path", "/x"}}}); res.Err == nil || !res.Continued {
		t.Fatalf("err=%v continued=%v", res.Err, res.Continued)
	}
	f.FailureModeAllow = false
	if res := f.Do(context.Background(), Request{Headers: []Header{{":path", "/x"}}}); res.LocalStatus != 500 || res.Continued {
		t.Fatalf("status=%d continued=%v", res.LocalStatus, res.Continued)
	}
}

func TestTimeoutsAndOverride(t *testing.T) {
	override := &extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(2 * time.Second)}
	f := start(t, func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		switch m.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			return []*extprocv3.ProcessingResponse{hdrResp(nil, nil)}
		}
		// Body: extend, hang past the base timeout, then answer.
		return []*extprocv3.ProcessingResponse{override, nil, {Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}}
	})
	req := Request{Headers: []Header{{":path", "/x"}}, Body: []byte("{}")}

	// Overriding disabled (max_message_timeout 0): a 504 without failure_mode_allow.
	f.FailureModeAllow = false
	if res := f.Do(context.Background(), req); !errors.Is(res.Err, ErrTimeout) || res.LocalStatus != 504 {
		t.Fatalf("err=%v status=%d", res.Err, res.LocalStatus)
	}
	// Above max_message_timeout: ignored too.
	f.MaxMessageTimeout = time.Second
	if res := f.Do(context.Background(), req); !errors.Is(res.Err, ErrTimeout) || len(res.Overrides) != 0 {
		t.Fatalf("err=%v overrides=%v", res.Err, res.Overrides)
	}
	// Within it: honoured, the late answer counts.
	f.MaxMessageTimeout = 3 * time.Second
	if res := f.Do(context.Background(), req); res.Err != nil || !res.Continued || len(res.Overrides) != 1 {
		t.Fatalf("err=%v overrides=%v", res.Err, res.Overrides)
	}
}

func TestSpuriousAnswerAndBodylessRequest(t *testing.T) {
	sent := make(chan int, 10)
	f := start(t, func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		if h := m.GetRequestHeaders(); h != nil && h.EndOfStream {
			sent <- 1
			return []*extprocv3.ProcessingResponse{hdrResp(nil, nil)}
		}
		// A body answer to a headers message is spurious.
		return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}}
	})
	if res := f.Do(context.Background(), Request{Headers: []Header{{":path", "/x"}}}); res.Err != nil || len(sent) != 1 {
		t.Fatalf("body-less request: err=%v", res.Err)
	}
	if res := f.Do(context.Background(), Request{Headers: []Header{{":path", "/x"}}, Body: []byte("{}")}); res.Err == nil || !res.Continued {
		t.Fatalf("spurious answer: err=%v", res.Err)
	}
}
