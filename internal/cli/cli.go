// Package cli is the controlplane command: `serve` runs the server, the
// other subcommands are its CLI. cmd/controlplane only calls Run.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Run runs the command line args (without the program name). It never exits
// the process; ExitCode gives the exit code of what it returns, and Reported
// says whether the error was already printed.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return run(ctx, args, stdin, stdout, stderr)
}

// ExitCode is the process exit code for an error Run returned.
func ExitCode(err error) int { return exitCode(err) }

// Reported says whether err was already printed, so main prints it no more.
func Reported(err error) bool { return errors.Is(err, errSilent) }

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
