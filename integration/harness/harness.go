package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/servetest"
)

// ---------------------------------------------------------------- binary

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

// Binary returns the llmrouter binary: $LLMROUTER_BIN when set, else one
// built with `go build ./cmd/llmrouter` the first time any test asks.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if b := os.Getenv("LLMROUTER_BIN"); b != "" {
			binPath = b
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		removeStaleBuilds()
		if buildDir, err = os.MkdirTemp("", buildPrefix); err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(buildDir, "llmrouter")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/llmrouter")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/llmrouter: %v\n%s", err, b)
			return
		}
		binPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// buildPrefix names the build directories in the temporary directory.
const buildPrefix = "llmrouter-it-"

// removeStaleBuilds removes build directories a day old: left behind by
// test binaries without harness.Main, or killed before it ran.
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildPrefix+"*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > 24*time.Hour {
			_ = os.RemoveAll(d)
		}
	}
}

// Main runs the tests of a package and then removes the binary Binary built.
// Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the llmrouter module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// FreeAddr returns "127.0.0.1:PORT" for a port nothing listens on, below the
// kernel's ephemeral range (servetest.FreeAddr): for a process that must come
// back on the same address, or an address that must stay closed. A port taken
// from :0 and released can meanwhile go to any other :0 listener or outgoing
// connection, and a client redialling a dead process's ephemeral port can
// connect to itself and hold it. Prefer 127.0.0.1:0 and the logged address
// when the address need not survive a restart.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return servetest.FreeAddr(t)
}

// ---------------------------------------------------------------- processes

// Spec describes one process.
type Spec struct {
	// Name prefixes the process's output in the test log; default: the
	// first argument (the subcommand).
	Name string
	// Args follow the binary: the subcommand first.
	Args []string
	// Env adds KEY=VALUE pairs (they win over the inherited environment).
	Env []string
	// Binary overrides the llmrouter binary (another program entirely).
	Binary string
}

// Line is one line of a process's output; JSON log lines have Fields.
type Line struct {
	Raw    string
	Fields map[string]any // nil when the line is not JSON
	At     time.Time      // when the harness read it
}

// Msg is the zap message ("msg").
func (l Line) Msg() string { return l.Str("msg") }

// Str returns field key as a string ("" when absent; numbers and booleans
// are formatted).
func (l Line) Str(key string) string {
	v, ok := l.Fields[key]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// maxLines bounds the output kept per process; beyond it the oldest half is
// dropped (WaitLog then no longer sees it).
const maxLines = 50000

// Proc is a running (or finished) process.
type Proc struct {
	Name string
	spec Spec
	cmd  *exec.Cmd
	t    testing.TB

	mu      sync.Mutex
	lines   []Line
	dropped int           // lines dropped from the front, in total
	wake    chan struct{} // closed and replaced on every new line and at exit
	partial []byte

	exited  chan struct{}
	exitErr error
}

// Start runs spec and registers its cleanup (stop, and the output in the
// test log if the test failed).
func Start(t testing.TB, spec Spec) *Proc {
	t.Helper()
	bin := spec.Binary
	if bin == "" {
		bin = Binary(t)
	}
	name := spec.Name
	if name == "" && len(spec.Args) > 0 {
		name = spec.Args[0]
	}
	p := &Proc{Name: name, spec: spec, t: t, wake: make(chan struct{}), exited: make(chan struct{})}
	cmd := exec.Command(bin, spec.Args...)
	env := []string{"LLMROUTER_LOG_FORMAT=json"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LLMROUTER_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, spec.Env...)
	w := (*output)(p)
	cmd.Stdout = w // the same comparable writer: exec calls it from one goroutine
	cmd.Stderr = w
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", name, spec.Args, err)
	}
	p.cmd = cmd
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if len(p.partial) > 0 {
			p.addLocked(string(p.partial))
			p.partial = nil
		}
		p.exitErr = err
		p.mu.Unlock()
		close(p.exited)
		p.signal()
	}()
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			p.dumpTail(300)
		}
	})
	return p
}

// output collects a process's stdout and stderr into lines.
type output Proc

func (o *output) Write(b []byte) (int, error) {
	p := (*Proc)(o)
	p.mu.Lock()
	p.partial = append(p.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.addLocked(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
		added = true
	}
	p.mu.Unlock()
	if added {
		p.signal()
	}
	return len(b), nil
}

func (p *Proc) addLocked(raw string) {
	l := Line{Raw: raw, At: time.Now()}
	if strings.HasPrefix(raw, "{") {
		var f map[string]any
		if json.Unmarshal([]byte(raw), &f) == nil {
			l.Fields = f
		}
	}
	if len(p.lines) >= maxLines {
		// A fresh slice: snapshots taken by readers keep their lines.
		half := len(p.lines) / 2
		p.lines = slices.Clone(p.lines[half:])
		p.dropped += half
	}
	p.lines = append(p.lines, l)
}

func (p *Proc) signal() {
	p.mu.Lock()
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited closes when the process has ended and been reaped.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitErr is the process's exit status (nil for a clean exit); valid after
// Exited closed.
func (p *Proc) ExitErr() error { <-p.exited; return p.exitErr }

// snapshot returns the kept lines and the absolute number of the first.
// Lines are only ever appended to (or the slice replaced), so the caller may
// read the snapshot without the lock, and match functions may call back.
func (p *Proc) snapshot() (lines []Line, first int, wake chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines, p.dropped, p.wake
}

func matches(l Line, msg string, match func(Line) bool) bool {
	return (msg == "" || l.Msg() == msg) && (match == nil || match(l))
}

// Logs returns the JSON lines with message msg ("" for all lines, JSON or
// not) that match (nil matches all).
func (p *Proc) Logs(msg string, match func(Line) bool) []Line {
	lines, _, _ := p.snapshot()
	var out []Line
	for _, l := range lines {
		if matches(l, msg, match) {
			out = append(out, l)
		}
	}
	return out
}

// Mark is the number of lines printed so far: pass it to WaitLogSince to
// wait for a line printed after this moment.
func (p *Proc) Mark() int {
	lines, first, _ := p.snapshot()
	return first + len(lines)
}

// WaitLog waits for a line with message msg ("" for any line) that match
// accepts (nil accepts all), already printed or to come. It fails the test
// when timeout passes or the process exits first.
func (p *Proc) WaitLog(t testing.TB, timeout time.Duration, msg string, match func(Line) bool) Line {
	t.Helper()
	return p.WaitLogSince(t, 0, timeout, msg, match)
}

// AwaitLog is WaitLog returning an error instead of failing the test, for a
// caller that can recover (start again on other ports, say).
func (p *Proc) AwaitLog(timeout time.Duration, msg string, match func(Line) bool) (Line, error) {
	return p.waitLog(0, timeout, msg, match)
}

// WaitLogSince is WaitLog counting only lines from mark (see Mark) on.
func (p *Proc) WaitLogSince(t testing.TB, mark int, timeout time.Duration, msg string, match func(Line) bool) Line {
	t.Helper()
	l, err := p.waitLog(mark, timeout, msg, match)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err) // cleanup prints the output
	}
	return l
}

func (p *Proc) waitLog(next int, timeout time.Duration, msg string, match func(Line) bool) (Line, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// next is an absolute line number: dropped lines count too.
	for {
		lines, first, wake := p.snapshot()
		next = max(next, first)
		for ; next-first < len(lines); next++ {
			if l := lines[next-first]; matches(l, msg, match) {
				return l, nil
			}
		}
		select {
		case <-wake:
		case <-p.exited:
			// The exit signal comes after the last line is in: one more
			// scan sees everything.
			lines, first, _ := p.snapshot()
			if first+len(lines) <= next {
				return Line{}, fmt.Errorf("exited (%v) before logging %q", p.exitErr, msg)
			}
		case <-deadline.C:
			return Line{}, fmt.Errorf("no log line %q within %s", msg, timeout)
		}
	}
}

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not reaped 10s after SIGKILL", p.Name)
	}
}

// Stop sends SIGTERM, waits up to 10 s for a graceful exit, then kills. It
// fails the test if the process had to be killed or exited with an error.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if killed := p.stop(10 * time.Second); killed {
		t.Errorf("%s: did not exit within 10s of SIGTERM; killed", p.Name)
	} else if err := p.ExitErr(); err != nil {
		t.Errorf("%s: exited with %v after SIGTERM", p.Name, err)
	}
}

// stop terminates the process if it still runs; it reports whether SIGKILL
// was needed.
func (p *Proc) stop(grace time.Duration) (killed bool) {
	select {
	case <-p.exited:
		return false
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return true
}

// Restart starts the same binary with the same arguments and environment as
// a new process (the old one should have ended).
func (p *Proc) Restart(t testing.TB) *Proc {
	t.Helper()
	return Start(t, p.spec)
}

// Output is everything the process printed so far (bounded, see maxLines).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		b.WriteString(l.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

func (p *Proc) dumpTail(n int) {
	p.mu.Lock()
	lines := p.lines[max(len(p.lines)-n, 0):]
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Raw)
		b.WriteByte('\n')
	}
	p.mu.Unlock()
	p.t.Logf("---- %s (pid %d, last %d lines) ----\n%s", p.Name, p.Pid(), len(lines), b.String())
}

// ---------------------------------------------------------------- observing

// Eventually polls cond every 25 ms until it returns nil; after timeout it
// fails the test with what and cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// client has a short timeout: a poll that hangs is a failed poll.
var client = &http.Client{Timeout: 2 * time.Second}

// Get fetches url with an optional bearer token and returns the body; a
// status other than 200 is an error carrying the status and body.
func Get(url, token string) ([]byte, error) { return Do(http.MethodGet, url, token, nil) }

// Post is Get with POST and an optional body (such as /admin/drain).
func Post(url, token string, body io.Reader) ([]byte, error) {
	return Do(http.MethodPost, url, token, body)
}

// Do sends one request with an optional bearer token; a status other than
// 200 is an error carrying the status and body.
func Do(method, url, token string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return got, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(got)))
	}
	return got, nil
}

// GetJSON fetches url and decodes its JSON body into v.
func GetJSON(url, token string, v any) error {
	body, err := Get(url, token)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// WaitReady polls http://addr/readyz until it answers 200.
func WaitReady(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "ready at "+addr, func() error {
		_, err := Get("http://"+addr+"/readyz", "")
		return err
	})
}
