// Package grpcx holds what every llmrouter gRPC server and client shares: the
// shared-token check, TLS and mTLS from files, keepalive settings suited to
// long-lived agent streams, and the standard health service.
package grpcx

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/llmrouter/llmrouter/internal/config"
)

// TokenEnv is the environment variable holding the shared token.
const TokenEnv = "LLMROUTER_TOKEN"

// authHeader carries the token as "Bearer <token>".
const authHeader = "authorization"

// Keepalive: agents hold one stream for hours and send a report every 200 ms,
// so a dead peer is noticed by the missing reports first; pings catch a
// half-open connection when traffic stops (a NAT dropping it, a paused VM).
var (
	serverKeepalive = keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	// Clients may ping every 10 s even without active streams.
	serverEnforcement = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}
	clientKeepalive   = keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}
)

// checkToken compares the caller's token with each of wants (the token,
// and during a rotation the previous one) in constant time.
func checkToken(ctx context.Context, wants []string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(authHeader)
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing token: set "+TokenEnv+" to the scheduler's shared token")
	}
	got, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || !TokenMatches(got, wants) {
		return status.Error(codes.Unauthenticated, "invalid token: "+TokenEnv+" does not match the scheduler's shared token")
	}
	return nil
}

// TokenMatches reports whether got equals one of the non-empty wants,
// comparing each in constant time.
func TokenMatches(got string, wants []string) bool {
	ok := false
	for _, w := range wants {
		if w != "" && subtle.ConstantTimeCompare([]byte(got), []byte(w)) == 1 {
			ok = true
		}
	}
	return ok
}

// TokenInterceptors returns server options that demand the token on every
// call except the health service (probes carry no secrets); during a
// rotation, previous (the token being replaced) is accepted too. An empty
// token returns no options: authentication is off.
func TokenInterceptors(token string, previous ...string) []grpc.ServerOption {
	if token == "" {
		return nil
	}
	wants := append([]string{token}, previous...)
	exempt := func(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.Health/") }
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !exempt(info.FullMethod) {
			if err := checkToken(ctx, wants); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !exempt(info.FullMethod) {
			if err := checkToken(ss.Context(), wants); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

// tokenCreds attaches the token to every call.
type tokenCreds struct {
	token  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{authHeader: "Bearer " + t.token}, nil
}
func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// ServerOptions returns the options of a scheduler-side server: TLS or mTLS
// when configured, the token check, keepalive.
func ServerOptions(cfg config.Config) ([]grpc.ServerOption, error) {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(serverKeepalive),
		grpc.KeepaliveEnforcementPolicy(serverEnforcement),
	}
	if cfg.TLS.CertFile != "" {
		tc, err := ServerTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	return append(opts, TokenInterceptors(cfg.Token, cfg.TokenPrevious)...), nil
}

// ServerTLS builds a server TLS config; with ClientCAFile it requires and
// verifies client certificates (mTLS).
func ServerTLS(t config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file %s / tls.key_file %s: %w", t.CertFile, t.KeyFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pool, err := loadPool(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// ClientTLS builds a client TLS config: CAFile verifies the server,
// CertFile/KeyFile present a client certificate.
func ClientTLS(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pool, err := loadPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file %s / tls.key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// DialOptions returns the options of a client of the scheduler API: TLS when
// CAFile or a client certificate is configured, the token, keepalive.
func DialOptions(cfg config.Config) ([]grpc.DialOption, error) {
	opts := []grpc.DialOption{grpc.WithKeepaliveParams(clientKeepalive)}
	secure := cfg.TLS.CAFile != "" || cfg.TLS.CertFile != ""
	if secure {
		tc, err := ClientTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: cfg.Token, secure: secure}))
	}
	return opts, nil
}

// RegisterHealth adds the standard health service and returns it so the role
// can flip serving status.
func RegisterHealth(s *grpc.Server) *health.Server {
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	return h
}

// CheckExposure enforces ARCHITECTURE §5.3: a scheduler listening beyond
// loopback without a token refuses to start unless told insecure.
func CheckExposure(listen, token string, insecureOK bool) error {
	if token != "" || insecureOK {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("refusing to listen on " + listen + " without a token: set " + TokenEnv +
		", bind to 127.0.0.1, or pass --insecure (llm_scheduler.insecure) to accept unauthenticated agents")
}

// PeerHost returns a call's remote address and its host part ("unknown"
// when the transport gives none), for logs that name a refused caller once
// per host rather than once per connection.
func PeerHost(ctx context.Context) (addr, host string) {
	addr = "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	host = addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	return addr, host
}

// Stop stops s gracefully — in-flight calls finish — but for at most grace;
// then it closes every connection, so a stream that never ends by itself
// (an agent's, a queued pick's) cannot hold a shutdown up. It returns once
// every handler has returned, a cut one included (GracefulStop waits for
// the handlers, s.Stop does not), so nothing a handler logs or touches
// outlives it. s.Serve may return before Stop does: wait for Stop.
func Stop(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.Stop()
		<-done
	}
}
