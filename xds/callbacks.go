package xds

import (
	"context"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
)

// sent is the last response of one type on one stream.
type sent struct {
	nonce, version string
}

// callbacks observe every stream: metrics, NACK handling, logs.
type callbacks struct {
	log       *zap.Logger
	m         *metrics
	edsPrefix string

	mu    sync.Mutex
	last  map[int64]map[string]sent // stream → type URL → last response
	nodes map[int64]string          // stream → node id
	// updates holds when recent EDS versions entered the cache (bounded).
	updates map[string]time.Time
	order   []string
}

// maxTrackedUpdates bounds the version → time map for push latency.
const maxTrackedUpdates = 64

func newCallbacks(log *zap.Logger, m *metrics, edsPrefix string) *callbacks {
	return &callbacks{
		log: log, m: m, edsPrefix: edsPrefix,
		last:    map[int64]map[string]sent{},
		nodes:   map[int64]string{},
		updates: map[string]time.Time{},
	}
}

func (c *callbacks) updated(version string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updates[version] = at
	c.order = append(c.order, version)
	if len(c.order) > maxTrackedUpdates {
		delete(c.updates, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *callbacks) opened(id int64, kind string) {
	c.m.clients.Inc()
	c.log.Debug("xds stream opened", zap.Int64("stream", id), zap.String("protocol", kind))
}

func (c *callbacks) closed(id int64, node *corev3.Node, kind string) {
	c.m.clients.Dec()
	c.mu.Lock()
	delete(c.last, id)
	delete(c.nodes, id)
	c.mu.Unlock()
	c.log.Info("xds client disconnected", zap.Int64("stream", id), zap.String("node", node.GetId()), zap.String("protocol", kind))
}

func (c *callbacks) seen(id int64, node *corev3.Node, kind string) {
	if node.GetId() == "" {
		return
	}
	c.mu.Lock()
	_, known := c.nodes[id]
	c.nodes[id] = node.GetId()
	c.mu.Unlock()
	if !known {
		c.log.Info("xds client connected", zap.Int64("stream", id), zap.String("node", node.GetId()),
			zap.String("node_cluster", node.GetCluster()), zap.String("protocol", kind))
	}
}

func (c *callbacks) nack(id int64, typeURL, version, nonce, detail string) {
	c.m.nacks.WithLabelValues(typeURL).Inc()
	c.mu.Lock()
	node := c.nodes[id]
	c.mu.Unlock()
	c.log.Warn("xds NACK: client rejected our resources", zap.Int64("stream", id), zap.String("node", node),
		zap.String("type_url", typeURL), zap.String("accepted_version", version), zap.String("nonce", nonce),
		zap.String("error_detail", detail))
}

func (c *callbacks) observePush(typeURL, version string) {
	c.m.pushes.WithLabelValues(typeURL).Inc()
	if !strings.HasPrefix(version, c.edsPrefix) {
		return
	}
	c.mu.Lock()
	at, ok := c.updates[version]
	c.mu.Unlock()
	if ok {
		c.m.pushLatency.Observe(time.Since(at).Seconds())
	}
}

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, _ string) error {
	c.opened(id, "sotw")
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, node *corev3.Node) { c.closed(id, node, "sotw") }

// OnStreamRequest logs and counts NACKs, and keeps a NACK of a type's first
// response from looping: such a NACK carries no version (the client has
// accepted none), which the linear cache reads as a fresh subscription and
// answers at once with the same rejected resources — forever. Giving the
// request the version it rejects tells the cache the client has seen it, so
// the next response waits for a real change.
func (c *callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	c.seen(id, req.GetNode(), "sotw")
	if req.GetErrorDetail() == nil {
		return nil
	}
	c.nack(id, req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
	if req.GetVersionInfo() == "" {
		c.mu.Lock()
		s, ok := c.last[id][req.GetTypeUrl()]
		c.mu.Unlock()
		if ok && s.nonce == req.GetResponseNonce() {
			req.VersionInfo = s.version
		}
	}
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.mu.Lock()
	m := c.last[id]
	if m == nil {
		m = map[string]sent{}
		c.last[id] = m
	}
	m[req.GetTypeUrl()] = sent{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	c.mu.Unlock()
	c.observePush(req.GetTypeUrl(), resp.GetVersionInfo())
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	c.opened(id, "delta")
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) { c.closed(id, node, "delta") }

// OnStreamDeltaRequest logs and counts NACKs. Delta needs no help against
// loops: the server records what it sent before the client answers, so a
// NACK finds nothing new to send.
func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	c.seen(id, req.GetNode(), "delta")
	if req.GetErrorDetail() != nil {
		c.nack(id, req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(_ int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.observePush(req.GetTypeUrl(), resp.GetSystemVersionInfo())
}

func (c *callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error { return nil }

func (c *callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}
