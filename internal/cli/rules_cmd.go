package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// defaultServer is where the CLI looks for the control plane unless told.
const defaultServer = "localhost:7070"

// serverFromEnv is the --server default: CONTROLPLANE_SERVER, else
// CONTROLPLANE_ENDPOINT (the variable the SDK reads; of several replicas,
// comma-separated as the SDK takes them, the first), else defaultServer.
func serverFromEnv(lookupEnv func(string) (string, bool)) string {
	for _, name := range []string{"CONTROLPLANE_SERVER", "CONTROLPLANE_ENDPOINT"} {
		if v, ok := lookupEnv(name); ok && v != "" {
			first, _, _ := strings.Cut(v, ",")
			return first
		}
	}
	return defaultServer
}

// addConnFlags defines the flags of every command that calls the server,
// as persistent flags of its group.
func addConnFlags(fs *pflag.FlagSet, conn *connConfig, lookupEnv func(string) (string, bool)) {
	fs.StringVar(&conn.server, "server", serverFromEnv(lookupEnv), "gRPC `address` of the control plane (env CONTROLPLANE_SERVER, or CONTROLPLANE_ENDPOINT as the SDK reads it)")
	fs.BoolVar(&conn.tls, "tls", false, "connect with TLS, trusting the system's root certificates")
	fs.StringVar(&conn.tlsCA, "tls-ca", "", "connect with TLS, trusting the CA certificates of this PEM `file` instead")
	fs.StringVar(&conn.tlsCert, "tls-cert", "", "connect with TLS, presenting the client certificate of this PEM `file` (with --tls-key; for mutual TLS)")
	fs.StringVar(&conn.tlsKey, "tls-key", "", "PEM `file` of the client certificate's private key")
	fs.DurationVar(&conn.timeout, "timeout", 10*time.Second, "time limit of each call to the server (0: none)")
	fs.StringVar(&conn.token, "token", "", "bearer `token` sent with every call, from 'controlplane tokens create' or the server's --admin-token-file (default: env "+tokenEnv+", which keeps it out of the process list)")
	conn.envToken, _ = lookupEnv(tokenEnv)
}

// addOutputFlag defines -o, --output.
func addOutputFlag(fs *pflag.FlagSet, format *string, usage string) {
	fs.StringVarP(format, "output", "o", output.Table, usage)
}

// completeFormats completes -o.
func completeFormats(formats ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return formats, cobra.ShellCompDirectiveNoFileComp
	}
}

const rulesLong = `Manage the sampling rules of a control plane server.

Every command calls the server at --server (default: CONTROLPLANE_SERVER,
else CONTROLPLANE_ENDPOINT, else localhost:7070); -o yaml prints the rules
file format, which apply and create -f read back.

` + exitCodesHelp

func newRulesCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	conn := &connConfig{}
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "list, edit and apply sampling rules",
		Long:  rulesLong,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addConnFlags(cmd.PersistentFlags(), conn, lookupEnv)
	cmd.AddCommand(
		newRulesListCmd(conn),
		newRulesGetCmd(conn),
		newRulesCreateCmd(conn),
		newRulesUpdateCmd(conn),
		newRulesDeleteCmd(conn),
		newRulesApplyCmd(conn),
		newRulesHistoryCmd(conn),
	)
	return cmd
}

const rulesOutputUsage = "output `format`: table, wide (every column, the etag among them), json or yaml (the rules file format)"

func newRulesListCmd(conn *connConfig) *cobra.Command {
	var (
		format   string
		filter   string
		pageSize int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list rules, in the order they are tried",
		Long:  "Lists every rule, in the order rules are tried (priority, then name),\nfollowing page tokens until the end.",
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format, output.Wide); err != nil {
				return err
			}
			if pageSize < 1 || pageSize > math.MaxInt32 {
				return usageError(fmt.Errorf("--page-size: want a positive number, got %d", pageSize))
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			rs, err := c.listRules(cmd.Context(), filter, int32(pageSize))
			if err != nil {
				return err
			}
			return output.WriteRules(cmd.OutOrStdout(), format, rs, false)
		},
	}
	addOutputFlag(cmd.Flags(), &format, rulesOutputUsage)
	cmd.Flags().StringVar(&filter, "filter", "", "only rules matching `terms`, e.g. 'service=shop-api AND labels.team=payments'")
	cmd.Flags().IntVar(&pageSize, "page-size", 100, "rules per call to the server")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.Wide, output.JSON, output.YAML))
	return cmd
}

func newRulesGetCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:               "get NAME",
		Short:             "show one rule",
		Long:              "Shows one rule. With -o yaml it prints a rules file that apply reads back.",
		Args:              argsBetween(1, 1),
		ValidArgsFunction: completeRuleNames(conn),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := checkFormat(format, output.Wide); err != nil {
				return err
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.rules.GetRule(cmd.Context(), &pb.GetRuleRequest{Name: pos[0]})
			if err != nil {
				return c.wrap("", err)
			}
			return output.WriteRules(cmd.OutOrStdout(), format, []*pb.Rule{resp.GetRule()}, true)
		},
	}
	addOutputFlag(cmd.Flags(), &format, rulesOutputUsage)
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.Wide, output.JSON, output.YAML))
	return cmd
}

// ruleFlags are the fields of a rule as create and update take them.
type ruleFlags struct {
	name        string
	priority    int
	fixedRate   float64
	reservoir   int64
	serviceName string
	serviceType string
	host        string
	httpMethod  string
	urlPath     string
	resourceARN string
	attrs       kvFlag
	resource    kvFlag
	labels      kvFlag
	description string
	expires     time.Duration
	tags        kvFlag
	boostRate   float64
	boostCool   time.Duration
	noBoost     bool
}

func (rf *ruleFlags) register(fs *pflag.FlagSet, create bool) {
	if create {
		fs.StringVar(&rf.name, "name", "", "rule `name`: 1-32 letters, digits, '-' or '_' (required)")
	}
	fs.IntVar(&rf.priority, "priority", 0, "1-9999, lower is tried first")
	fs.Float64Var(&rf.fixedRate, "fixed-rate", 0, "share of requests traced once the reservoir is used, 0 to 1")
	fs.Int64Var(&rf.reservoir, "reservoir", 0, "traces per second for the whole fleet before fixed-rate applies")
	fs.StringVar(&rf.serviceName, "service-name", "", "service name `glob` ('*' any run of characters, '?' one; empty means *)")
	fs.StringVar(&rf.serviceType, "service-type", "", "service type `glob`")
	fs.StringVar(&rf.host, "host", "", "host `glob`")
	fs.StringVar(&rf.httpMethod, "http-method", "", "HTTP method `glob`")
	fs.StringVar(&rf.urlPath, "url-path", "", "URL path `glob`")
	fs.StringVar(&rf.resourceARN, "resource-arn", "", "resource ARN `glob`")
	fs.Var(&rf.attrs, "attr", "request attribute `key=glob` that must match (repeatable; on update it replaces every attribute, and --attr '' removes them all)")
	fs.Var(&rf.resource, "resource-attr", "SDK instance resource attribute `key=glob` that must match, such as deployment.environment.name=production (repeatable; on update it replaces every one, and --resource-attr '' removes them all)")
	fs.Var(&rf.labels, "label", "label `key=value` (repeatable; on update it replaces every label, and --label '' removes them all)")
	fs.StringVar(&rf.description, "description", "", "free `text` for people")
	fs.DurationVar(&rf.expires, "expires", 0, "the rule expires this long from now (30m, 2h): SDKs stop applying it and the control plane deletes it (on update, 0 removes the expiry)")
	fs.Var(&rf.tags, "tag", "X-Ray resource tag `key=value` (repeatable; on update it replaces every tag, and --tag '' removes them all)")
	fs.Float64Var(&rf.boostRate, "boost-max-rate", 0, "adaptive sampling: the highest `rate` a boost may set when anomalies rise, 0 to 1 (with --boost-cooldown)")
	fs.DurationVar(&rf.boostCool, "boost-cooldown", 0, "adaptive sampling: at most one boost starts per this `window`, whole minutes (10m, 1h; with --boost-max-rate)")
	if !create {
		fs.BoolVar(&rf.noBoost, "no-boost", false, "remove the rule's boost")
	}
}

// flagPaths maps the rule flags to the API fields they set, in the proto's
// field order, which is the order of an update_mask.
func flagPaths() [][2]string {
	return [][2]string{
		{"priority", "priority"}, {"fixed-rate", "fixed_rate"}, {"reservoir", "reservoir_size"},
		{"service-name", "service_name"}, {"service-type", "service_type"}, {"host", "host"},
		{"http-method", "http_method"}, {"url-path", "url_path"}, {"resource-arn", "resource_arn"},
		{"attr", "attributes"}, {"resource-attr", "resource_attributes"}, {"description", "description"}, {"label", "labels"},
		{"expires", "expire_time"}, {"tag", "tags"}, {"boost-max-rate", "sampling_rate_boost"},
		{"boost-cooldown", "sampling_rate_boost"}, {"no-boost", "sampling_rate_boost"},
	}
}

// givenPaths returns the API fields of the rule flags given on the command line.
func givenPaths(fs *pflag.FlagSet) []string {
	var paths []string
	for _, fp := range flagPaths() {
		if fs.Changed(fp[0]) && !slices.Contains(paths, fp[1]) {
			paths = append(paths, fp[1])
		}
	}
	return paths
}

// proto returns the rule the flags in fs describe.
func (rf *ruleFlags) proto(name string, fs *pflag.FlagSet) (*pb.Rule, error) {
	if rf.priority < math.MinInt32 || rf.priority > math.MaxInt32 {
		return nil, usageError(fmt.Errorf("--priority: %d is out of range", rf.priority))
	}
	if rf.expires < 0 {
		return nil, usageError(fmt.Errorf("--expires: want a positive duration such as 30m, got %v", rf.expires))
	}
	boost, err := rf.boost(fs)
	if err != nil {
		return nil, err
	}
	var expire *timestamppb.Timestamp
	if rf.expires > 0 {
		expire = timestamppb.New(time.Now().Add(rf.expires).UTC().Truncate(time.Second))
	}
	return &pb.Rule{
		ExpireTime:         expire,
		Name:               name,
		Priority:           int32(rf.priority),
		FixedRate:          rf.fixedRate,
		ReservoirSize:      rf.reservoir,
		ServiceName:        rf.serviceName,
		ServiceType:        rf.serviceType,
		Host:               rf.host,
		HttpMethod:         rf.httpMethod,
		UrlPath:            rf.urlPath,
		ResourceArn:        rf.resourceARN,
		Attributes:         rf.attrs.m,
		ResourceAttributes: rf.resource.m,
		Description:        rf.description,
		Labels:             rf.labels.m,
		Tags:               rf.tags.m,
		SamplingRateBoost:  boost,
	}, nil
}

// boost returns the boost the flags in fs set: none unless --boost-max-rate
// and --boost-cooldown are both given (X-Ray requires both too).
func (rf *ruleFlags) boost(fs *pflag.FlagSet) (*pb.SamplingRateBoost, error) {
	rate, cool := fs.Changed("boost-max-rate"), fs.Changed("boost-cooldown")
	switch {
	case rf.noBoost && (rate || cool):
		return nil, usageError(errors.New("--no-boost: give it or --boost-max-rate and --boost-cooldown, not both"))
	case rate != cool:
		return nil, usageError(errors.New("--boost-max-rate and --boost-cooldown: give both, or neither"))
	case !rate:
		return nil, nil
	case rf.boostCool < 0 || rf.boostCool%time.Minute != 0:
		return nil, usageError(fmt.Errorf("--boost-cooldown: want whole minutes such as 10m or 1h, got %v", rf.boostCool))
	}
	// A Duration holds at most 153 million minutes: an int32 holds them.
	return &pb.SamplingRateBoost{MaxRate: rf.boostRate, CooldownWindowMinutes: int32(rf.boostCool / time.Minute)}, nil
}

// kvFlag is a repeatable key=value flag.
type kvFlag struct{ m map[string]string }

func (f *kvFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(f.m))
	for k, v := range f.m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (f *kvFlag) Type() string { return "key=value" }

func (f *kvFlag) Set(s string) error {
	if f.m == nil {
		f.m = map[string]string{}
	}
	if s == "" {
		return nil // given but empty: no entries
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	if _, dup := f.m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	f.m[k] = v
	return nil
}

const rulesCreateLong = `Creates one rule from flags, or every rule of a rules file (-f; - reads
stdin). A rules file is checked whole before anything is created; the
Default rule always exists, so a file for create must not contain it (use
apply). Omitted globs mean "*"; omitted numbers are zero.

With --expires the rule is time-limited: to trace every checkout for half
an hour,

  controlplane rules create --name debug-checkout --priority 1 \
      --fixed-rate 1 --url-path '/checkout*' --expires 30m

SDKs stop applying it when it expires, and the control plane deletes it
then (within a report interval), recording "expired" in the audit log.`

func newRulesCreateCmd(conn *connConfig) *cobra.Command {
	var (
		format string
		rf     ruleFlags
		file   string
	)
	cmd := &cobra.Command{
		Use:   "create (--name NAME --priority N [flags] | -f FILE)",
		Short: "create a rule from flags, or every rule of a file (-f)",
		Long:  rulesCreateLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format, output.Wide); err != nil {
				return err
			}
			var todo []*pb.Rule
			if file != "" {
				if len(givenPaths(cmd.Flags())) > 0 || rf.name != "" {
					return usageError(errors.New("rules create: give either -f or rule flags, not both"))
				}
				entries, err := files.ReadRules(file, cmd.InOrStdin())
				if err != nil {
					return invalidInput(err)
				}
				var problems []string
				now := time.Now()
				for _, e := range entries {
					e.Rule = e.Expiry(time.Time{}, now)
					if e.Rule.IsDefault() {
						problems = append(problems, fmt.Sprintf("%s:%d: rule %q (#%d): the Default rule always exists; change it with 'rules apply' or 'rules update Default'",
							files.DisplayName(file), e.Line, e.Rule.Name, e.Index))
					}
					todo = append(todo, rulepb.ToProto(&e.Rule))
				}
				if len(problems) > 0 {
					return invalidInput(&files.Error{File: files.DisplayName(file), Problems: problems})
				}
			} else {
				r, err := rf.proto(rf.name, cmd.Flags())
				if err != nil {
					return err
				}
				todo = append(todo, r)
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			var created []*pb.Rule
			for i, r := range todo {
				resp, err := c.rules.CreateRule(cmd.Context(), &pb.CreateRuleRequest{Rule: r})
				if err != nil {
					if len(todo) > 1 {
						reportPartial(cmd.ErrOrStderr(), "created", "not created", todo[:i], todo[i:])
					}
					if file != "" && status.Code(err) == codes.AlreadyExists {
						fmt.Fprintln(cmd.ErrOrStderr(), "create makes new rules only; 'rules apply -f FILE' also updates the ones that exist")
					}
					return c.wrap(fmt.Sprintf("create rule %q", r.GetName()), err)
				}
				created = append(created, resp.GetRule())
			}
			return output.WriteRules(cmd.OutOrStdout(), format, created, file == "")
		},
	}
	addOutputFlag(cmd.Flags(), &format, rulesOutputUsage)
	rf.register(cmd.Flags(), true)
	cmd.Flags().StringVarP(&file, "file", "f", "", "create every rule of this rules `file` (- for stdin)")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.Wide, output.JSON, output.YAML))
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

// reportPartial says which rules a stopped batch did and did not handle.
func reportPartial(w io.Writer, doneVerb, notDoneVerb string, done, notDone []*pb.Rule) {
	names := func(rs []*pb.Rule) string {
		if len(rs) == 0 {
			return "(none)"
		}
		ns := make([]string, len(rs))
		for i, r := range rs {
			ns[i] = r.GetName()
		}
		return strings.Join(ns, ", ")
	}
	fmt.Fprintf(w, "%s: %s\n%s: %s\n", doneVerb, names(done), notDoneVerb, names(notDone))
}

const rulesUpdateLong = `Changes the fields given as flags, and only those (the update mask is
exactly the flags given). With --etag the update is refused if the rule
changed since that etag was read (list -o wide shows etags).`

func newRulesUpdateCmd(conn *connConfig) *cobra.Command {
	var (
		format string
		rf     ruleFlags
		etag   string
	)
	cmd := &cobra.Command{
		Use:               "update NAME [flags]",
		Short:             "change the fields given as flags, and only those",
		Long:              rulesUpdateLong,
		Args:              argsBetween(1, 1),
		ValidArgsFunction: completeRuleNames(conn),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := checkFormat(format, output.Wide); err != nil {
				return err
			}
			paths := givenPaths(cmd.Flags())
			if len(paths) == 0 {
				return usageError(errors.New("rules update: nothing to change; give at least one field flag, e.g. --fixed-rate 0.1"))
			}
			r, err := rf.proto(pos[0], cmd.Flags())
			if err != nil {
				return err
			}
			r.Etag = etag
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.rules.UpdateRule(cmd.Context(), &pb.UpdateRuleRequest{Rule: r, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
			if err != nil {
				return c.wrap("", err)
			}
			return output.WriteRules(cmd.OutOrStdout(), format, []*pb.Rule{resp.GetRule()}, true)
		},
	}
	addOutputFlag(cmd.Flags(), &format, rulesOutputUsage)
	rf.register(cmd.Flags(), false)
	cmd.Flags().StringVar(&etag, "etag", "", "update only if the rule's current etag is this `etag`")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.Wide, output.JSON, output.YAML))
	return cmd
}

func newRulesDeleteCmd(conn *connConfig) *cobra.Command {
	var etag string
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Short:             "delete a rule",
		Long:              "Deletes a rule. The Default rule cannot be deleted. With --etag the delete\nis refused if the rule changed since that etag was read.",
		Args:              argsBetween(1, 1),
		ValidArgsFunction: completeRuleNames(conn),
		RunE: func(cmd *cobra.Command, pos []string) error {
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.rules.DeleteRule(cmd.Context(), &pb.DeleteRuleRequest{Name: pos[0], Etag: etag}); err != nil {
				return c.wrap("", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted rule %q\n", pos[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&etag, "etag", "", "delete only if the rule's current etag is this `etag`")
	return cmd
}

func newRulesHistoryCmd(conn *connConfig) *cobra.Command {
	var (
		format string
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "history [NAME]",
		Short: "show the audit log, newest first",
		Long: `Shows the audit log, newest first: who changed which rule (the
authenticated principal: token:NAME, cert:NAME, local…), when, and what
changed. With NAME, only that rule's events. When the listing reaches the
oldest entry kept and older ones were dropped by the log's retention, it
says so on stderr.`,
		Args:              argsBetween(0, 1),
		ValidArgsFunction: completeRuleNames(conn),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if limit < 0 {
				return usageError(fmt.Errorf("--limit: want 0 or more, got %d", limit))
			}
			name := ""
			if len(pos) == 1 {
				name = pos[0]
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			events, trimmed, err := c.listEvents(cmd.Context(), name, limit)
			if err != nil {
				return err
			}
			if err := output.WriteEvents(cmd.OutOrStdout(), format, events); err != nil {
				return err
			}
			if trimmed {
				what := "the audit log"
				if name != "" {
					what = fmt.Sprintf("rule %q's history", name)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "older entries of %s were dropped by the audit log's retention (see the README, Audit log)\n", what)
			}
			return nil
		},
	}
	addOutputFlag(cmd.Flags(), &format, "output `format`: table, json or yaml")
	cmd.Flags().IntVar(&limit, "limit", 50, "show at most this many events (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats(output.Table, output.JSON, output.YAML))
	return cmd
}

// completeRuleNames completes a rule name from the server's rules, for a
// command that takes one.
func completeRuleNames(conn *connConfig) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, pos []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(pos) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := dial(*conn)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()
		rs, err := c.listRules(cmd.Context(), "", 1000)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.GetName()
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// normalized returns the domain form of an API rule, as apply compares it.
func normalized(p *pb.Rule) rules.Rule {
	return rulepb.FromProto(p).Normalize()
}

// givenFlags returns the names of the flags of fs given on the command line.
// (A FlagSet made of another's flags, such as LocalNonPersistentFlags, knows
// only from each flag whether it was given.)
func givenFlags(fs *pflag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			set[f.Name] = true
		}
	})
	return set
}
