package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// AdminHandler serves the operator endpoints, mounted under /admin/ on the
// scheduler's HTTP port:
//
//	POST /admin/drain?instance=ip:port    stop new picks; in-flight requests finish
//	POST /admin/resume?instance=ip:port   undo a drain
//	GET  /admin/instances                 the fleet as JSON (Instance)
//
// With a token configured every call needs "Authorization: Bearer <token>".
func AdminHandler(sch *scheduler.Scheduler, token string, previous ...string) http.Handler {
	mux := http.NewServeMux()
	setDrain := func(drain bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.URL.Query().Get("instance")
			if id == "" {
				http.Error(w, "missing ?instance=ip:port", http.StatusBadRequest)
				return
			}
			reason := "admin request"
			if rs := r.URL.Query().Get("reason"); rs != "" {
				reason = rs
			}
			var err error
			if drain {
				err = sch.Drain(id, reason)
			} else {
				err = sch.Resume(id, reason)
			}
			if errors.Is(err, registry.ErrUnknown) {
				http.Error(w, "no registered instance "+id, http.StatusNotFound)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			inst, _ := sch.Registry().Get(id)
			writeJSON(w, instanceJSON(inst))
		}
	}
	mux.HandleFunc("POST /admin/drain", setDrain(true))
	mux.HandleFunc("POST /admin/resume", setDrain(false))
	mux.HandleFunc("GET /admin/instances", func(w http.ResponseWriter, _ *http.Request) {
		list := sch.Registry().List()
		out := make([]Instance, len(list))
		for i, in := range list {
			out[i] = instanceJSON(in)
		}
		writeJSON(w, out)
	})
	if token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !grpcx.TokenMatches(got, append([]string{token}, previous...)) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "missing or invalid token (Authorization: Bearer $LLMROUTER_TOKEN)", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
