package prefixindex

import (
	"sync"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
)

// Every index built with the same Registerer (pd-split builds two policies,
// each may own one) is summed into one set of series, so adding an index
// never collides with a registered name. Indexes are held weakly: a policy
// that is dropped stops being counted without a Close.
type collector struct {
	mu      sync.Mutex
	indexes []weak.Pointer[Index]

	blocks, pairs, bytes *prometheus.Desc
}

var (
	collectorsMu sync.Mutex
	collectors   = map[prometheus.Registerer]*collector{}
)

// Register exports x's size on reg (nil: not exported) as
// llmrouter_prefix_index_blocks, llmrouter_prefix_index_pairs and
// llmrouter_prefix_index_bytes, summed with other indexes on reg.
func Register(reg prometheus.Registerer, x *Index) error {
	if reg == nil {
		return nil
	}
	collectorsMu.Lock()
	defer collectorsMu.Unlock()
	c, ok := collectors[reg]
	if !ok {
		c = &collector{
			blocks: prometheus.NewDesc("llmrouter_prefix_index_blocks", "Distinct prompt blocks in the scheduler's prefix index.", nil, nil),
			pairs:  prometheus.NewDesc("llmrouter_prefix_index_pairs", "(block, instance) pairs in the prefix index: blocks counted once per instance believed to hold them.", nil, nil),
			bytes:  prometheus.NewDesc("llmrouter_prefix_index_bytes", "Estimated memory of the prefix index in bytes.", nil, nil),
		}
		if err := reg.Register(c); err != nil {
			return err
		}
		collectors[reg] = c
	}
	c.mu.Lock()
	c.indexes = append(c.indexes, weak.Make(x))
	c.mu.Unlock()
	return nil
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.blocks
	ch <- c.pairs
	ch <- c.bytes
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	var blocks, pairs, bytes int64
	c.mu.Lock()
	live := c.indexes[:0]
	for _, w := range c.indexes {
		if x := w.Value(); x != nil {
			blocks += x.Blocks()
			pairs += x.Pairs()
			bytes += x.Bytes()
			live = append(live, w)
		}
	}
	clear(c.indexes[len(live):])
	c.indexes = live
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.blocks, prometheus.GaugeValue, float64(blocks))
	ch <- prometheus.MustNewConstMetric(c.pairs, prometheus.GaugeValue, float64(pairs))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(bytes))
}
