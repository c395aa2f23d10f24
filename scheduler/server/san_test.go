package server

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// With mTLS the advertised host must be one of the agent certificate's
// SANs: an IP SAN, or a DNS SAN written as the host.
func TestSANAllows(t *testing.T) {
	cert := &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("fd00::5")}, DNSNames: []string{"engine-5.local"}}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"10.0.0.5:8000", true},
		{"[::ffff:10.0.0.5]:8000", true},
		{"[fd00::5]:8000", true},
		{"10.0.0.6:8000", false},
		{"127.0.0.1:8999", false},
		{"engine-5.local:8000", true},
		{"engine-6.local:8000", false},
		{"10.0.0.5", false},
	} {
		if err := sanAllows(cert, tc.addr); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}

// A refused registration is logged once per address and reason per
// refusalLogEvery, with the count of those suppressed in between.
func TestRegistrationRefusalsLimited(t *testing.T) {
	var r registrationRefusals
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, _ := r.log("10.0.0.1:80", "taken", now); !ok {
		t.Fatal("first refusal not logged")
	}
	for i := range 5 {
		if ok, _ := r.log("10.0.0.1:80", "taken", now.Add(time.Duration(i+1)*time.Second)); ok {
			t.Fatal("a repeated refusal was logged again within refusalLogEvery")
		}
	}
	if ok, _ := r.log("10.0.0.2:80", "taken", now); !ok {
		t.Fatal("another address's refusal not logged")
	}
	if ok, n := r.log("10.0.0.1:80", "taken", now.Add(refusalLogEvery)); !ok || n != 5 {
		t.Fatalf("after refusalLogEvery: logged %v, suppressed %d, want true, 5", ok, n)
	}
}
