package clip

import "unicode/utf8"

// MaxInput is how many bytes of client input an error message may echo.
const MaxInput = 64

// Ellipsis marks a cut.
const Ellipsis = "…"

// Input returns s when it is at most MaxInput bytes long, else its first
// MaxInput bytes (cut back to a rune boundary, so the result stays valid
// UTF-8 when s was) followed by Ellipsis.
func Input(s string) string { return Prefix(s, MaxInput) }

// Prefix is Input with a bound of max bytes, for text that mixes client
// input with the server's own (a whole error message).
func Prefix(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + Ellipsis
}
