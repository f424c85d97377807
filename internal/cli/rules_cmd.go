package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/internal/rules"
)

const rulesUsage = `Usage: controlplane rules COMMAND [flags]

Manage the sampling rules of a control plane server.

Commands:
  list                  list rules, in the order they are tried
  get NAME              show one rule
  create                create a rule from flags, or every rule of a file (-f)
  update NAME           change the fields given as flags, and only those
  delete NAME           delete a rule
  apply -f FILE         make the server's rules match a rules file
  history [NAME]        show the audit log, newest first

Flags of every command:
  --server ADDR         gRPC address of the server (env CONTROLPLANE_SERVER; default localhost:7070)
  --tls                 connect with TLS, trusting the system's root certificates
  --tls-ca FILE         connect with TLS, trusting the CA certificates in FILE instead
  --tls-cert FILE, --tls-key FILE
                        present this client certificate (a server with mutual TLS)
  --timeout DURATION    time limit of each call to the server (default 10s; 0: none)
  -o table|json|yaml    output format of list, get, create, update and history (default table);
                        yaml is the rules file format, which apply reads back

Exit codes: 0 success, 1 other failure, 2 bad command line, 3 invalid input
(a bad rules file or rule), 4 not found, 5 conflict (already exists, stale
etag, or an edit the Default rule does not allow), 6 server unreachable.

Run 'controlplane rules COMMAND -h' for a command's flags.
`

// defaultServer is where the CLI looks for the control plane unless told.
const defaultServer = "localhost:7070"

// runRules dispatches `controlplane rules COMMAND`.
func runRules(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return usageError(errors.New("rules: no command given"))
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "list":
		return runList(ctx, rest, stdout, stderr)
	case "get":
		return runGet(ctx, rest, stdout, stderr)
	case "create":
		return runCreate(ctx, rest, stdin, stdout, stderr)
	case "update":
		return runUpdate(ctx, rest, stdout, stderr)
	case "delete":
		return runDelete(ctx, rest, stdout, stderr)
	case "apply":
		return runApply(ctx, rest, stdin, stdout, stderr)
	case "history":
		return runHistory(ctx, rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return nil
	}
	fmt.Fprint(stderr, rulesUsage)
	return usageError(fmt.Errorf("rules: unknown command %q", cmd))
}

// newFlagSet returns a subcommand's flag set, with the flags every command
// has. Flag errors are printed to stderr with the command's usage.
func newFlagSet(group, name, synopsis, about string, stderr io.Writer, conn *connConfig) *flag.FlagSet {
	fs := flag.NewFlagSet(group+" "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controlplane %s %s\n\n%s\n\nFlags:\n", group, synopsis, about)
		fs.PrintDefaults()
	}
	server := defaultServer
	if v, ok := os.LookupEnv("CONTROLPLANE_SERVER"); ok && v != "" {
		server = v
	}
	fs.StringVar(&conn.server, "server", server, "gRPC `address` of the control plane (env CONTROLPLANE_SERVER)")
	fs.BoolVar(&conn.tls, "tls", false, "connect with TLS, trusting the system's root certificates")
	fs.StringVar(&conn.tlsCA, "tls-ca", "", "connect with TLS, trusting the CA certificates of this PEM `file` instead")
	fs.StringVar(&conn.tlsCert, "tls-cert", "", "connect with TLS, presenting the client certificate of this PEM `file` (with --tls-key; for mutual TLS)")
	fs.StringVar(&conn.tlsKey, "tls-key", "", "PEM `file` of the client certificate's private key")
	fs.DurationVar(&conn.timeout, "timeout", 10*time.Second, "time limit of each call to the server (0: none)")
	return fs
}

// givenFlags returns the names of the flags given on the command line.
func givenFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

func addOutputFlag(fs *flag.FlagSet, format *string) {
	fs.StringVar(format, "o", output.Table, "output `format`: table, json or yaml (the rules file format)")
}

// parseArgs parses flags wherever they are among the arguments (so that
// `get NAME -o yaml` works) and returns the other arguments. Everything
// after "--" is an argument.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return nil, &codedError{code: exitOK, err: errSilent}
		}
		if err != nil {
			return nil, usageError(errSilent) // the flag package printed it
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of arguments: from lo to hi rule names.
func wantArgs(group, cmd string, pos []string, lo, hi int) error {
	if len(pos) >= lo && len(pos) <= hi {
		return nil
	}
	noun := strings.TrimSuffix(group, "s") + " name"
	switch {
	case hi == 0:
		return usageError(fmt.Errorf("%s %s takes no arguments, got %q", group, cmd, pos))
	case lo == hi:
		return usageError(fmt.Errorf("%s %s takes exactly one %s, got %d arguments", group, cmd, noun, len(pos)))
	}
	return usageError(fmt.Errorf("%s %s takes at most %d %s, got %d arguments", group, cmd, hi, noun, len(pos)))
}

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		format string
	)
	fs := newFlagSet("rules", "list", "list [flags]",
		"Lists every rule, in the order rules are tried (priority, then name),\nfollowing page tokens until the end.", stderr, &conn)
	addOutputFlag(fs, &format)
	filter := fs.String("filter", "", "only rules matching `terms`, e.g. 'service=shop-api AND labels.team=payments'")
	pageSize := fs.Int("page-size", 100, "rules per call to the server")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "list", pos, 0, 0); err != nil {
		return err
	}
	if err := checkFormat(format); err != nil {
		return err
	}
	if *pageSize < 1 || *pageSize > math.MaxInt32 {
		return usageError(fmt.Errorf("--page-size: want a positive number, got %d", *pageSize))
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	rs, err := c.listRules(ctx, *filter, int32(*pageSize))
	if err != nil {
		return err
	}
	return output.WriteRules(stdout, format, rs, false)
}

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		format string
	)
	fs := newFlagSet("rules", "get", "get NAME [flags]", "Shows one rule. With -o yaml it prints a rules file that apply reads back.", stderr, &conn)
	addOutputFlag(fs, &format)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "get", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(format); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.rules.GetRule(ctx, &pb.GetRuleRequest{Name: pos[0]})
	if err != nil {
		return c.wrap("", err)
	}
	return output.WriteRules(stdout, format, []*pb.Rule{resp.GetRule()}, true)
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
	labels      kvFlag
	description string
}

func (rf *ruleFlags) register(fs *flag.FlagSet, withName bool) {
	if withName {
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
	fs.Var(&rf.labels, "label", "label `key=value` (repeatable; on update it replaces every label, and --label '' removes them all)")
	fs.StringVar(&rf.description, "description", "", "free `text` for people")
}

// flagPaths maps the rule flags to the API fields they set, in the proto's
// field order, which is the order of an update_mask.
func flagPaths() [][2]string {
	return [][2]string{
		{"priority", "priority"}, {"fixed-rate", "fixed_rate"}, {"reservoir", "reservoir_size"},
		{"service-name", "service_name"}, {"service-type", "service_type"}, {"host", "host"},
		{"http-method", "http_method"}, {"url-path", "url_path"}, {"resource-arn", "resource_arn"},
		{"attr", "attributes"}, {"description", "description"}, {"label", "labels"},
	}
}

// givenPaths returns the API fields of the rule flags given on the command line.
func givenPaths(fs *flag.FlagSet) []string {
	set := givenFlags(fs)
	var paths []string
	for _, fp := range flagPaths() {
		if set[fp[0]] {
			paths = append(paths, fp[1])
		}
	}
	return paths
}

func (rf *ruleFlags) proto(name string) (*pb.Rule, error) {
	if rf.priority < math.MinInt32 || rf.priority > math.MaxInt32 {
		return nil, usageError(fmt.Errorf("--priority: %d is out of range", rf.priority))
	}
	return &pb.Rule{
		Name:          name,
		Priority:      int32(rf.priority),
		FixedRate:     rf.fixedRate,
		ReservoirSize: rf.reservoir,
		ServiceName:   rf.serviceName,
		ServiceType:   rf.serviceType,
		Host:          rf.host,
		HttpMethod:    rf.httpMethod,
		UrlPath:       rf.urlPath,
		ResourceArn:   rf.resourceARN,
		Attributes:    rf.attrs.m,
		Description:   rf.description,
		Labels:        rf.labels.m,
	}, nil
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

func runCreate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		format string
		rf     ruleFlags
	)
	fs := newFlagSet("rules", "create", "create --name NAME --priority N [flags]\n       controlplane rules create -f FILE [flags]",
		`Creates one rule from flags, or every rule of a rules file (-f; - reads
stdin). A rules file is checked whole before anything is created; the
Default rule always exists, so a file for create must not contain it (use
apply). Omitted globs mean "*"; omitted numbers are zero.`, stderr, &conn)
	addOutputFlag(fs, &format)
	rf.register(fs, true)
	file := fs.String("f", "", "create every rule of this rules `file` (- for stdin)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "create", pos, 0, 0); err != nil {
		return err
	}
	if err := checkFormat(format); err != nil {
		return err
	}
	var todo []*pb.Rule
	if *file != "" {
		if len(givenPaths(fs)) > 0 || rf.name != "" {
			return usageError(errors.New("rules create: give either -f or rule flags, not both"))
		}
		entries, err := files.ReadRules(*file, stdin)
		if err != nil {
			return invalidInput(err)
		}
		var problems []string
		for _, e := range entries {
			if e.Rule.IsDefault() {
				problems = append(problems, fmt.Sprintf("%s:%d: rule %q (#%d): the Default rule always exists; change it with 'rules apply' or 'rules update Default'",
					files.DisplayName(*file), e.Line, e.Rule.Name, e.Index))
			}
			todo = append(todo, apiconv.RuleToProto(&e.Rule))
		}
		if len(problems) > 0 {
			return invalidInput(&files.Error{File: files.DisplayName(*file), Problems: problems})
		}
	} else {
		r, err := rf.proto(rf.name)
		if err != nil {
			return err
		}
		todo = append(todo, r)
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	var created []*pb.Rule
	for i, r := range todo {
		resp, err := c.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r})
		if err != nil {
			if len(todo) > 1 {
				reportPartial(stderr, "created", "not created", todo[:i], todo[i:])
			}
			return c.wrap(fmt.Sprintf("create rule %q", r.GetName()), err)
		}
		created = append(created, resp.GetRule())
	}
	return output.WriteRules(stdout, format, created, *file == "")
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

func runUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		format string
		rf     ruleFlags
	)
	fs := newFlagSet("rules", "update", "update NAME [flags]",
		`Changes the fields given as flags, and only those (the update mask is
exactly the flags given). With --etag the update is refused if the rule
changed since that etag was read.`, stderr, &conn)
	addOutputFlag(fs, &format)
	rf.register(fs, false)
	etag := fs.String("etag", "", "update only if the rule's current etag is this `etag`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "update", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(format); err != nil {
		return err
	}
	paths := givenPaths(fs)
	if len(paths) == 0 {
		return usageError(errors.New("rules update: nothing to change; give at least one field flag, e.g. --fixed-rate 0.1"))
	}
	r, err := rf.proto(pos[0])
	if err != nil {
		return err
	}
	r.Etag = *etag
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: r, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	if err != nil {
		return c.wrap("", err)
	}
	return output.WriteRules(stdout, format, []*pb.Rule{resp.GetRule()}, true)
}

func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var conn connConfig
	fs := newFlagSet("rules", "delete", "delete NAME [flags]",
		"Deletes a rule. The Default rule cannot be deleted. With --etag the delete\nis refused if the rule changed since that etag was read.", stderr, &conn)
	etag := fs.String("etag", "", "delete only if the rule's current etag is this `etag`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "delete", pos, 1, 1); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: pos[0], Etag: *etag}); err != nil {
		return c.wrap("", err)
	}
	fmt.Fprintf(stdout, "deleted rule %q\n", pos[0])
	return nil
}

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		format string
	)
	fs := newFlagSet("rules", "history", "history [NAME] [flags]",
		"Shows the audit log, newest first: who changed which rule, when, and\nwhat changed. With NAME, only that rule's events.", stderr, &conn)
	addOutputFlag(fs, &format)
	limit := fs.Int("limit", 50, "show at most this many events (0: all)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("rules", "history", pos, 0, 1); err != nil {
		return err
	}
	if err := checkFormat(format); err != nil {
		return err
	}
	if *limit < 0 {
		return usageError(fmt.Errorf("--limit: want 0 or more, got %d", *limit))
	}
	name := ""
	if len(pos) == 1 {
		name = pos[0]
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	events, err := c.listEvents(ctx, name, *limit)
	if err != nil {
		return err
	}
	return output.WriteEvents(stdout, format, events)
}

// normalized returns the domain form of an API rule, as apply compares it.
func normalized(p *pb.Rule) rules.Rule {
	return apiconv.RuleFromProto(p).Normalize()
}
