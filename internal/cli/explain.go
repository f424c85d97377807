package cli

import (
	"errors"

	"github.com/spf13/cobra"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/output"
)

const explainLong = `Asks the server which rule a request matches, and why: the rule, the
fixed rate and reservoir in force for the service (budget factors
applied), and each rule tried before it with the condition it failed. The
server answers from its current rules (StatusService.Explain), as the
dashboard's explain form does.

  controlplane explain --service shop-api --method POST --path /checkout/pay \
      --attr tier=gold

` + exitCodesHelp

func newExplainCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	conn := &connConfig{}
	var (
		format string
		req    pb.ExplainRequest
		attrs  kvFlag
		res    kvFlag
	)
	cmd := &cobra.Command{
		Use:   "explain --service NAME [--method M] [--path P] [--host H] [--attr K=V]... [--resource-attr K=V]...",
		Short: "which rule a request matches, and why (server-side)",
		Long:  explainLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if req.GetServiceName() == "" {
				return usageError(errors.New("explain: --service is required"))
			}
			req.Attributes = attrs.m
			req.ResourceAttributes = res.m
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.status.Explain(cmd.Context(), &req)
			if err != nil {
				return c.wrap("explain", err)
			}
			return output.WriteExplanation(cmd.OutOrStdout(), format, resp)
		},
	}
	addConnFlags(cmd.Flags(), conn, lookupEnv)
	addOutputFlag(cmd.Flags(), &format, "output `format`: table, json or yaml")
	fs := cmd.Flags()
	fs.StringVar(&req.ServiceName, "service", "", "the request's service `name` (OpenTelemetry service.name; required)")
	fs.StringVar(&req.ServiceType, "service-type", "", "the service's `type`")
	fs.StringVar(&req.Host, "host", "", "the request's HTTP `host`")
	fs.StringVar(&req.HttpMethod, "method", "", "the request's HTTP `method`")
	fs.StringVar(&req.UrlPath, "path", "", "the request's URL `path`")
	fs.StringVar(&req.ResourceArn, "resource-arn", "", "the `ARN` of the resource running the service")
	fs.Var(&attrs, "attr", "a request attribute `key=value` (repeatable)")
	fs.Var(&res, "resource-attr", "a resource attribute `key=value` of the SDK instance, such as deployment.environment.name=staging (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON, output.YAML))
	return cmd
}
