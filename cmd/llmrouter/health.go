package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/llmrouter/llmrouter/internal/grpcx"
)

func init() {
	c := &cobra.Command{
		Use:   "health HOST:PORT",
		Short: "Ask a gRPC port (scheduler API, xDS, gateway ext_proc) the standard health check; exit 0 when SERVING",
		Long: `Calls grpc.health.v1.Health/Check on HOST:PORT and prints the status. Every gRPC
port of llmrouter serves it, without the token: the scheduler's API (18001) and
xDS (18000) ports and the gateway's ext_proc port (9002). TLS follows the
configuration (tls.ca_file, as agents and gateways dial the scheduler);
--plaintext forces plain gRPC (the xDS port never uses TLS).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			opts, err := grpcx.DialOptions(cfg)
			if err != nil {
				return err
			}
			if plain, _ := cmd.Flags().GetBool("plaintext"); plain {
				opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			}
			timeout, _ := cmd.Flags().GetDuration("timeout")
			service, _ := cmd.Flags().GetString("service")
			conn, err := grpc.NewClient(args[0], opts...)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("health check of %s: %w", args[0], err)}
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.GetStatus())
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return &exitError{code: 1, err: fmt.Errorf("%s is %s", args[0], r.GetStatus())}
			}
			return nil
		},
	}
	c.Flags().Bool("plaintext", false, "plain gRPC even when the configuration names TLS")
	c.Flags().Duration("timeout", 5*time.Second, "how long to wait for the answer")
	c.Flags().String("service", "", "the service to ask about (\"\": the server as a whole)")
	rootCmd.AddCommand(c)
}
