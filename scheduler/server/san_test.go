package server

import (
	"crypto/x509"
	"net"
	"testing"
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
