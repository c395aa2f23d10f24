package config

import "net"

// Loopback reports whether a listen or dial address (host:port) stays on
// this host: a loopback IP or "localhost". An empty host (":9002") listens
// on every interface, so it is not loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidBearerToken reports whether tok can travel in Envoy's
// initial_metadata as "Bearer <tok>" unchanged (see validXDSToken).
func ValidBearerToken(tok string) bool { return validXDSToken(tok) }
