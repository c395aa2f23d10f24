package sessionkey

import (
	"strings"
	"testing"
)

func TestDigest(t *testing.T) {
	if Digest("") != "" {
		t.Fatal("empty key must stay empty (no session)")
	}
	a, b := Digest("alice"), Digest("bob")
	if a == b || a != Digest("alice") {
		t.Fatalf("digest not a function of the key: %q %q", a, b)
	}
	huge := strings.Repeat("k", 1<<20)
	for _, d := range []string{a, b, Digest(huge)} {
		if len(d) != DigestLen || !strings.HasPrefix(d, prefix) {
			t.Fatalf("digest %q: want %d bytes starting %q", d, DigestLen, prefix)
		}
		if Bound(d) != d {
			t.Fatalf("Bound changed a digest: %q", d)
		}
	}
	if Digest(huge) == Digest(huge[1:]) {
		t.Fatal("distinct long keys share a digest")
	}
}

func TestBound(t *testing.T) {
	short := strings.Repeat("s", MaxLen)
	if Bound(short) != short {
		t.Fatal("a key of MaxLen bytes must be kept as is")
	}
	long := short + "x"
	if got := Bound(long); got != Digest(long) || len(got) > MaxLen {
		t.Fatalf("Bound(%d bytes) = %q", len(long), got)
	}
}
