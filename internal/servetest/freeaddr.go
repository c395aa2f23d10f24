package servetest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreeAddr returns a loopback address nothing listens on, for a server a test
// starts later (or never) at a known address. Its port lies outside the
// kernel's ephemeral range: a port taken from :0 and released can be handed
// out again to any other test's :0 listener or outgoing connection before the
// test rebinds it, and a client dialling a closed ephemeral port can even
// connect to itself (TCP simultaneous open) and hold it. Both happened in CI.
func FreeAddr(t testing.TB) string {
	t.Helper()
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	lo, hi := portsOutside(string(b))
	for range 200 {
		port := lo + rand.IntN(hi-lo)
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
	t.Fatalf("no free loopback port in %d-%d after 200 tries", lo, hi-1)
	return ""
}

// portsOutside is the range [lo, hi) of ports FreeAddr picks from, given
// the kernel's ephemeral range (ip_local_port_range, "low high"; Linux's
// default 32768 60999 when unreadable): from 10000 up to it, or when that
// leaves fewer than 1,000 ports (a range set to start low), above it. With
// no room on either side it is 10000-65535, best effort.
func portsOutside(ipLocalPortRange string) (lo, hi int) {
	low, high := 32768, 60999
	var l, h int
	if n, _ := fmt.Sscan(ipLocalPortRange, &l, &h); n == 2 && l > 0 && l <= h && h <= 65535 {
		low, high = l, h
	}
	switch {
	case low-10000 >= 1000:
		return 10000, low
	case 65535-high >= 1000:
		return high + 1, 65536
	}
	return 10000, 65536
}
