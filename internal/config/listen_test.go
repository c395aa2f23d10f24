package config

import "testing"

// TestEveryListenerDefaultsToLoopback: nothing listens beyond this host
// unless configured to (deploy/ sets the addresses it needs).
func TestEveryListenerDefaultsToLoopback(t *testing.T) {
	c := Default()
	for key, addr := range map[string]string{
		"llm_gateway.listen": c.Gateway.Listen, "llm_gateway.http_listen": c.Gateway.HTTPListen,
		"llm_scheduler.listen": c.Scheduler.Listen, "llm_scheduler.xds_listen": c.Scheduler.XDSListen,
		"llm_scheduler.http_listen": c.Scheduler.HTTPListen, "agent.http_listen": c.Agent.HTTPListen,
	} {
		if !Loopback(addr) {
			t.Errorf("%s defaults to %q, beyond loopback", key, addr)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9002": true, "[::1]:9002": true, "localhost:1": true, "127.8.9.10:1": true,
		":9002": false, "0.0.0.0:9002": false, "[::]:1": false, "10.0.0.5:1": false, "junk": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
