//go:build faults

package faults

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/stack"
)

// standinBin is the stand-in data plane, built by TestMain with llmrouter.
var standinBin string

func TestMain(m *testing.M) {
	dir, err := build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(2)
	}
	began := time.Now()
	code := m.Run()
	summary(os.Stdout, time.Since(began))
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles llmrouter (unless LLMROUTER_BIN names one; harness.Binary
// reads that variable) and the stand-in into one temporary directory.
func build() (string, error) {
	dir, standin, err := stack.Build("llmrouter-faults-")
	standinBin = standin
	return dir, err
}

// ---------------------------------------------------------------- report

// row is one scenario's line in the summary.
type row struct {
	name                   string
	sent, ok, shed, failed int
	took                   time.Duration
	result                 string // "pass", "FAIL", "skip"
	note                   string
}

var (
	rowsMu sync.Mutex
	rows   []*row
)

// scenario registers t as a scenario of the summary; its counts come from
// count, its result from t when it ends.
func scenario(t *testing.T) *row {
	r := &row{name: strings.TrimPrefix(t.Name(), "Test")}
	began := time.Now()
	rowsMu.Lock()
	rows = append(rows, r)
	rowsMu.Unlock()
	t.Cleanup(func() {
		rowsMu.Lock()
		defer rowsMu.Unlock()
		r.took = time.Since(began)
		switch {
		case t.Failed():
			r.result = "FAIL"
		case t.Skipped():
			r.result = "skip"
		default:
			r.result = "pass"
		}
	})
	return r
}

// add counts replies into the row.
func (r *row) add(o outcome) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	r.sent += o.sent
	r.ok += o.ok
	r.shed += o.shed
	r.failed += o.failed
}

func summary(w *os.File, took time.Duration) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%-22s %7s %9s %6s %7s %8s  %s\n", "scenario", "sent", "succeeded", "shed", "failed", "time", "result")
	passed, failed, skipped := 0, 0, 0
	for _, r := range rows {
		fmt.Fprintf(w, "%-22s %7d %9d %6d %7d %7.1fs  %s %s\n", r.name, r.sent, r.ok, r.shed, r.failed, r.took.Seconds(), r.result, r.note)
		switch r.result {
		case "pass":
			passed++
		case "skip":
			skipped++
		default:
			failed++
		}
	}
	line := fmt.Sprintf("%d passed, %d failed", passed, failed)
	if skipped > 0 {
		line += fmt.Sprintf(", %d skipped", skipped)
	}
	fmt.Fprintf(w, "%s (%.0fs)\n", line, took.Seconds())
}
