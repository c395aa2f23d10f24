package sessionkey

import (
	"crypto/sha256"
	"encoding/hex"
)

// prefix marks a digest, so an operator reading a key can tell.
const prefix = "sk1:"

// DigestLen is the length of every Digest.
const DigestLen = len(prefix) + 32

// MaxLen is the longest key the scheduler keeps as it came; a digest fits.
const MaxLen = 64

// Digest is the fixed-size digest of a raw key: 128 bits of SHA-256, in hex.
// An empty key stays empty (no session).
func Digest(raw string) string {
	if raw == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(raw))
	var out [DigestLen]byte
	copy(out[:], prefix)
	hex.Encode(out[len(prefix):], sum[:16])
	return string(out[:])
}

// Bound returns key unchanged when it is at most MaxLen bytes, else its
// Digest: a key from a client that skipped the gateway's digest (an older
// gateway, a forged one) is bounded all the same, and a digest is stable
// under Bound. Any other client-chosen map key (a request id) is bounded the
// same way.
func Bound(key string) string {
	if len(key) <= MaxLen {
		return key
	}
	return Digest(key)
}
