// Command controlplane is the trace-sampling control plane: `serve` runs the
// server, the other subcommands are its CLI (package internal/cli).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tracesampling/controlplane/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
	}
	os.Exit(cli.ExitCode(err))
}
