package standin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// adminHandler serves the few admin endpoints tests use, in the shapes
// Envoy's admin uses, so the same test code works against real Envoy:
// /ready ("LIVE" once initialized) and /clusters (text, or
// ?format=json).
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
			fmt.Fprintln(w, "LIVE")
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "INITIALIZING")
		}
	})
	mux.HandleFunc("/clusters", func(w http.ResponseWriter, r *http.Request) {
		type sockAddr struct {
			Address   string `json:"address"`
			PortValue int    `json:"port_value"`
		}
		type hostStatus struct {
			Address struct {
				SocketAddress sockAddr `json:"socket_address"`
			} `json:"address"`
			HealthStatus struct {
				EDSHealthStatus string `json:"eds_health_status"`
			} `json:"health_status"`
			Priority uint32 `json:"priority,omitempty"`
		}
		type clusterStatus struct {
			Name         string       `json:"name"`
			AddedViaAPI  bool         `json:"added_via_api,omitempty"`
			HostStatuses []hostStatus `json:"host_statuses"`
		}
		var out []clusterStatus
		for _, name := range sortedKeys(keysOf(s.cfg.Static)) {
			sc := s.cfg.Static[name]
			hs := hostStatus{}
			host, port, _ := net.SplitHostPort(sc.Addr)
			hs.Address.SocketAddress = sockAddr{host, atoi(port)}
			hs.HealthStatus.EDSHealthStatus = "HEALTHY"
			out = append(out, clusterStatus{Name: name, HostStatuses: []hostStatus{hs}})
		}
		s.fleet.mu.RLock()
		names := sortedKeys(keysOf(s.fleet.clusters))
		s.fleet.mu.RUnlock()
		for _, name := range names {
			cs := clusterStatus{Name: name, AddedViaAPI: true, HostStatuses: []hostStatus{}}
			for _, e := range s.Endpoints(name) {
				hs := hostStatus{Priority: e.Priority}
				host, port, _ := net.SplitHostPort(e.Addr)
				hs.Address.SocketAddress = sockAddr{host, atoi(port)}
				hs.HealthStatus.EDSHealthStatus = e.Health
				cs.HostStatuses = append(cs.HostStatuses, hs)
			}
			out = append(out, cs)
		}
		if r.URL.Query().Get("format") == "json" {
			w.Header().Set("content-type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"cluster_statuses": out})
			return
		}
		w.Header().Set("content-type", "text/plain")
		var lines []string
		for _, c := range out {
			for _, h := range c.HostStatuses {
				flags := "healthy"
				switch h.HealthStatus.EDSHealthStatus {
				case "UNHEALTHY":
					flags = "/failed_eds_health"
				case "DRAINING":
					flags = "/eds_status_draining"
				case "DEGRADED":
					flags = "/degraded_eds_health"
				}
				lines = append(lines, fmt.Sprintf("%s::%s::health_flags::%s", c.Name,
					net.JoinHostPort(h.Address.SocketAddress.Address, strconv.Itoa(h.Address.SocketAddress.PortValue)), flags))
			}
		}
		sort.Strings(lines)
		fmt.Fprint(w, strings.Join(lines, "\n"))
		if len(lines) > 0 {
			fmt.Fprintln(w)
		}
	})
	return mux
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
