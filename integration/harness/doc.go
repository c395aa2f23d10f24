// Package harness runs real llmrouter processes from tests: the end-to-end
// tests in integration/ start a scheduler, engine simulators, agents,
// gateways and a data plane as separate processes, talk to them over their
// real ports, and kill or restart them. It is a test fixture, imported only by
// tests.
//
// The binary:
//
//	Binary(t)      the llmrouter binary, built once per test binary with
//	               `go build ./cmd/llmrouter` into a temporary directory
//	               ($LLMROUTER_BIN names a prebuilt one instead). Call
//	               harness.Main(m) from TestMain to remove it afterwards.
//
// Processes:
//
//	p := Start(t, Spec{Args: []string{"enginesim", "--listen", addr}, Env: []string{"LLMROUTER_TOKEN=x"}})
//	p.WaitLog(t, 10*time.Second, "enginesim serving", nil)   // a zap JSON line by message (and predicate)
//	p.Kill(t)                                                // SIGKILL and reap
//	q := p.Restart(t)                                        // same binary, args and environment
//	p.Stop(t)                                                // SIGTERM, SIGKILL after a grace period
//
// Start inherits the environment minus every LLMROUTER_* variable (a
// developer's settings must not leak into a test), forces JSON logs, and adds
// Spec.Env. stdout and stderr are captured line by line; JSON lines are
// parsed into Line values that WaitLog and Logs search. When the test fails
// the tail of every process's output goes to the test log. Cleanup stops
// whatever is still running. On Linux a process dies with the test binary
// (Pdeathsig), so a timed-out test leaves no orphans.
//
// Ports: FreeAddr(t) returns 127.0.0.1:PORT of a port that was free a moment
// ago, below the kernel's ephemeral range — for a process that must come back
// on the same address (an ephemeral port can be taken meanwhile by another
// :0 listener, or by a client redialling it). Otherwise pass 127.0.0.1:0 and read the bound address from the
// process's log (Line.Str("addr"), or the scheduler's "scheduler started"
// line with api, xds and http).
//
// Observation: WaitReady polls /readyz; Eventually polls any condition with a
// deadline; Scrape parses a /metrics page (Metrics.Value and Metrics.Sum by
// name and labels); Get, Post and GetJSON call endpoints such as the
// scheduler's /admin/*.
package harness
