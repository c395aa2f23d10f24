//go:build faults

package faults

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHostileBodies: one request of every class of hostile body, beside
// steady load. Each gets a 4xx with a short error body, or passes through
// to an engine and is answered; the steady load has 0 failed and no process
// exits.
func TestHostileBodies(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{})
	valid := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 40) + `"}],"max_tokens":4,"stream":true}`)
	var many bytes.Buffer
	many.WriteString(`{"model":"` + model + `","max_tokens":4,"stream":true,"messages":[`)
	for i := range 100_000 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`{"role":"user","content":"m"}`)
	}
	many.WriteString(`]}`)
	const depth = 100_000
	deep := []byte(`{"model":"` + model + `","max_tokens":4,"stream":true,"messages":[{"role":"user","content":` +
		strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}]}`)
	huge := make([]byte, 0, 64<<20+256)
	huge = append(huge, `{"model":"`+model+`","max_tokens":4,"stream":true,"messages":[{"role":"user","content":"`...)
	huge = append(huge, bytes.Repeat([]byte("x"), 64<<20)...)
	huge = append(huge, `"}]}`...)
	bodies := []struct {
		name string
		body []byte
	}{
		{"malformed JSON", []byte(`{"model": "` + model + `", "messages": [}, "max_tokens": }`)},
		{"truncated JSON", valid[:len(valid)/2]},
		{"64 MiB", huge},
		{"100k-deep nesting", deep},
		{"invalid UTF-8", []byte("{\"model\":\"" + model + "\",\"max_tokens\":4,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc3\x28 \xed\xa0\x80\"}]}")},
		{"100k messages", many.Bytes()},
		{"empty body", []byte{}},
		{"not an object", []byte(`[1,2,3]`)},
	}

	l := s.openLoop(10, 12*time.Second, chatReq{}, nil)
	var hostile outcome
	for _, b := range bodies {
		r := s.chat(t.Context(), chatReq{Raw: b.body, Timeout: 60 * time.Second})
		hostile.sent++
		took := r.End.Sub(r.Start).Round(time.Millisecond)
		switch {
		case r.Err != nil:
			hostile.failed++
			t.Errorf("%s (%d bytes): %v after %s", b.name, len(b.body), r.Err, took)
		case r.Status >= 400 && r.Status < 500:
			hostile.ok++
			t.Logf("%s (%d bytes): %d in %s: %s", b.name, len(b.body), r.Status, took, clip(r.Body))
			if len(bytes.TrimSpace(r.Body)) == 0 {
				t.Errorf("%s: %d with an empty body, want one saying what is wrong", b.name, r.Status)
			}
			if len(r.Body) > 4<<10 {
				t.Errorf("%s: a %d-byte error body (starts %s): error bodies echo at most a short prefix of the input", b.name, len(r.Body), clip(r.Body))
			}
		case r.Status == http.StatusOK && r.Done:
			hostile.ok++
			t.Logf("%s (%d bytes): passed through and answered in %s", b.name, len(b.body), took)
		default:
			hostile.failed++
			t.Errorf("%s (%d bytes): %v after %s, want a 4xx or an answer", b.name, len(b.body), r.Failure(), took)
		}
	}
	row.add(hostile)
	judge(t, row, l.wait(), l.began, false)
	s.logSignals(t)
	s.alive(t)
}

// clip is the start of a body, for the log.
func clip(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return fmt.Sprintf("%s... (%d bytes)", b[:200], len(b))
	}
	return string(b)
}
