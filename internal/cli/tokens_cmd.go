package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/output"
)

const tokensLong = `Manage the credentials of a control plane: bearer tokens, and AWS access
keys for SigV4 on the X-Ray API. Only an admin may (the first admin's token
is the server's --admin-token-file; on a server without credentials, any
loopback client is the local admin).

Roles: viewer (read rules, budgets, status, alerts, the dashboard, the
metrics), editor (also edit rules and budgets), sdk (the sampling calls
only), admin (everything, tokens too). --services limits a token to
service globs: an sdk token samples only for them, an editor edits only
rules and budgets whose service globs lie within them.

The secret is printed once, on stdout (a bearer token; with --aws the
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY lines); only a hash of a
token is kept. A revoked token is refused by every replica within a second.

` + exitCodesHelp

func newTokensCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	conn := &connConfig{}
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "create, list and revoke credentials (admin)",
		Long:  tokensLong,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addConnFlags(cmd.PersistentFlags(), conn, lookupEnv)
	cmd.AddCommand(newTokenCreateCmd(conn), newTokenListCmd(conn), newTokenGetCmd(conn), newTokenRevokeCmd(conn))
	return cmd
}

// tokenAPI returns a TokenService client on c's connection.
func tokenAPI(c *client) pb.TokenServiceClient { return pb.NewTokenServiceClient(c.conn) }

// parseExpiry reads --expires: a Go duration ("36h") or whole days ("90d").
func parseExpiry(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("--expires: want a duration such as 90d or 36h, got %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--expires: want a duration such as 90d or 36h, got %q", s)
	}
	return d, nil
}

func newTokenCreateCmd(conn *connConfig) *cobra.Command {
	var (
		role, expires, format string
		services              []string
		aws                   bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --role ROLE",
		Short: "create a credential and print its secret, once",
		Long: `Creates a credential and prints its secret on stdout, once: a bearer token
(tsc_…), or with --aws an AWS access key pair for the X-Ray API (the server
needs --secrets-key-file for those). Details go to stderr, so that
  TOKEN=$(controlplane tokens create NAME --role sdk)
keeps only the secret. -o json prints the answer, secret included.`,
		Example: `  controlplane tokens create shop-editor --role editor --services 'shop-*' --expires 90d
  controlplane tokens create shop-sdk --role sdk --services 'shop-*'
  controlplane tokens create xray-ci --role editor --aws`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if format != output.Table && format != output.JSON {
				return usageError(fmt.Errorf("-o: want table or json, got %q", format))
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return usageError(fmt.Errorf("--role: %w", err))
			}
			ttl, err := parseExpiry(expires)
			if err != nil {
				return usageError(err)
			}
			req := &pb.CreateTokenRequest{Name: pos[0], Role: apiconv.RoleToProto(string(r)), Services: services, Aws: aws}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := tokenAPI(c).CreateToken(cmd.Context(), req)
			if err != nil {
				return c.wrap(fmt.Sprintf("create token %q", pos[0]), err)
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if format == output.JSON {
				return output.WriteJSON(stdout, resp)
			}
			t := resp.GetToken()
			if t.GetAccessKeyId() != "" {
				fmt.Fprintf(stdout, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", t.GetAccessKeyId(), resp.GetSecret())
			} else {
				fmt.Fprintln(stdout, resp.GetSecret())
			}
			scope := "every service"
			if len(t.GetServices()) > 0 {
				scope = "services " + strings.Join(t.GetServices(), ", ")
			}
			until := "does not expire"
			if t.GetExpireTime() != nil {
				until = "expires " + t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stderr, "created %q: role %s, %s, %s. The secret above is shown only now; only a hash of it is kept.\n",
				t.GetName(), role, scope, until)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&role, "role", "", "`role`: viewer, editor, sdk or admin (required)")
	fs.StringSliceVar(&services, "services", nil, "service `glob`s the credential is limited to, comma separated or repeated (default: every service)")
	fs.StringVar(&expires, "expires", "", "valid for this long: a `duration` such as 90d or 36h (default: does not expire)")
	fs.BoolVar(&aws, "aws", false, "an AWS access key pair for SigV4 on the X-Ray API instead of a bearer token")
	addOutputFlag(fs, &format, "output `format`: table (the secret alone) or json")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", completeFormats("viewer", "editor", "sdk", "admin"))
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON))
	return cmd
}

// listTokens returns every credential, following page tokens.
func listTokens(ctx context.Context, c *client) ([]*pb.Token, error) {
	var all []*pb.Token
	for token := ""; ; {
		resp, err := tokenAPI(c).ListTokens(ctx, &pb.ListTokensRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, c.wrap("list tokens", err)
		}
		all = append(all, resp.GetTokens()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

func newTokenListCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list credentials, by name",
		Long:  "Lists every credential, by name, revoked and expired ones too until they\nare pruned 30 days after they ended. Secrets are never shown.",
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			ts, err := listTokens(cmd.Context(), c)
			if err != nil {
				return err
			}
			return output.WriteTokens(cmd.OutOrStdout(), format, ts, false)
		},
	}
	addOutputFlag(cmd.Flags(), &format, "output `format`: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON, output.YAML))
	return cmd
}

func newTokenGetCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "show one credential",
		Args:  argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := tokenAPI(c).GetToken(cmd.Context(), &pb.GetTokenRequest{Name: pos[0]})
			if err != nil {
				return c.wrap(fmt.Sprintf("get token %q", pos[0]), err)
			}
			return output.WriteTokens(cmd.OutOrStdout(), format, []*pb.Token{resp.GetToken()}, true)
		},
	}
	addOutputFlag(cmd.Flags(), &format, "output `format`: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON, output.YAML))
	return cmd
}

func newTokenRevokeCmd(conn *connConfig) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "revoke a credential",
		Long:  "Revokes a credential now: every replica refuses it within a second.\nRevoking a revoked credential changes nothing.",
		Args:  argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := tokenAPI(c).RevokeToken(cmd.Context(), &pb.RevokeTokenRequest{Name: pos[0]}); err != nil {
				return c.wrap(fmt.Sprintf("revoke token %q", pos[0]), err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %q\n", pos[0])
			return nil
		},
	}
}
