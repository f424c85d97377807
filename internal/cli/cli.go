// Package cli is the controlplane command: `serve` runs the server, the
// other subcommands are its CLI. cmd/controlplane only calls Run.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Run runs the command line args (without the program name). It never exits
// the process; ExitCode gives the exit code of what it returns, whose
// message main prints.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return run(ctx, args, stdin, stdout, stderr)
}

// ExitCode is the process exit code for an error Run returned.
func ExitCode(err error) int { return exitCode(err) }

const rootLong = `controlplane: the trace-sampling control plane

'controlplane serve' runs the server; the other commands are its CLI and
talk to a server over gRPC (--server, or CONTROLPLANE_SERVER).

` + exitCodesHelp

// exitCodesHelp is the README's table of exit codes, for every help text
// that lists them.
const exitCodesHelp = `Exit codes: 0 success, 1 other failure, 2 bad command line, 3 invalid
input (a bad file, or the server said INVALID_ARGUMENT), 4 not found,
5 conflict (already exists, stale etag, an edit the Default rule does not
allow, the rule limit), 6 server unreachable or UNAVAILABLE, 7 not allowed
(no, wrong or revoked credentials, or a role or scope that does not allow
the call: see --token).`

// run builds the command tree and runs args on it. Help goes to stdout;
// errors are returned, for main to print once.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRoot(os.LookupEnv)
	root.SetArgs(singleDashLongFlags(root, args))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRoot(lookupEnv func(string) (string, bool)) *cobra.Command {
	root := &cobra.Command{
		Use:           "controlplane",
		Short:         "the trace-sampling control plane",
		Long:          rootLong,
		SilenceErrors: true, // main prints the error once
		SilenceUsage:  true, // a failed call is not a usage problem
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(fmt.Errorf("%w (see '%s --help')", err, c.CommandPath()))
	})
	root.AddCommand(
		newServeCmd(),
		newRulesCmd(lookupEnv),
		newBudgetsCmd(lookupEnv),
		newTokensCmd(lookupEnv),
		newSimulateCmd(),
		newTopCmd(lookupEnv),
		newExplainCmd(lookupEnv),
		newRedisCmd(lookupEnv),
		&cobra.Command{
			Use:   "version",
			Short: "print the version",
			Args:  argsBetween(0, 0),
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), version())
			},
		},
	)
	return root
}

// groupRunE runs a command that only groups others: without a command it
// prints its usage on stderr; either way it is a usage error.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
		return usageError(fmt.Errorf("%sno command given", groupPrefix(cmd)))
	}
	msg := fmt.Sprintf("%sunknown command %q", groupPrefix(cmd), args[0])
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageError(fmt.Errorf("%s (see '%s --help')", msg, cmd.CommandPath()))
}

func groupPrefix(cmd *cobra.Command) string {
	if cmd.HasParent() {
		return cmd.Name() + ": "
	}
	return ""
}

// argsBetween checks the number of positional arguments: lo to hi names of
// what the command's group holds.
func argsBetween(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, pos []string) error {
		if len(pos) >= lo && len(pos) <= hi {
			return nil
		}
		path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
		noun := "name"
		if cmd.HasParent() && cmd.Parent().HasParent() {
			noun = strings.TrimSuffix(cmd.Parent().Name(), "s") + " name"
		}
		switch {
		case hi == 0:
			return usageError(fmt.Errorf("%s takes no arguments, got %q", path, pos))
		case lo == hi:
			return usageError(fmt.Errorf("%s takes exactly one %s, got %d arguments", path, noun, len(pos)))
		}
		return usageError(fmt.Errorf("%s takes at most %d %s, got %d arguments", path, hi, noun, len(pos)))
	}
}

// singleDashLongFlags rewrites -name to --name where name is a long flag of
// the command args run: the commands took Go's flag syntax before they
// moved to cobra, and scripts written then keep working. Everything after
// "--" is left alone.
func singleDashLongFlags(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil {
		return args
	}
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if len(name) > 1 && (cmd.Flag(name) != nil || name == "help") {
			out[i] = "-" + a
		}
	}
	return out
}
