package enginesim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

func notFound(model string) *apiError {
	return &apiError{status: http.StatusNotFound, typ: "NotFoundError", msg: fmt.Sprintf("The model `%s` does not exist.", model)}
}

// sglangAdapter is how SGLang reads the adapter a request asks for (since
// late 2025, sgl-project/sglang#11570): "model": "base:adapter", split at
// the first colon, both halves trimmed, an empty adapter half being none;
// else the older lora_path body field (a string; SGLang's per-prompt list
// is not simulated). The adapter in the model field wins. The base half
// must be the served model (404 otherwise, as SGLang answers a model it
// does not serve) and the adapter one this server serves (400 otherwise).
// A model without a colon is the base model or an adapter by its own name,
// as before. It returns the adapter, "" for the base model alone.
func (s *Server) sglangAdapter(model string, loraPath json.RawMessage) (string, *apiError) {
	loras := s.servedLoRAs()
	base, adapter, colon := strings.Cut(model, ":")
	if colon {
		base, adapter = strings.TrimSpace(base), strings.TrimSpace(adapter)
		if base != s.opts.Model {
			return "", notFound(model)
		}
	} else if model != s.opts.Model && !loras[model] {
		return "", notFound(model)
	}
	if adapter == "" && len(loraPath) > 0 && string(loraPath) != "null" {
		if err := json.Unmarshal(loraPath, &adapter); err != nil {
			return "", badRequest("lora_path: want a string naming a loaded LoRA adapter")
		}
	}
	if adapter != "" && !loras[adapter] {
		return "", badRequest("LoRA adapter `%s` is not loaded; loaded adapters: %s", adapter, strings.Join(sortedKeys(loras), ", "))
	}
	return adapter, nil
}
