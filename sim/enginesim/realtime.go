package enginesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// realtimeRequest is one generation asked over /v1/realtime: a chat
// (messages) or a plain prompt, with the same fields as the HTTP API.
type realtimeRequest struct {
	genRequest
	// ID is echoed in every reply so a client can match them.
	ID string `json:"id"`
}

// realtimeMessage is every message the server sends: "token" (one output
// token), "done" (the request finished; usage), or "error".
type realtimeMessage struct {
	Type         string       `json:"type"`
	ID           string       `json:"id,omitempty"`
	Index        *int         `json:"index,omitempty"`
	Text         string       `json:"text,omitempty"`
	FinishReason string       `json:"finish_reason,omitempty"`
	Usage        *usage       `json:"usage,omitempty"`
	Error        *errorDetail `json:"error,omitempty"`
}

// handleRealtime serves one WebSocket connection: requests are handled one
// at a time, in order; each streams its tokens and then a done message. Bad
// input gets an error message and the connection stays open.
func (s *Server) handleRealtime(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(s.opts.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	// One reader: it also processes the close handshake while a request
	// streams, and ends ctx when the client goes away. Capacity 1 bounds the
	// requests read ahead.
	msgs := make(chan []byte, 1)
	go func() {
		defer cancel()
		defer close(msgs)
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				data = nil
			}
			select {
			case msgs <- data:
			case <-ctx.Done():
				return
			}
		}
	}()

	send := func(m realtimeMessage) error {
		b, _ := json.Marshal(m)
		return c.Write(ctx, websocket.MessageText, b)
	}
	sendErr := func(id string, status int, typ, msg string) error {
		return send(realtimeMessage{Type: "error", ID: id, Error: &errorDetail{Message: msg, Type: typ, Code: status}})
	}
	for data := range msgs {
		if data == nil {
			if sendErr("", http.StatusBadRequest, "BadRequestError", "want a JSON text message") != nil {
				return
			}
			continue
		}
		var req realtimeRequest
		if err := json.Unmarshal(data, &req); err != nil {
			if sendErr("", http.StatusBadRequest, "BadRequestError", fmt.Sprintf("malformed JSON message: %v", err)) != nil {
				return
			}
			continue
		}
		kind := apiChat
		if len(req.Messages) == 0 {
			kind = apiCompletion
		}
		req.Stream, req.StreamOptions = true, nil
		p, e := s.prepare(kind, &req.genRequest)
		if e != nil {
			if sendErr(req.ID, e.status, e.typ, e.msg) != nil {
				return
			}
			continue
		}
		if err := s.realtimeGenerate(ctx, req.ID, kind, p, send, sendErr); err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.Debug("realtime connection ended", zap.Error(err))
			}
			return
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}

// realtimeGenerate runs one request, streaming its tokens; an error ends the
// connection.
func (s *Server) realtimeGenerate(ctx context.Context, id string, kind apiKind, p *prepared,
	send func(realtimeMessage) error, sendErr func(string, int, string, string) error) error {
	st := s.newState(p, kind)
	if e := s.checkLength(st); e != nil {
		return sendErr(id, e.status, e.typ, e.msg)
	}
	if err := s.enqueue(ctx, st); err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			s.cancel(st.id)
		}
	}()
	seed := uint64(s.opts.Seed)
	sent := 0
	for {
		if !s.await(ctx, st) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errStopped
		}
		v := st.view()
		if v.err != nil {
			finished = !v.accepted
			if finished {
				// Refused by the engine (too large): the connection lives on.
				return sendErr(id, http.StatusBadRequest, "BadRequestError", v.err.Error())
			}
			return v.err
		}
		for ; sent < v.tokens; sent++ {
			i := sent
			if err := send(realtimeMessage{Type: "token", ID: id, Index: &i, Text: token(seed, sent)}); err != nil {
				return err
			}
		}
		if v.done {
			finished = true
			return send(realtimeMessage{Type: "done", ID: id, FinishReason: p.finishReason, Usage: mkUsage(st.req.PromptTokens, sent)})
		}
	}
}
