package servers

import (
	"context"
	"fmt"
	"net"

	"github.com/llmrouter/llmrouter/sim/enginesim"
)

// EngineSim serves a simulated engine on listen (and, for an SGLang
// prefill role, its bootstrap server on bootstrapListen, "" for none)
// until ctx ends.
func EngineSim(ctx context.Context, opts enginesim.Options, listen, bootstrapListen string) error {
	if bootstrapListen != "" {
		boot, err := net.Listen("tcp", bootstrapListen)
		if err != nil {
			return fmt.Errorf("enginesim: --bootstrap-listen %s: %w", bootstrapListen, err)
		}
		defer boot.Close()
		opts.Bootstrap = boot
	}
	srv, err := enginesim.New(opts)
	if err != nil {
		return fmt.Errorf("enginesim: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("enginesim: --listen %s: %w", listen, err)
	}
	return srv.Serve(ctx, ln)
}
