package workload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// maxLineBytes bounds one line of a workload file.
const maxLineBytes = 64 << 20

// fileLine is one line of a workload file. Pointers tell a missing field
// from a zero one.
type fileLine struct {
	ConversationID *string         `json:"conversation_id"`
	Turn           *int            `json:"turn"`
	ArrivalMs      *float64        `json:"arrival_ms"`
	Model          *string         `json:"model"`
	Messages       json.RawMessage `json:"messages"`
	MaxTokens      *int            `json:"max_tokens"`
}

type fileMessage struct {
	Role    *string `json:"role"`
	Content *string `json:"content"`
}

// FileFormat describes a workload file line, for error messages and help.
const FileFormat = `{"conversation_id": str, "turn": int, "arrival_ms": number (optional), "model": str (optional), "messages": [{"role": str, "content": str}, ...], "max_tokens": int}`

type fileSource struct {
	name       string
	convs      []*Conversation
	meanTurns  float64
	models     []string
	hasArrival bool
}

// LoadFile reads a JSONL workload file (FileFormat, one request per line;
// blank lines are skipped).
func LoadFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("workload file: %w", err)
	}
	defer f.Close()
	src, err := ParseFile(f, path)
	if err != nil {
		return nil, err
	}
	return src, nil
}

// ParseFile parses a JSONL workload; name labels errors (the file's path).
// Each error names the line and the field at fault.
func ParseFile(r io.Reader, name string) (Source, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	type entry struct {
		line int
		turn Turn
		num  int
	}
	byConv := map[string][]entry{}
	var order []string
	models := map[string]bool{}
	withArrival, withoutArrival := 0, 0
	firstWith, firstWithout := 0, 0
	for lineNo := 1; ; lineNo++ {
		raw, err := readLine(br)
		if err == io.EOF && raw == nil {
			break
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			id, e, perr := parseLine(raw)
			if perr != nil {
				return nil, fmt.Errorf("%s:%d: %w (each line: %s)", name, lineNo, perr, FileFormat)
			}
			if _, seen := byConv[id]; !seen {
				order = append(order, id)
			}
			for _, prev := range byConv[id] {
				if prev.num == e.num {
					return nil, fmt.Errorf("%s:%d: field \"turn\": conversation %q has turn %d already on line %d", name, lineNo, id, e.num, prev.line)
				}
			}
			byConv[id] = append(byConv[id], entry{line: lineNo, turn: e.turn, num: e.num})
			models[e.model] = true
			if e.turn.HasArrival {
				withArrival++
				if firstWith == 0 {
					firstWith = lineNo
				}
			} else {
				withoutArrival++
				if firstWithout == 0 {
					firstWithout = lineNo
				}
			}
		}
		if err == io.EOF {
			break
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("%s: no requests (each line: %s)", name, FileFormat)
	}
	if withArrival > 0 && withoutArrival > 0 {
		return nil, fmt.Errorf("%s:%d: field \"arrival_ms\" is missing, but line %d has one: give it on every line or on none", name, firstWithout, firstWith)
	}
	s := &fileSource{name: fmt.Sprintf("file %s", name), hasArrival: withArrival > 0}
	total := 0
	for i, id := range order {
		es := byConv[id]
		sort.SliceStable(es, func(a, b int) bool { return es[a].num < es[b].num })
		c := &Conversation{ID: id, seed: hashString(id) ^ uint64(i)}
		for _, e := range es {
			c.Turns = append(c.Turns, e.turn)
		}
		s.convs = append(s.convs, c)
		total += len(es)
	}
	s.meanTurns = float64(total) / float64(len(s.convs))
	for m := range models {
		s.models = append(s.models, m)
	}
	sort.Strings(s.models)
	return s, nil
}

type lineEntry struct {
	turn  Turn
	num   int
	model string
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		part, err := br.ReadSlice('\n')
		buf = append(buf, part...)
		if len(buf) > maxLineBytes {
			return nil, fmt.Errorf("line longer than %d bytes", maxLineBytes)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(buf) == 0 {
			return nil, io.EOF
		}
		return buf, err
	}
}

func parseLine(raw []byte) (string, lineEntry, error) {
	var l fileLine
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return "", lineEntry{}, jsonError(err)
	}
	if dec.More() {
		return "", lineEntry{}, errors.New("more than one JSON value on the line")
	}
	var e lineEntry
	switch {
	case l.ConversationID == nil:
		return "", e, errors.New(`field "conversation_id" is missing: want a string`)
	case *l.ConversationID == "":
		return "", e, errors.New(`field "conversation_id" is empty: want a non-empty string`)
	case l.Turn == nil:
		return "", e, errors.New(`field "turn" is missing: want an integer`)
	case *l.Turn < 0:
		return "", e, fmt.Errorf(`field "turn" = %d: want 0 or more`, *l.Turn)
	case l.MaxTokens == nil:
		return "", e, errors.New(`field "max_tokens" is missing: want an integer >= 1`)
	case *l.MaxTokens < 1:
		return "", e, fmt.Errorf(`field "max_tokens" = %d: want 1 or more`, *l.MaxTokens)
	case l.Messages == nil || string(l.Messages) == "null":
		return "", e, errors.New(`field "messages" is missing: want a non-empty array of {"role": str, "content": str}`)
	}
	if l.ArrivalMs != nil {
		if v := *l.ArrivalMs; v < 0 || math.IsNaN(v) || v > float64(math.MaxInt64/int64(time.Millisecond)) {
			return "", e, fmt.Errorf(`field "arrival_ms" = %v: want a number of milliseconds >= 0`, v)
		}
		e.turn.Arrival = time.Duration(*l.ArrivalMs * float64(time.Millisecond))
		e.turn.HasArrival = true
	}
	var msgs []fileMessage
	if err := json.Unmarshal(l.Messages, &msgs); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return "", e, fmt.Errorf(`field "messages": %s: want a string, got %s`, te.Field, te.Value)
		}
		return "", e, errors.New(`field "messages": want an array of {"role": str, "content": str}`)
	}
	if len(msgs) == 0 {
		return "", e, errors.New(`field "messages" is empty: want at least one message`)
	}
	for i, m := range msgs {
		switch {
		case m.Role == nil || *m.Role == "":
			return "", e, fmt.Errorf(`field "messages[%d].role" is missing or empty: want a string such as "system", "user" or "assistant"`, i)
		case m.Content == nil:
			return "", e, fmt.Errorf(`field "messages[%d].content" is missing: want a string`, i)
		}
		e.turn.Messages = append(e.turn.Messages, Message{Role: *m.Role, Content: *m.Content})
	}
	e.turn.MaxTokens = *l.MaxTokens
	e.num = *l.Turn
	if l.Model != nil {
		e.model = *l.Model
		e.turn.Model = *l.Model
	}
	return *l.ConversationID, e, nil
}

// jsonError turns a decoding error into one that names the field.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := map[string]string{
			"conversation_id": "a string", "turn": "an integer", "arrival_ms": "a number",
			"model": "a string", "max_tokens": "an integer",
		}[te.Field]
		if want == "" {
			want = te.Type.String()
		}
		return fmt.Errorf("field %q: want %s, got %s", te.Field, want, te.Value)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return fmt.Errorf("unknown field %s: accepted: conversation_id, turn, arrival_ms, model, messages, max_tokens", strings.TrimPrefix(msg, "json: unknown field "))
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

func (s *fileSource) Name() string       { return s.name }
func (s *fileSource) MeanTurns() float64 { return s.meanTurns }
func (s *fileSource) Models() []string   { return s.models }

func (s *fileSource) Conversation(i int) (*Conversation, bool) {
	if i < 0 || i >= len(s.convs) {
		return nil, false
	}
	return s.convs[i], true
}

// HasArrivals reports whether every request of the source carries its own
// arrival time (a file with arrival_ms), so it can be replayed as a trace.
func HasArrivals(src Source) bool {
	f, ok := src.(*fileSource)
	return ok && f.hasArrival
}
