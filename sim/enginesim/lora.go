package enginesim

import (
	"fmt"
	"maps"
	"net/http"

	"go.uber.org/zap"
)

// maxLoRAs bounds the adapters loaded at runtime: a client cannot grow the
// simulator's maps (and /v1/models) without end.
const maxLoRAs = 1024

// maxLoRABody bounds a load or unload request's body.
const maxLoRABody = 64 << 10

// servedLoRAs is the set of adapters served now; read-only.
func (s *Server) servedLoRAs() map[string]bool { return *s.loras.Load() }

// loraRequest is the body of vLLM's /v1/load_lora_adapter and
// /v1/unload_lora_adapter.
type loraRequest struct {
	Name string `json:"lora_name"`
	Path string `json:"lora_path"`
}

// handleLoadLoRA is vLLM's POST /v1/load_lora_adapter: the adapter is
// served under lora_name from now on (listed by /v1/models with the base
// model as parent, accepted as a request's model). vLLM answers plain text
// on success and 400 for a name already loaded.
func (s *Server) handleLoadLoRA(w http.ResponseWriter, r *http.Request) {
	var req loraRequest
	if e := decode(w, r, maxLoRABody, &req); e != nil {
		writeError(w, e.status, e.typ, e.msg)
		return
	}
	if req.Name == "" || req.Path == "" {
		writeError(w, http.StatusBadRequest, "BadRequestError", "Both 'lora_name' and 'lora_path' must be provided.")
		return
	}
	s.loraMu.Lock()
	defer s.loraMu.Unlock()
	cur := s.servedLoRAs()
	switch {
	case cur[req.Name] || req.Name == s.opts.Model:
		writeError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf("The lora adapter '%s' has already been loaded.", req.Name))
		return
	case len(cur) >= maxLoRAs:
		writeError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf("%d LoRA adapters are loaded, the most this simulator serves; unload one first.", maxLoRAs))
		return
	}
	next := maps.Clone(cur)
	next[req.Name] = true
	s.loras.Store(&next)
	s.log.Info("enginesim: LoRA adapter loaded", zap.String("lora_name", req.Name))
	fmt.Fprintf(w, "Success: LoRA adapter '%s' added successfully.", req.Name)
}

// handleUnloadLoRA is vLLM's POST /v1/unload_lora_adapter: 404 for a name
// not loaded.
func (s *Server) handleUnloadLoRA(w http.ResponseWriter, r *http.Request) {
	var req loraRequest
	if e := decode(w, r, maxLoRABody, &req); e != nil {
		writeError(w, e.status, e.typ, e.msg)
		return
	}
	s.loraMu.Lock()
	defer s.loraMu.Unlock()
	cur := s.servedLoRAs()
	if !cur[req.Name] {
		writeError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("The lora adapter '%s' cannot be found.", req.Name))
		return
	}
	next := maps.Clone(cur)
	delete(next, req.Name)
	s.loras.Store(&next)
	s.log.Info("enginesim: LoRA adapter unloaded", zap.String("lora_name", req.Name))
	fmt.Fprintf(w, "Success: LoRA adapter '%s' removed successfully.", req.Name)
}
