package scheduler

import (
	"slices"
	"strings"
)

// engineSGLang is the registration's engine name of an SGLang instance.
const engineSGLang = "sglang"

// sglangName is a pool reached by SGLang's "base:adapter" model syntax
// (SGLang since late 2025, sgl-project/sglang#11570: the adapter rides in
// the model field, split at the first colon, both halves trimmed of
// spaces). No instance serves its name literally; the SGLang instances
// serving base model base and LoRA adapter adapter do. vLLM and the other
// engines would answer such a name 404, so they are never among its
// instances.
type sglangName struct{ base, adapter string }

// maxSGLangNames bounds the base:adapter names one instance adds: its base
// models times its adapters, which a registration could make large (an
// engine serves one base model or a few, and its adapters are rarely more
// than hundreds). Past it the instance's remaining pairs are not routed by
// that syntax.
const maxSGLangNames = 4096

// splitSGLang splits model as SGLang does: at the first colon, both halves
// trimmed. ok is false without a colon or with an empty half (SGLang reads
// "base:" as the base model alone; such a name is not routed as an adapter
// here).
func splitSGLang(model string) (base, adapter string, ok bool) {
	b, a, found := strings.Cut(model, ":")
	if !found {
		return "", "", false
	}
	b, a = strings.TrimSpace(b), strings.TrimSpace(a)
	return b, a, b != "" && a != ""
}

// addSGLangPools adds to pools, which holds every model served by its
// literal name, a pool "base:adapter" for each base model and adapter an
// SGLang instance serves, unless that name is served literally (model
// names may hold colons, e.g. llama3:8b, and keep their meaning). It
// returns the names it added. Names SGLang could not split back into the
// same halves (a base model holding a colon, a name with outer spaces) are
// not added: a request naming them reaches SGLang as another base or
// adapter.
func (s *Scheduler) addSGLangPools(pools map[string][]*inst) map[string]sglangName {
	var names map[string]sglangName
	literal := func(name string) bool {
		_, ok := pools[name]
		_, added := names[name]
		return ok && !added
	}
	for _, in := range s.insts {
		if in.view.Engine != engineSGLang || len(in.adapters) == 0 {
			continue
		}
		added := 0
		for _, b := range in.view.Models {
			for _, a := range in.adapters {
				if added == maxSGLangNames {
					break
				}
				name := b + ":" + a
				if slices.Contains(in.view.Models, a) || literal(name) {
					continue
				}
				if sb, sa, ok := splitSGLang(name); !ok || sb != b || sa != a {
					continue
				}
				if names == nil {
					names = make(map[string]sglangName)
				}
				names[name] = sglangName{base: b, adapter: a}
				pools[name] = append(pools[name], in)
				added++
			}
		}
	}
	return names
}

// resolveSGLang finds the pool of a model no instance serves literally
// when it is SGLang's "base:adapter" naming an adapter SGLang instances
// serve (spaces around either half allowed, as SGLang trims them). Only
// requests for names nobody serves literally get here: the common pick
// splits nothing.
func (s *Scheduler) resolveSGLang(model string) (pool string, n sglangName, ok bool) {
	if len(s.sglang) == 0 {
		return "", sglangName{}, false
	}
	b, a, ok := splitSGLang(model)
	if !ok {
		return "", sglangName{}, false
	}
	pool = b + ":" + a
	n, ok = s.sglang[pool]
	return pool, n, ok
}

// resolveLoRAPath finds the pool of SGLang's older form of asking for an
// adapter: model a base model, lora_path the adapter. SGLang takes the
// adapter from the model field when it holds a colon, so lora_path counts
// only without one. ok is false when no SGLang instance serves the pair:
// the request is then routed by model alone, as before lora_path was read
// (vLLM ignores the field and serves the base model).
func (s *Scheduler) resolveLoRAPath(model, loraPath string) (pool string, n sglangName, ok bool) {
	if loraPath == "" || len(s.sglang) == 0 || strings.Contains(model, ":") {
		return "", sglangName{}, false
	}
	pool = model + ":" + loraPath
	n, ok = s.sglang[pool]
	return pool, n, ok
}

// servesSGLang reports whether pool is an SGLang "base:adapter" pool
// (rebuildPools) in serves. Asked only of an instance not serving pool by
// name.
func (s *Scheduler) servesSGLang(in *inst, pool string) bool {
	n, ok := s.sglang[pool]
	return ok && in.view.Engine == engineSGLang && slices.Contains(in.view.Models, n.base) && slices.Contains(in.adapters, n.adapter)
}
