package grpcx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

type picker struct {
	llmrouterv1.UnimplementedPickerServiceServer
}

func (picker) Report(context.Context, *llmrouterv1.OutcomeReport) (*llmrouterv1.ReportAck, error) {
	return &llmrouterv1.ReportAck{}, nil
}

// serve starts a server with cfg's options on 127.0.0.1:0 and returns its address.
func serve(t *testing.T, cfg config.Config) string {
	t.Helper()
	opts, err := ServerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	llmrouterv1.RegisterPickerServiceServer(s, picker{})
	RegisterHealth(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func call(t *testing.T, addr string, cfg config.Config) error {
	t.Helper()
	opts, err := DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = llmrouterv1.NewPickerServiceClient(cc).Report(ctx, &llmrouterv1.OutcomeReport{})
	return err
}

func TestTokenInterceptor(t *testing.T) {
	server := config.Default()
	server.Token = "right-token"
	addr := serve(t, server)

	for _, tc := range []struct {
		name, token string
		code        codes.Code
		msg         string
	}{
		{"none", "", codes.Unauthenticated, "missing token"},
		{"wrong", "wrong-token", codes.Unauthenticated, "invalid token"},
		{"right", "right-token", codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := config.Default()
			client.Token = tc.token
			err := call(t, addr, client)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) || tc.msg != "" && !strings.Contains(err.Error(), TokenEnv) {
				t.Fatalf("error %q should say %q and name %s", err, tc.msg, TokenEnv)
			}
			if strings.Contains(errString(err), "right-token") {
				t.Fatal("error leaks the server's token")
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestHealthNeedsNoToken(t *testing.T) {
	server := config.Default()
	server.Token = "t"
	addr := serve(t, server)
	opts, _ := DialOptions(config.Default())
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without token: %v %v", resp, err)
	}
}

func TestNoTokenMeansOpen(t *testing.T) {
	addr := serve(t, config.Default())
	if err := call(t, addr, config.Default()); err != nil {
		t.Fatalf("server without a token refused a call: %v", err)
	}
}

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, and returns their paths.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey, otherCA string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, key, write(name+".pem", "CERTIFICATE", der)
	}
	caCert, caKey, caPath := newCA("ca")
	_, _, otherPath := newCA("other")
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kd)
	}
	sc, sk := leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cc, ck := leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return pki{ca: caPath, serverCert: sc, serverKey: sk, clientCert: cc, clientKey: ck, otherCA: otherPath}
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	server := config.Default()
	server.TLS = config.TLS{CertFile: p.serverCert, KeyFile: p.serverKey}
	addr := serve(t, server)

	client := config.Default()
	client.TLS = config.TLS{CAFile: p.ca}
	if err := call(t, addr, client); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	client.TLS = config.TLS{CAFile: p.otherCA}
	if err := call(t, addr, client); status.Code(err) != codes.Unavailable {
		t.Fatalf("TLS client trusting another CA: got %v, want Unavailable", err)
	}
	if err := call(t, addr, config.Default()); err == nil {
		t.Fatal("plaintext client reached a TLS server")
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	server := config.Default()
	server.TLS = config.TLS{CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.ca}
	server.Token = "tok"
	addr := serve(t, server)

	client := config.Default()
	client.Token = "tok"
	client.TLS = config.TLS{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}
	if err := call(t, addr, client); err != nil {
		t.Fatalf("mTLS client with a certificate: %v", err)
	}
	client.TLS = config.TLS{CAFile: p.ca}
	if err := call(t, addr, client); err == nil {
		t.Fatal("mTLS server accepted a client without a certificate")
	}
}

func TestBadTLSFilesNameTheKey(t *testing.T) {
	_, err := ServerOptions(config.Config{TLS: config.TLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}})
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Fatalf("got %v, want an error naming tls.cert_file", err)
	}
	_, err = DialOptions(config.Config{TLS: config.TLS{CAFile: "/nonexistent/ca.pem"}})
	if err == nil || !strings.Contains(err.Error(), "tls.ca_file") {
		t.Fatalf("got %v, want an error naming tls.ca_file", err)
	}
}

func TestCheckExposure(t *testing.T) {
	for _, tc := range []struct {
		listen, token string
		insecure, ok  bool
	}{
		{"127.0.0.1:18001", "", false, true},
		{"localhost:18001", "", false, true},
		{"[::1]:18001", "", false, true},
		{":18001", "", false, false},
		{"0.0.0.0:18001", "", false, false},
		{"10.0.0.1:18001", "", false, false},
		{":18001", "tok", false, true},
		{":18001", "", true, true},
	} {
		err := CheckExposure(tc.listen, tc.token, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("CheckExposure(%q, token=%q, insecure=%v) = %v, want ok=%v", tc.listen, tc.token, tc.insecure, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("refusal should say how to proceed: %v", err)
		}
	}
}

// During a rotation the server accepts the new token and the previous one;
// once token_previous is cleared, the old token is refused.
func TestTokenRotation(t *testing.T) {
	rotating := config.Default()
	rotating.Token, rotating.TokenPrevious = "new-token", "old-token"
	done := config.Default()
	done.Token = "new-token"
	rotatingAddr, doneAddr := serve(t, rotating), serve(t, done)
	for _, tc := range []struct {
		addr, token string
		want        codes.Code
	}{
		{rotatingAddr, "old-token", codes.OK},
		{rotatingAddr, "new-token", codes.OK},
		{rotatingAddr, "other-token", codes.Unauthenticated},
		{rotatingAddr, "", codes.Unauthenticated},
		{doneAddr, "old-token", codes.Unauthenticated},
		{doneAddr, "new-token", codes.OK},
	} {
		client := config.Default()
		client.Token = tc.token
		if err := call(t, tc.addr, client); status.Code(err) != tc.want {
			t.Errorf("token %q against %s: %v, want %v", tc.token, tc.addr, err, tc.want)
		}
	}
	if TokenMatches("", []string{"", "x"}) || !TokenMatches("x", []string{"", "x"}) {
		t.Fatal("TokenMatches: an empty want must match nothing")
	}
}
