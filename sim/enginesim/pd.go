package enginesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Roles and APIs a simulated server takes (Options.Role, Options.API).
const (
	RoleBoth    = "both"
	RolePrefill = "prefill"
	RoleDecode  = "decode"
	APIVLLM     = "vllm"
	APISGLang   = "sglang"
)

// pdSide is what a request asks of prefill/decode disaggregation.
type pdSide uint8

const (
	pdNone    pdSide = iota
	pdPrefill        // compute the prompt for another instance
	pdDecode         // decode with a prompt KV cache computed elsewhere
)

// kvTransferParams is vLLM's kv_transfer_params as NixlConnector reads and
// writes it: the proxy sends do_remote_decode to the prefill instance, which
// answers with do_remote_prefill and where its blocks are; the proxy hands
// that to the decode instance.
type kvTransferParams struct {
	DoRemoteDecode  bool    `json:"do_remote_decode"`
	DoRemotePrefill bool    `json:"do_remote_prefill"`
	RemoteEngineID  *string `json:"remote_engine_id"`
	RemoteBlockIDs  []int   `json:"remote_block_ids"`
	RemoteHost      *string `json:"remote_host"`
	RemotePort      *int    `json:"remote_port"`
	TPSize          int     `json:"tp_size,omitempty"`
}

// pdRequest reads the disaggregation fields of a request for this server's
// API and role. vLLM reads kv_transfer_params; SGLang reads bootstrap_host,
// bootstrap_port and bootstrap_room, which a prefill server registers the
// room under and a decode server waits on.
func (s *Server) pdRequest(r *genRequest, p *prepared) *apiError {
	role := s.opts.Role
	switch s.opts.API {
	case APISGLang:
		if r.BootstrapRoom == nil && r.BootstrapHost == nil && r.BootstrapPort == nil {
			return nil
		}
		if r.BootstrapRoom == nil || r.BootstrapHost == nil || *r.BootstrapHost == "" {
			return badRequest("bootstrap_host and bootstrap_room: want both for a disaggregated request")
		}
		p.room = *r.BootstrapRoom
		switch role {
		case RolePrefill:
			p.pd = pdPrefill
			// A prefill server stops after the prefill: its one token is
			// the first the decode server would produce.
			p.maxTokens, p.finishReason = 1, "length"
		case RoleDecode:
			if r.BootstrapPort == nil || *r.BootstrapPort < 1 || *r.BootstrapPort > 65535 {
				return badRequest("bootstrap_port: want the prefill server's bootstrap port (1-65535)")
			}
			p.pd = pdDecode
			p.bootstrap = net.JoinHostPort(*r.BootstrapHost, strconv.Itoa(*r.BootstrapPort))
		default:
			return badRequest("bootstrap_room: this server runs without disaggregation (--disaggregation-mode null); send it to a prefill or decode server")
		}
	default:
		if len(r.KVTransferParams) == 0 || string(r.KVTransferParams) == "null" {
			return nil
		}
		var kv kvTransferParams
		if err := json.Unmarshal(r.KVTransferParams, &kv); err != nil {
			return badRequest("kv_transfer_params: %v", err)
		}
		switch {
		case kv.DoRemoteDecode && kv.DoRemotePrefill:
			return badRequest("kv_transfer_params: do_remote_decode and do_remote_prefill: want one")
		case kv.DoRemoteDecode:
			if role == RoleDecode {
				return badRequest("kv_transfer_params.do_remote_decode: this instance is a decode instance (kv consumer); send the prefill to a prefill instance")
			}
			p.pd = pdPrefill
		case kv.DoRemotePrefill:
			if role == RolePrefill {
				return badRequest("kv_transfer_params.do_remote_prefill: this instance is a prefill instance (kv producer)")
			}
			if kv.RemoteEngineID == nil || *kv.RemoteEngineID == "" || len(kv.RemoteBlockIDs) == 0 {
				return badRequest("kv_transfer_params: do_remote_prefill needs remote_engine_id and remote_block_ids from the prefill instance's answer")
			}
			p.pd = pdDecode
			p.remoteEngine = *kv.RemoteEngineID
		}
	}
	return nil
}

// transferIn waits for the prompt's KV cache to arrive from the prefill
// instance: SGLang first waits for the prefill server to finish the room;
// then both pay the transfer, KVTransferPerBlock per prompt block. Bad news
// from the prefill side is an error for the client (the router falls back).
func (s *Server) transferIn(ctx context.Context, p *prepared, st *reqState) error {
	if p.pd != pdDecode {
		return nil
	}
	if s.opts.API == APISGLang {
		if err := s.awaitRoom(ctx, p.bootstrap, p.room); err != nil {
			return err
		}
	}
	blocks := (st.req.PromptTokens + s.opts.Engine.BlockSize - 1) / s.opts.Engine.BlockSize
	if d := time.Duration(blocks) * s.opts.KVTransferPerBlock; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	st.req.KVTransferred = true
	s.m.pd.WithLabelValues(RoleDecode).Inc()
	return nil
}

// prefillParams is what a vLLM prefill instance answers with: where the
// decode instance pulls the blocks from.
func (s *Server) prefillParams(st *reqState) *kvTransferParams {
	blocks := (st.req.PromptTokens + s.opts.Engine.BlockSize - 1) / s.opts.Engine.BlockSize
	ids := make([]int, blocks)
	for i := range ids {
		ids[i] = int(st.id)*blocks + i
	}
	host, port := "", 0
	if a, ok := s.addr.Load().(string); ok {
		if h, ps, err := net.SplitHostPort(a); err == nil {
			host = h
			port, _ = strconv.Atoi(ps)
		}
	}
	id := s.engineID
	return &kvTransferParams{DoRemotePrefill: true, RemoteEngineID: &id, RemoteBlockIDs: ids, RemoteHost: &host, RemotePort: &port, TPSize: 1}
}

// ---------------------------------------------------------------- SGLang bootstrap

// roomBook is an SGLang prefill server's bootstrap state: which rooms are
// being prefilled, done or failed. It is bounded: the oldest rooms go first.
type roomBook struct {
	mu    sync.Mutex
	rooms map[uint64]*room
	order []uint64
}

type room struct {
	state string // "pending", "done", "failed"
	ch    chan struct{}
}

const maxRooms = 4096

// roomWait bounds a decode server's wait for its room's prefill.
const roomWait = 30 * time.Second

func (b *roomBook) get(id uint64) *room {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rooms == nil {
		b.rooms = map[uint64]*room{}
	}
	r := b.rooms[id]
	if r == nil {
		r = &room{state: "pending", ch: make(chan struct{})}
		b.rooms[id] = r
		b.order = append(b.order, id)
		if len(b.order) > maxRooms {
			delete(b.rooms, b.order[0])
			b.order = b.order[1:]
		}
	}
	return r
}

func (b *roomBook) finish(id uint64, ok bool) {
	r := b.get(id)
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != "pending" {
		return
	}
	r.state = "failed"
	if ok {
		r.state = "done"
	}
	close(r.ch)
}

// bootstrapHandler is the simulated bootstrap server of an SGLang prefill
// instance: GET /enginesim/rooms/{room} answers once the room's prefill
// ended (200 done, 409 failed) or after a second of waiting (202 pending).
// Real SGLang moves the KV over RDMA after a handshake here; the simulator
// keeps only the ordering and the failure.
func (s *Server) bootstrapHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /enginesim/rooms/{room}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("room"), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadRequestError", "room: want an unsigned integer")
			return
		}
		rm := s.rooms.get(id)
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-rm.ch:
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		s.rooms.mu.Lock()
		state := rm.state
		s.rooms.mu.Unlock()
		code := map[string]int{"done": http.StatusOK, "failed": http.StatusConflict}[state]
		if code == 0 {
			code = http.StatusAccepted
		}
		writeJSON(w, code, map[string]string{"state": state})
	})
	return mux
}

// errTransfer marks a failed KV transfer (the client gets 500 as from
// SGLang's KVTransferError).
var errTransfer = errors.New("KV transfer failed")

// awaitRoom polls the prefill server's bootstrap server until the room is
// prefilled. An unreachable bootstrap server or a failed room fails at once.
func (s *Server) awaitRoom(ctx context.Context, addr string, id uint64) error {
	url := "http://" + addr + "/enginesim/rooms/" + strconv.FormatUint(id, 10)
	ctx, cancel := context.WithTimeout(ctx, roomWait)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", errTransfer, err)
		}
		resp, err := s.bootClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: room %d: %v", errTransfer, id, ctx.Err())
			}
			return fmt.Errorf("%w: bootstrap server %s: %v", errTransfer, addr, err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return nil
		case http.StatusAccepted:
			continue
		default:
			return fmt.Errorf("%w: bootstrap server %s: room %d status %d", errTransfer, addr, id, resp.StatusCode)
		}
	}
}
