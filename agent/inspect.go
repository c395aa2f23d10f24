package agent

import (
	"encoding/json"
	"fmt"
	"strings"
)

// InspectReport is what `llmrouter agent inspect` prints: exactly these keys,
// null where the metrics do not say.
type InspectReport struct {
	Engine                string   `json:"engine"`
	Running               *float64 `json:"running"`
	Waiting               *float64 `json:"waiting"`
	KVCacheUsage          *float64 `json:"kv_cache_usage"`
	PromptTokensTotal     *float64 `json:"prompt_tokens_total"`
	GenerationTokensTotal *float64 `json:"generation_tokens_total"`
	BlockSize             *int64   `json:"block_size"`
	NumGPUBlocks          *int64   `json:"num_gpu_blocks"`
	Models                []string `json:"models"`
}

// Inspect reads a saved /metrics dump and maps it as the live agent would.
// engine is "auto" (or "") to detect, else an engine name that wins over
// detection.
func Inspect(data []byte, engine string) (InspectReport, error) {
	m, err := Parse(data, "")
	if err != nil {
		return InspectReport{}, fmt.Errorf("metrics file: %w", err)
	}
	if engine == "" || engine == "auto" {
		name, ok := Detect(m)
		if !ok {
			return InspectReport{}, fmt.Errorf("no engine matches these metrics (%s); known engines: %s; name one with --engine",
				sampleNames(m, 3), strings.Join(EngineNames(), ", "))
		}
		engine = name
	}
	a, err := AdapterFor(engine)
	if err != nil {
		return InspectReport{}, fmt.Errorf("--engine: %w (or auto)", err)
	}
	s := a.Extract(m, nil)
	return InspectReport{
		Engine:                a.Name,
		Running:               s.Running,
		Waiting:               s.Waiting,
		KVCacheUsage:          s.KVCacheUsage,
		PromptTokensTotal:     s.PromptTokensTotal,
		GenerationTokensTotal: s.GenerationTokensTotal,
		BlockSize:             s.BlockSize,
		NumGPUBlocks:          s.NumGPUBlocks,
		Models:                s.Models,
	}, nil
}

// InspectJSON is Inspect rendered as one indented JSON object.
func InspectJSON(data []byte, engine string) ([]byte, error) {
	r, err := Inspect(data, engine)
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// sampleNames describes a scrape by a few of its metric names.
func sampleNames(m Metrics, n int) string {
	names := m.Names()
	total := len(names)
	if len(names) > n {
		names = names[:n]
	}
	return fmt.Sprintf("%d metric names, e.g. %s", total, strings.Join(names, ", "))
}
