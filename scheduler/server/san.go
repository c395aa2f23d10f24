package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// checkSAN ties an advertised address to the agent's client certificate:
// its host must be one of the certificate's IP SANs (or, for a DNS SAN,
// equal to it as written). So a certificate issued for one engine's agent
// cannot register another engine's address.
func checkSAN(ctx context.Context, advertised string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return fmt.Errorf("advertised address %q: no peer information to check the client certificate against", advertised)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return fmt.Errorf("advertised address %q: mTLS is on (tls.client_ca_file) but the agent presented no client certificate", advertised)
	}
	return sanAllows(ti.State.PeerCertificates[0], advertised)
}

// sanAllows reports whether cert names the advertised address's host.
func sanAllows(cert *x509.Certificate, advertised string) error {
	host, _, err := net.SplitHostPort(advertised)
	if err != nil {
		return fmt.Errorf("advertised address %q: want ip:port", advertised)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		for _, san := range cert.IPAddresses {
			if a, ok := netip.AddrFromSlice(san); ok && a.Unmap() == ip {
				return nil
			}
		}
	}
	for _, name := range cert.DNSNames {
		if strings.EqualFold(name, host) {
			return nil
		}
	}
	return fmt.Errorf("advertised host %s is not among the agent certificate's SANs (IP %v, DNS %v): issue the agent a certificate naming the engine's IP",
		host, cert.IPAddresses, cert.DNSNames)
}
