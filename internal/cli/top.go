package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/output"
)

const topLong = `Shows what the fleet does under each rule, live: in match order, the
requests and sampled traces per second that the SDK instances report, the
reservoir quota they hold and the rule's reservoir, how many instances
report the rule, and the budgets in force on it. The figures are each
instance's latest report (StatusService.GetFleetStatus), so they move once
per report interval.

It refreshes every --interval until interrupted, redrawing the screen in a
terminal. --once prints once and exits, for scripts; -o json prints the
GetFleetStatusResponse (every page together).

` + exitCodesHelp

func newTopCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	conn := &connConfig{}
	var (
		format, service string
		once            bool
		every           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "top [--once] [-o json]",
		Short: "live per-rule traffic, sampled rate, quotas and instances",
		Long:  topLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if format == output.YAML {
				return usageError(errors.New("-o: want table or json, got \"yaml\""))
			}
			if every < 100*time.Millisecond {
				return usageError(fmt.Errorf("--interval: want at least 100ms, got %v", every))
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			t := &top{c: c, service: service, format: format, out: cmd.OutOrStdout(), clear: isTerminal(cmd.OutOrStdout())}
			if once {
				return t.frame(cmd.Context())
			}
			return t.run(cmd.Context(), every)
		},
	}
	addConnFlags(cmd.Flags(), conn, lookupEnv)
	addOutputFlag(cmd.Flags(), &format, "output `format`: table or json")
	cmd.Flags().StringVar(&service, "service", "", "only the rules whose service glob matches this `service`")
	cmd.Flags().BoolVar(&once, "once", false, "print once and exit")
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "time between refreshes")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON))
	return cmd
}

// top draws the fleet's status.
type top struct {
	c       *client
	service string
	format  string
	out     io.Writer
	clear   bool // redraw the screen: the output is a terminal
}

// run draws a frame every interval until ctx ends. A failed read is shown
// in place of the figures, and tried again at the next refresh.
func (t *top) run(ctx context.Context, every time.Duration) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := t.frame(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(t.out, "%v\n(trying again every %v; Ctrl-C stops)\n", err, every)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// frame reads every page of the fleet's status and prints it.
func (t *top) frame(ctx context.Context) error {
	st, err := t.read(ctx)
	if t.clear && t.format == output.Table {
		fmt.Fprint(t.out, "\x1b[H\x1b[2J") // home, clear screen
	}
	if err != nil {
		return err
	}
	return output.WriteFleetStatus(t.out, t.format, st)
}

func (t *top) read(ctx context.Context) (*pb.GetFleetStatusResponse, error) {
	var all *pb.GetFleetStatusResponse
	token := ""
	for {
		resp, err := t.c.status.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{PageSize: 1000, PageToken: token, ServiceName: t.service})
		if err != nil {
			return nil, t.c.wrap("read the fleet's status", err)
		}
		if all == nil {
			all = resp
		} else {
			all.Rules = append(all.Rules, resp.GetRules()...)
		}
		token = resp.GetNextPageToken()
		if token == "" {
			all.NextPageToken = ""
			return all, nil
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
