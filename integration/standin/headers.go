package standin

import (
	"errors"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// header is one header entry, name lower-cased like Envoy's header maps.
type header struct{ k, v string }

// headerList keeps order and repeats, as Envoy's header map does; request
// pseudo-headers (:method, :path, :authority, :scheme) and :status live in it.
type headerList []header

func (h headerList) get(k string) (string, bool) {
	for _, e := range h {
		if e.k == k {
			return e.v, true
		}
	}
	return "", false
}

func (h headerList) has(k string) bool { _, ok := h.get(k); return ok }

func (h *headerList) del(k string) {
	out := (*h)[:0]
	for _, e := range *h {
		if e.k != k {
			out = append(out, e)
		}
	}
	*h = out
}

func (h *headerList) set(k, v string) {
	for i, e := range *h {
		if e.k == k {
			(*h)[i].v = v
			rest := (*h)[i+1:]
			rest.delAll(k)
			*h = append((*h)[:i+1], rest...)
			return
		}
	}
	*h = append(*h, header{k, v})
}

func (h *headerList) delAll(k string) { h.del(k) }

func (h *headerList) add(k, v string) { *h = append(*h, header{k, v}) }

// toProto encodes the headers the way current Envoy sends them: raw_value
// only (runtime guard send_header_raw_value, on by default).
func (h headerList) toProto() *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, e := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: e.k, RawValue: []byte(e.v)})
	}
	return m
}

// validHeaderName/Value follow Envoy's header_utility checks (RFC 7230 token
// names; values without NUL, CR or LF).
func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if i == 0 && c == ':' {
			continue
		}
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\x00\r\n")
}

// mutationAllowed applies ext_proc's default header mutation rules (no
// mutation_rules configured): host, :authority, :scheme and :method may not
// be changed (:method may with CONTINUE_AND_REPLACE), nor any x-envoy-*
// header; removing any pseudo-header or host is ignored. Disallowed
// mutations are ignored, not errors.
func mutationAllowed(name string, remove, replacing bool) bool {
	if strings.HasPrefix(name, "x-envoy-") || name == "x-envoy" {
		return false
	}
	if remove {
		return !strings.HasPrefix(name, ":") && name != "host"
	}
	switch name {
	case "host", ":authority", ":scheme":
		return false
	case ":method":
		return replacing
	}
	return true
}

var errMutation = errors.New("invalid header mutation")

// applyMutation applies a HeaderMutation as Envoy's ext_proc does: header
// values are read from raw_value (a mutation setting only value yields an
// empty header, envoy#31555); an unset append means overwrite; invalid names
// or values fail the whole message (a stream error for the filter).
func applyMutation(h *headerList, m *extprocsvc.HeaderMutation, replacing bool) (rejected int, err error) {
	if m == nil {
		return 0, nil
	}
	for _, r := range m.GetRemoveHeaders() {
		if !validHeaderName(r) {
			return rejected, errMutation
		}
		n := strings.ToLower(r)
		if !mutationAllowed(n, true, replacing) {
			rejected++
			continue
		}
		h.del(n)
	}
	for _, sh := range m.GetSetHeaders() {
		hv := sh.GetHeader()
		if hv == nil {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return rejected, errors.New("only one of value or raw_value may be set")
		}
		v := string(hv.GetRawValue())
		if !validHeaderName(hv.GetKey()) || !validHeaderValue(v) {
			return rejected, errMutation
		}
		n := strings.ToLower(hv.GetKey())
		if !mutationAllowed(n, false, replacing) {
			rejected++
			continue
		}
		_, exists := h.get(n)
		switch sh.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			// The zero value: Envoy falls back to the append flag,
			// which defaults to false in ext_proc mutations.
			//lint:ignore SA1019 Envoy's ext_proc still reads the deprecated append flag
			if sh.GetAppend() != nil && sh.GetAppend().GetValue() {
				h.add(n, v)
			} else {
				h.set(n, v)
			}
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h.add(n, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.set(n, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h.set(n, v)
			}
		default:
			return rejected, errors.New("invalid append_action")
		}
	}
	return rejected, nil
}
