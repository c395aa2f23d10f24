package main

import (
	"github.com/spf13/cobra"
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
