package extproc

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// scanner is a minimal JSON reader over a byte slice. It reads only the keys
// the gateway needs and skips everything else without building a tree or
// copying: strings come back as spans of the input, and a 256 KiB prompt costs
// one IndexByte sweep. It never recurses on input-controlled depth (skipping is
// iterative), so hostile nesting cannot exhaust the stack.
type scanner struct {
	b []byte
	i int
}

var errSyntax = errors.New("invalid JSON")

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// consume eats c (after spaces) or fails.
func (s *scanner) consume(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

// str reads a string and returns its raw (still escaped) contents. It makes
// one IndexByte sweep over the string and nothing more: a 256 KiB prompt is
// read once here, and callers that need to know about escapes look for them
// only in what they use.
func (s *scanner) str() (raw []byte, ok bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return nil, false
		}
		end := s.i + j
		// The quote is escaped when an odd run of backslashes precedes it.
		n := 0
		for k := end - 1; k >= start && s.b[k] == '\\'; k-- {
			n++
		}
		s.i = end + 1
		if n%2 == 0 {
			return s.b[start:end], true
		}
	}
}

// strValue reads a string and returns it unescaped.
func (s *scanner) strValue() (string, bool) {
	raw, ok := s.str()
	if !ok {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	out, ok := appendUnescaped(nil, raw, -1)
	return string(out), ok
}

// literal consumes true, false or null.
func (s *scanner) literal() bool {
	for _, w := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(s.b[s.i:], []byte(w)) {
			s.i += len(w)
			return true
		}
	}
	return false
}

// number consumes a JSON number and returns its text.
func (s *scanner) number() ([]byte, bool) {
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			s.i++
			continue
		}
		break
	}
	return s.b[start:s.i], s.i > start
}

// skip consumes one value of any kind, iteratively.
func (s *scanner) skip() bool {
	depth := 0
	for {
		c := s.peek()
		switch {
		case c == '"':
			if _, ok := s.str(); !ok {
				return false
			}
		case c == '{' || c == '[':
			depth++
			s.i++
			continue
		case c == '}' || c == ']':
			if depth == 0 {
				return false
			}
			depth--
			s.i++
		case c == 't' || c == 'f' || c == 'n':
			if !s.literal() {
				return false
			}
		case c == '-' || (c >= '0' && c <= '9'):
			s.number()
		default:
			return false
		}
		if depth == 0 {
			return true
		}
		// Inside a container: a separator, a key's colon or a closer follows.
		switch s.peek() {
		case ',', ':':
			s.i++
		case '}', ']':
		default:
			return false
		}
	}
}

// object walks an object's members; fn is called with each key positioned
// at the value and must consume it.
func (s *scanner) object(fn func(key []byte) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return false
		}
		if !fn(key) {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// array walks an array; fn is called positioned at each element and must
// consume it.
func (s *scanner) array(fn func() bool) bool {
	if !s.consume('[') {
		return false
	}
	if s.consume(']') {
		return true
	}
	for {
		if !fn() {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume(']')
	}
}

// span consumes one value and returns its raw text.
func (s *scanner) span() ([]byte, bool) {
	s.ws()
	start := s.i
	if !s.skip() {
		return nil, false
	}
	return s.b[start:s.i], true
}

// int64Value reads a number (integers, or floats truncated) or null as 0.
func (s *scanner) int64Value() (int64, bool) {
	c := s.peek()
	if c == 'n' {
		return 0, s.literal()
	}
	num, ok := s.number()
	if !ok {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f < -9.2e18 || f > 9.2e18 {
		return 0, false
	}
	return int64(f), true
}

// boolValue reads true, false or null (false).
func (s *scanner) boolValue() (bool, bool) {
	switch s.peek() {
	case 't':
		return true, s.literal()
	case 'f', 'n':
		return false, s.literal()
	}
	return false, false
}

// appendUnescaped appends the unescaped form of a raw JSON string to dst,
// stopping once dst has grown by limit bytes (limit < 0: no limit). The
// result may end mid-rune at the limit, exactly like slicing the full text.
// Runs without escapes are copied whole; a prompt escapes a character every
// few dozen bytes (newlines, quotes), so the per-escape step is kept short.
func appendUnescaped(dst, raw []byte, limit int) ([]byte, bool) {
	room := limit
	if room < 0 {
		room = math.MaxInt
	}
	for len(raw) > 0 && room > 0 {
		j := bytes.IndexByte(raw, '\\')
		if j < 0 {
			j = len(raw)
		}
		if j > 0 {
			n := min(j, room)
			dst = append(dst, raw[:n]...)
			room -= n
			raw = raw[j:]
			continue
		}
		if len(raw) < 2 {
			return dst, false
		}
		var c byte
		switch raw[1] {
		case '"', '\\', '/':
			c = raw[1]
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			r, n, ok := hexRune(raw)
			if !ok {
				return dst, false
			}
			raw = raw[n:]
			var tmp [utf8.UTFMax]byte
			out := tmp[:utf8.EncodeRune(tmp[:], r)]
			out = out[:min(len(out), room)]
			dst = append(dst, out...)
			room -= len(out)
			continue
		default:
			return dst, false
		}
		dst = append(dst, c)
		room--
		raw = raw[2:]
	}
	return dst, true
}

// hexRune decodes \uXXXX (and a following low surrogate) at the start of raw.
func hexRune(raw []byte) (rune, int, bool) {
	r1, ok := hex4(raw)
	if !ok {
		return 0, 0, false
	}
	if r1 >= 0xD800 && r1 < 0xDC00 {
		if len(raw) >= 12 && raw[6] == '\\' && raw[7] == 'u' {
			if r2, ok := hex4(raw[6:]); ok && r2 >= 0xDC00 && r2 < 0xE000 {
				return (r1-0xD800)<<10 | (r2 - 0xDC00) + 0x10000, 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	if r1 >= 0xDC00 && r1 < 0xE000 {
		return utf8.RuneError, 6, true
	}
	return r1, 6, true
}

func hex4(raw []byte) (rune, bool) {
	if len(raw) < 6 {
		return 0, false
	}
	var r rune
	for _, c := range raw[2:6] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
