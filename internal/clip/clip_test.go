package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestInput(t *testing.T) {
	short := strings.Repeat("m", MaxInput)
	if got := Input(short); got != short {
		t.Fatalf("Input(%d bytes) = %q, want it unchanged", len(short), got)
	}
	long := strings.Repeat("m", 1<<20)
	if got, want := Input(long), strings.Repeat("m", MaxInput)+Ellipsis; got != want {
		t.Fatalf("Input(1 MiB) = %d bytes %q, want %q", len(got), got[:min(len(got), 80)], want)
	}
	// A multi-byte rune straddling the cut is dropped whole.
	s := strings.Repeat("a", MaxInput-1) + "é" + strings.Repeat("b", 10)
	got := Input(s)
	if !utf8.ValidString(got) || got != strings.Repeat("a", MaxInput-1)+Ellipsis {
		t.Fatalf("Input cut a rune: %q", got)
	}
	if got := Prefix(long, 1024); len(got) != 1024+len(Ellipsis) {
		t.Fatalf("Prefix(1 MiB, 1024) is %d bytes", len(got))
	}
}
