package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/internal/config"
)

func init() {
	cfgCmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	cfgCmd.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML (defaults, file, environment, flags), secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			for _, w := range config.UnknownEnv(os.Environ()) {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			out, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	})
	rootCmd.AddCommand(cfgCmd)
}
