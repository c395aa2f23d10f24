// Command standin runs the TEST STAND-IN for Envoy (integration/standin):
// it reads an Envoy bootstrap and serves its listener the way the parts of
// Envoy llmrouter relies on do. It is a test fixture, not a product:
//
//	go run ./integration/standin/cmd/standin -c bootstrap/envoy.yaml --listen-override 127.0.0.1:0
//
// It prints "standin listening on HOST:PORT" (and "standin admin on ...")
// to stderr once bound, so a harness can read the ports.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/llmrouter/llmrouter/integration/standin"
	"github.com/llmrouter/llmrouter/internal/logging"
)

type overrides map[string]string

func (o overrides) String() string { return fmt.Sprint(map[string]string(o)) }
func (o overrides) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" || addr == "" {
		return fmt.Errorf("want NAME=HOST:PORT, got %q", v)
	}
	o[name] = addr
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("c", "", "Envoy bootstrap file (YAML or JSON), the same file Envoy would read")
	listen := flag.String("listen-override", "", "replace the listener address (e.g. 127.0.0.1:0)")
	admin := flag.String("admin-override", "", "replace the admin address (e.g. 127.0.0.1:0)")
	addrFile := flag.String("addr-file", "", "write the bound listener and admin addresses here, one per line")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	clusters := overrides{}
	flag.Var(clusters, "cluster-override", "NAME=HOST:PORT: replace a static cluster's endpoint (repeatable)")
	flag.Parse()
	if *cfgPath == "" {
		return fmt.Errorf("-c FILE is required (an Envoy bootstrap)")
	}
	fmt.Fprintln(os.Stderr, standin.Notice)
	log, err := logging.New(*level, "console")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	cfg, err := standin.LoadBootstrap(*cfgPath)
	if err != nil {
		return err
	}
	s, err := standin.New(cfg, standin.Options{ListenOverride: *listen, AdminOverride: *admin, ClusterOverrides: clusters, Logger: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "standin listening on %s\n", s.Addr())
	if s.AdminAddr() != "" {
		fmt.Fprintf(os.Stderr, "standin admin on %s\n", s.AdminAddr())
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(s.Addr()+"\n"+s.AdminAddr()+"\n"), 0o644); err != nil {
			s.Close()
			return err
		}
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "standin: shutting down")
	return s.Close()
}
