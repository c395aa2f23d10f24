package servetest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreeAddr returns a loopback address nothing listens on, for a server a test
// starts later (or never) at a known address. Its port lies below the
// kernel's ephemeral range: a port taken from :0 and released can be handed
// out again to any other test's :0 listener or outgoing connection before the
// test rebinds it, and a client dialling a closed ephemeral port can even
// connect to itself (TCP simultaneous open) and hold it. Both happened in CI.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use; try another
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	t.Fatalf("no free loopback port in 10000-%d after 200 tries", low)
	return ""
}

// ephemeralLow is the first port the kernel hands out for :0 and outgoing
// connections (Linux's default when the setting cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > 11000 {
			low = lo
		}
	}
	return low
}
