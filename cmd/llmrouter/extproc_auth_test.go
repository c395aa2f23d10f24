package main

import (
	"context"
	"net"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/httpserve"
)

// TestGatewayRefusesOpenExtProcWithoutToken: beyond loopback without a token
// the gateway does not start (nothing is bound), unless told insecure.
func TestGatewayRefusesOpenExtProcWithoutToken(t *testing.T) {
	cfg := config.Default()
	cfg.Gateway.Listen = "0.0.0.0:0"
	err := runGateway(t.Context(), cfg, zap.NewNop(), func(gatewayAddrs) { t.Error("gateway bound a port") })
	if err == nil || !strings.Contains(err.Error(), "without a token") || !strings.Contains(err.Error(), "llm_gateway.insecure") ||
		!strings.Contains(err.Error(), "llm_gateway.listen") {
		t.Fatalf("err = %v, want a refusal naming llm_gateway.listen, the token and llm_gateway.insecure", err)
	}
	for _, tc := range []struct {
		listen, token string
		insecure      bool
		want          string
	}{
		{"127.0.0.1:9002", "tok", false, ""}, // beside Envoy: nothing demanded
		{"0.0.0.0:9002", "tok", false, "tok"},
		{":9002", "tok", true, "tok"}, // a token is demanded whenever there is one
		{"10.0.0.5:9002", "", true, ""},
	} {
		c := config.Default()
		c.Gateway.Listen, c.Token, c.Gateway.Insecure = tc.listen, tc.token, tc.insecure
		got, err := extProcToken(c, zap.NewNop())
		if err != nil || got != tc.want {
			t.Errorf("%s token=%q insecure=%v: demands %q (err %v), want %q", tc.listen, tc.token, tc.insecure, got, err, tc.want)
		}
	}
}

type routeAll struct{}

func (routeAll) Pick(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}}, nil
}
func (routeAll) Report(context.Context, *llmrouterv1.OutcomeReport) error { return nil }

// TestExtProcDemandsToken: with a token, an ext_proc client that does not
// present it gets Unauthenticated and no pick; Envoy presenting it
// (initial_metadata "authorization: Bearer <token>") gets its pick.
func TestExtProcDemandsToken(t *testing.T) {
	gw := extproc.New(extproc.Options{}, routeAll{}, httpserve.NewRegistry(), zap.NewNop())
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := extProcServer(gw, "s3cret")
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	f := extProcFilter(t, ln.Addr().String())

	client, cc, err := envoytest.Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, tok := range []string{"", "wrong"} {
		ctx := t.Context()
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		// Envoy's filter fails open on the error (no pick)...
		if res := f.Do(ctx, chatReq); res.Err == nil || dest(res) != "" {
			t.Fatalf("token %q: err=%v dest=%q, want a failed stream and no pick", tok, res.Err, dest(res))
		}
		// ...and the stream's status says why.
		stream, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}})
		if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: stream ended with %v, want Unauthenticated", tok, err)
		}
	}
	res := f.Do(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer s3cret"), chatReq)
	if res.Err != nil || dest(res) != "10.0.0.1:8000" {
		t.Fatalf("with the token: err=%v dest=%q", res.Err, dest(res))
	}
}
