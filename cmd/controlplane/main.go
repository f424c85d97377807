// Command controlplane is the trace-sampling control plane: `serve` runs the
// server, the other subcommands are its CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
	}
	os.Exit(exitCode(err))
}

const usage = `controlplane: the trace-sampling control plane

Usage:
  controlplane serve [flags]                   run the control plane
  controlplane rules list|get|create|update|delete|apply|history [flags]
  controlplane budgets list|get|create|update|delete|status|alerts|watch [flags]
  controlplane simulate [flags]                what rules cost under a traffic shape, with or without a budget
  controlplane version

Run 'controlplane COMMAND -h' for a command's flags.
`

// run dispatches a subcommand. It never exits the process, so every command is
// testable with its own input and output.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError(errors.New("no command given"))
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "rules":
		return runRules(ctx, args[1:], stdin, stdout, stderr)
	case "budgets":
		return runBudgets(ctx, args[1:], stdin, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args[1:], stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError(fmt.Errorf("unknown command %q", args[0]))
}
