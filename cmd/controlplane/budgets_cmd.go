package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/rules"
)

const budgetsUsage = `Usage: controlplane budgets COMMAND [flags]

Manage the monthly tracing cost budgets of a control plane server, see where
each stands this month, and follow the alerts they raise.

Commands:
  list                  list budgets, by name
  get NAME              show one budget
  create NAME           create a budget from flags, or every budget of a file (-f)
  update NAME           change the fields given as flags, and only those
  delete NAME           delete a budget
  status NAME           spend and forecast this month (and how it was made),
                        enforcement, spend and plan per rule
  history NAME          the month hour by hour: spend, forecasts, factors
  alerts                list the alerts that fired, newest first
  watch                 print alerts as they fire, until interrupted (Ctrl-C)

Flags of every command:
  --server ADDR         gRPC address of the server (env CONTROLPLANE_SERVER; default localhost:7070)
  --tls                 connect with TLS, trusting the system's root certificates
  --tls-ca FILE         connect with TLS, trusting the CA certificates in FILE instead
  --tls-cert FILE, --tls-key FILE
                        present this client certificate (a server with mutual TLS)
  --timeout DURATION    time limit of each call to the server (default 10s; 0: none);
                        watch's stream itself has none
  -o table|json|yaml    output format (default table); for list and get, yaml is the
                        budgets file format, which create -f reads back; watch takes
                        table (one line per alert) or json (one object per line)

Exit codes: 0 success (watch: also when interrupted), 1 other failure, 2 bad
command line, 3 invalid input (a bad budgets file or budget), 4 not found,
5 conflict (already exists, or a stale etag), 6 server unreachable.

Run 'controlplane budgets COMMAND -h' for a command's flags.
`

// runBudgets dispatches `controlplane budgets COMMAND`.
func runBudgets(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, budgetsUsage)
		return usageError(errors.New("budgets: no command given"))
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "list":
		return runBudgetList(ctx, rest, stdout, stderr)
	case "get":
		return runBudgetGet(ctx, rest, stdout, stderr)
	case "create":
		return runBudgetCreate(ctx, rest, stdin, stdout, stderr)
	case "update":
		return runBudgetUpdate(ctx, rest, stdout, stderr)
	case "delete":
		return runBudgetDelete(ctx, rest, stdout, stderr)
	case "status":
		return runBudgetStatus(ctx, rest, stdout, stderr)
	case "history":
		return runBudgetHistory(ctx, rest, stdout, stderr)
	case "alerts":
		return runBudgetAlerts(ctx, rest, stdout, stderr)
	case "watch":
		return runBudgetWatch(ctx, rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, budgetsUsage)
		return nil
	}
	fmt.Fprint(stderr, budgetsUsage)
	return usageError(fmt.Errorf("budgets: unknown command %q", cmd))
}

func addBudgetOutputFlag(fs *flag.FlagSet, output *string) {
	fs.StringVar(output, "o", formatTable, "output `format`: table, json or yaml (for list and get, the budgets file format)")
}

// budgetAPI returns a BudgetService client on c's connection.
func budgetAPI(c *client) pb.BudgetServiceClient { return pb.NewBudgetServiceClient(c.conn) }

// listBudgets returns every budget, following page tokens.
func listBudgets(ctx context.Context, c *client) ([]*pb.Budget, error) {
	api := budgetAPI(c)
	var all []*pb.Budget
	for token := ""; ; {
		resp, err := api.ListBudgets(ctx, &pb.ListBudgetsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			return nil, c.wrap("list budgets", err)
		}
		all = append(all, resp.GetBudgets()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

// listBudgetAlerts returns up to limit alerts (0: all), newest first.
func listBudgetAlerts(ctx context.Context, c *client, budgetName string, limit int) ([]*pb.Alert, error) {
	const maxPage = 1000
	api := budgetAPI(c)
	var all []*pb.Alert
	for token := ""; ; {
		size := maxPage
		if limit > 0 {
			size = min(limit-len(all), maxPage)
		}
		resp, err := api.ListAlerts(ctx, &pb.ListAlertsRequest{BudgetName: budgetName, PageSize: int32(size), PageToken: token})
		if err != nil {
			return nil, c.wrap("list alerts", err)
		}
		all = append(all, resp.GetAlerts()...)
		token = resp.GetNextPageToken()
		if token == "" || limit > 0 && len(all) >= limit {
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			return all, nil
		}
	}
}

func runBudgetList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
	)
	fs := newFlagSet("budgets", "list", "list [flags]", "Lists every budget, by name.", stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "list", pos, 0, 0); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	bs, err := listBudgets(ctx, c)
	if err != nil {
		return err
	}
	return writeBudgets(stdout, output, bs, false)
}

func runBudgetGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
	)
	fs := newFlagSet("budgets", "get", "get NAME [flags]",
		"Shows one budget. With -o yaml it prints the budgets file format (webhook\nURLs redacted and secrets shown as \"****\", as the server returns them).", stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "get", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := budgetAPI(c).GetBudget(ctx, &pb.GetBudgetRequest{Name: pos[0]})
	if err != nil {
		return c.wrap("", err)
	}
	return writeBudgets(stdout, output, []*pb.Budget{resp.GetBudget()}, true)
}

// budgetFlags are the fields of a budget as create and update take them.
type budgetFlags struct {
	description        string
	services           budgetListFlag
	ruleLabels         kvFlag
	amount             amountFlag
	currency           string
	pricePerMillion    amountFlag
	freeTraces         int64
	mode               string
	thresholds         budgetFloatsFlag
	forecastThresholds budgetFloatsFlag
	webhooks           budgetListFlag
	webhookSecret      string
	floor              float64
	priorities         priorityFlag
	coverageMinutes    int
	pricing            string
	retrievedPrice     amountFlag
	retrievalsPerTrace float64
	spanPrice          amountFlag
	spansPerTrace      float64
	burnRates          budgetFloatsFlag
}

// register defines the flags. Create's defaults are the budget's; update's
// are zero, since update sends only the flags given.
func (bf *budgetFlags) register(fs *flag.FlagSet, update bool) {
	currency, price, mode := budget.DefaultCurrency, int64(budget.DefaultPricePerMillionMicros), budget.Enforce.String()
	onUpdate, secretOnUpdate := "", ""
	if update {
		currency, price, mode = "", 0, ""
		onUpdate = "; on update it replaces the list, and '' empties it"
		secretOnUpdate = "; without it, a webhook that was there before keeps its secret"
	}
	fs.StringVar(&bf.description, "description", "", "free `text` for people")
	fs.Var(&bf.services, "service", "service name `glob` the budget covers (repeatable; none: every service"+onUpdate+")")
	fs.Var(&bf.ruleLabels, "rule-label", "`key=value` label a rule must carry for its traces to count (repeatable"+onUpdate+")")
	bf.pricePerMillion.micros = price
	fs.Var(&bf.amount, "amount", "monthly cap in currency `units`, at most 6 decimal places (required on create)")
	fs.StringVar(&bf.currency, "currency", currency, "ISO 4217 `code`; informational, nothing is converted")
	fs.Var(&bf.pricePerMillion, "price-per-million", "`price` of a million recorded traces, in currency units")
	fs.Int64Var(&bf.freeTraces, "free-traces", 0, "traces per month that cost nothing (a vendor's free tier)")
	fs.StringVar(&bf.mode, "mode", mode, "enforce (lower the rates of the rules in scope to land under the cap) or alert_only")
	fs.Var(&bf.thresholds, "threshold", "alert when this `share` of the cap is spent (repeatable; default 0.5, 0.8, 1"+onUpdate+")")
	fs.Var(&bf.forecastThresholds, "forecast-threshold", "alert when the month-end forecast exceeds this `share` of the cap (repeatable; default 1; a single 0 turns forecast alerts off"+onUpdate+")")
	fs.Var(&bf.webhooks, "webhook", "http(s) `URL` that alerts are POSTed to (repeatable"+onUpdate+")")
	fs.StringVar(&bf.webhookSecret, "webhook-secret", "", "HMAC-SHA256 signing `secret` of every --webhook given with it (for different secrets, use create -f)"+secretOnUpdate)
	fs.Float64Var(&bf.floor, "floor", 0, "traces per `second` kept in scope even when the budget is exhausted; refused if a 31-day month of it costs more than --amount")
	fs.Var(&bf.priorities, "priority", "`SELECTOR:N`: rules of priority N are cut only after every lower one is at its floor; SELECTOR is a rule name, "+
		"or KEY=VALUE for the rules with that label (repeatable, the first that selects a rule counts; unselected rules have 0"+onUpdate+")")
	fs.IntVar(&bf.coverageMinutes, "coverage-minutes", 0, "keep one trace per service and rule every `N` minutes (1-1440), reserved in the plan; 0: none")
	fs.StringVar(&bf.pricing, "pricing", "", "`preset` of a vendor's prices ("+strings.Join(budget.PresetNames(), ", ")+
		"): sets the currency, the prices and the free traces; flags given with it win")
	fs.Var(&bf.retrievedPrice, "retrieved-price-per-million", "`price` of a million traces retrieved or scanned by queries")
	fs.Float64Var(&bf.retrievalsPerTrace, "retrievals-per-trace", 0, "traces retrieved or scanned per trace recorded, an `estimate` (default 1 with a retrieved price)")
	fs.Var(&bf.spanPrice, "span-price-per-million", "`price` of a million spans, for span-priced backends")
	fs.Float64Var(&bf.spansPerTrace, "spans-per-trace", 0, "spans per recorded trace, an `estimate` (required with --span-price-per-million)")
	fs.Var(&bf.burnRates, "burn-rate", "alert when the last hour costs this `multiple` of the even rate (the amount spread over the month; repeatable; 14.4 is 2 % of a 30-day budget in an hour"+onUpdate+")")
}

// budgetFlagPaths maps the budget flags to the API fields they set, in the
// proto's field order, which is the order of an update_mask.
var budgetFlagPaths = [][2]string{
	{"description", "description"}, {"service", "scope"}, {"rule-label", "scope"}, {"amount", "monthly_amount_micros"},
	{"currency", "currency_code"}, {"price-per-million", "price_per_million_micros"}, {"free-traces", "free_traces"}, {"mode", "mode"},
	{"threshold", "spend_thresholds"}, {"forecast-threshold", "forecast_thresholds"}, {"webhook", "channels"},
	{"floor", "floor_traces_per_second"}, {"priority", "rule_priorities"}, {"coverage-minutes", "coverage_minutes"},
	{"pricing", "currency_code"}, {"pricing", "price_per_million_micros"}, {"pricing", "free_traces"},
	{"pricing", "retrieved_price_per_million_micros"}, {"retrieved-price-per-million", "retrieved_price_per_million_micros"},
	{"pricing", "retrievals_per_trace"}, {"retrievals-per-trace", "retrievals_per_trace"},
	{"pricing", "span_price_per_million_micros"}, {"span-price-per-million", "span_price_per_million_micros"},
	{"spans-per-trace", "spans_per_trace"}, {"burn-rate", "burn_rate_thresholds"},
}

// givenBudgetPaths returns the API fields of the budget flags given.
func givenBudgetPaths(given map[string]bool) []string {
	var paths []string
	for _, fp := range budgetFlagPaths {
		if given[fp[0]] && !slices.Contains(paths, fp[1]) {
			paths = append(paths, fp[1])
		}
	}
	return paths
}

// proto returns the budget the flags describe. The one thing the API cannot
// carry, a mode that is neither enforce nor alert_only, comes back as a
// field violation. On update a webhook without --webhook-secret is sent with
// the masked secret, which keeps the secret it had if it was there before.
func (bf *budgetFlags) proto(name string, given map[string]bool, update bool) (*pb.Budget, []rules.FieldViolation) {
	p := &pb.Budget{
		Name:                  name,
		Description:           bf.description,
		MonthlyAmountMicros:   bf.amount.micros,
		CurrencyCode:          bf.currency,
		PricePerMillionMicros: bf.pricePerMillion.micros,
		FreeTraces:            bf.freeTraces,
		SpendThresholds:       bf.thresholds.v,
		ForecastThresholds:    bf.forecastThresholds.v,
		FloorTracesPerSecond:  bf.floor,
		CoverageMinutes:       int32(bf.coverageMinutes),

		RetrievedPricePerMillionMicros: bf.retrievedPrice.micros,
		RetrievalsPerTrace:             bf.retrievalsPerTrace,
		SpanPricePerMillionMicros:      bf.spanPrice.micros,
		SpansPerTrace:                  bf.spansPerTrace,
		BurnRateThresholds:             bf.burnRates.v,
	}
	for _, e := range bf.priorities.v {
		p.RulePriorities = append(p.RulePriorities, &pb.RulePriority{RuleNames: e.RuleNames, RuleLabels: e.RuleLabels, Priority: e.Priority})
	}
	var vs []rules.FieldViolation
	if bf.pricing != "" {
		pr, ok := budget.Preset(bf.pricing)
		if !ok {
			vs = append(vs, rules.FieldViolation{Field: "pricing", Description: fmt.Sprintf("a preset: %s; got %q",
				strings.Join(budget.PresetNames(), ", "), bf.pricing)})
		}
		// The preset's figures, but for the flags given with it.
		set := func(flag string, dst *int64, v int64) {
			if !given[flag] {
				*dst = v
			}
		}
		if !given["currency"] {
			p.CurrencyCode = "USD"
		}
		set("price-per-million", &p.PricePerMillionMicros, pr.PricePerMillionMicros)
		set("free-traces", &p.FreeTraces, pr.FreeTraces)
		set("retrieved-price-per-million", &p.RetrievedPricePerMillionMicros, pr.RetrievedPricePerMillionMicros)
		set("span-price-per-million", &p.SpanPricePerMillionMicros, pr.SpanPricePerMillionMicros)
		if !given["retrievals-per-trace"] {
			p.RetrievalsPerTrace = pr.RetrievalsPerTrace
		}
	}
	if len(bf.services.v) > 0 || len(bf.ruleLabels.m) > 0 {
		p.Scope = &pb.BudgetScope{ServiceNames: bf.services.v, RuleLabels: bf.ruleLabels.m}
	}
	switch bf.mode {
	case "enforce":
		p.Mode = pb.Budget_MODE_ENFORCE
	case "alert_only":
		p.Mode = pb.Budget_MODE_ALERT_ONLY
	case "":
		if given["mode"] {
			vs = append(vs, rules.FieldViolation{Field: "budget.mode", Description: "enforce or alert_only, got \"\""})
		}
	default:
		vs = append(vs, rules.FieldViolation{Field: "budget.mode", Description: fmt.Sprintf("enforce or alert_only, got %q", bf.mode)})
	}
	for _, u := range bf.webhooks.v {
		secret := bf.webhookSecret
		if update && !given["webhook-secret"] {
			secret = budget.SecretMask
		}
		p.Channels = append(p.Channels, &pb.NotificationChannel{WebhookUrl: u, Secret: secret})
	}
	return p, vs
}

// amountFlag is an amount of money in currency units, such as 12.50, read
// exactly into micros.
type amountFlag struct{ micros int64 }

func (f *amountFlag) String() string {
	if f == nil || f.micros == 0 {
		return ""
	}
	return budget.FormatMicros(f.micros)
}

func (f *amountFlag) Set(s string) error {
	m, err := budget.ParseMicros(s)
	if err != nil {
		return err
	}
	f.micros = m
	return nil
}

// budgetListFlag is a repeatable text flag; "" given alone means an empty list.
type budgetListFlag struct{ v []string }

func (f *budgetListFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.v, ",")
}

func (f *budgetListFlag) Set(s string) error {
	if s != "" {
		f.v = append(f.v, s)
	}
	return nil
}

// budgetFloatsFlag is a repeatable number flag; "" given alone means an empty
// list (the server's defaults).
type budgetFloatsFlag struct{ v []float64 }

func (f *budgetFloatsFlag) String() string {
	if f == nil {
		return ""
	}
	parts := make([]string, len(f.v))
	for i, x := range f.v {
		parts[i] = formatRate(x)
	}
	return strings.Join(parts, ",")
}

func (f *budgetFloatsFlag) Set(s string) error {
	if s == "" {
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("want a number such as 0.8, got %q", s)
	}
	f.v = append(f.v, x)
	return nil
}

// priorityFlag is a repeatable --priority SELECTOR:N; "" given alone means
// an empty list.
type priorityFlag struct{ v []budget.RulePriority }

func (f *priorityFlag) String() string {
	if f == nil {
		return ""
	}
	parts := make([]string, len(f.v))
	for i, e := range f.v {
		parts[i] = priorityText(e.RuleNames, e.RuleLabels, e.Priority)
	}
	return strings.Join(parts, ",")
}

func (f *priorityFlag) Set(s string) error {
	if s == "" {
		return nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return fmt.Errorf("want SELECTOR:N such as checkout:10 or tier=critical:10, got %q", s)
	}
	sel := s[:i]
	prio, err := strconv.ParseInt(s[i+1:], 10, 32)
	if sel == "" || err != nil {
		return fmt.Errorf("want SELECTOR:N such as checkout:10 or tier=critical:10, got %q", s)
	}
	e := budget.RulePriority{Priority: int32(prio)}
	if k, v, isLabel := strings.Cut(sel, "="); isLabel {
		e.RuleLabels = map[string]string{k: v}
	} else {
		e.RuleNames = []string{sel}
	}
	f.v = append(f.v, e)
	return nil
}

// priorityText prints a priority entry as --priority takes it, or as
// "{names}{labels}:N" when it has several.
func priorityText(names []string, labels map[string]string, prio int32) string {
	var sel []string
	sel = append(sel, names...)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		sel = append(sel, k+"="+labels[k])
	}
	return strings.Join(sel, "+") + ":" + strconv.FormatInt(int64(prio), 10)
}

// budgetLocalInvalid reports a budget that is not sent because the command line
// cannot express it, in the form of the server's own answer.
func budgetLocalInvalid(op string, vs []rules.FieldViolation) error {
	order := func(field string) int {
		top := strings.TrimPrefix(budgetTopField(field), "budget.")
		for i, fp := range budgetFlagPaths {
			if fp[1] == top {
				return i
			}
		}
		return -1 // the name
	}
	slices.SortStableFunc(vs, func(a, b rules.FieldViolation) int { return cmp.Compare(order(a.Field), order(b.Field)) })
	var b strings.Builder
	b.WriteString(op + ": invalid budget, nothing was sent")
	for _, v := range vs {
		b.WriteString("\n  " + v.Field + ": " + v.Description)
	}
	return invalidInput(errors.New(b.String()))
}

// budgetTopField is the top-level field of a field path: "channels" of
// "channels[0].webhook_url", "budget.scope" of "budget.scope.service_names".
func budgetTopField(field string) string {
	prefix := ""
	if rest, ok := strings.CutPrefix(field, "budget."); ok {
		prefix, field = "budget.", rest
	}
	if i := strings.IndexAny(field, ".["); i >= 0 {
		field = field[:i]
	}
	return prefix + field
}

const budgetCreateAbout = `Creates one budget from flags, or every budget of a budgets file (-f; -
reads stdin). A budgets file is checked whole before anything is created:

  budgets:
    - name: shop
      monthly_amount: 500
      scope: {service_names: ["shop-*"], rule_labels: {team: payments}}
      mode: enforce                     # or alert_only
      spend_thresholds: [0.5, 0.8, 1]
      forecast_thresholds: [1]          # [0]: no forecast alerts
      channels:
        - {webhook_url: "https://hooks.example.com/budget", secret: s3cret}
      floor_traces_per_second: 1

Fields are the API's, in snake_case, but for money: monthly_amount,
price_per_million, retrieved_price_per_million and span_price_per_million
are in currency units (at most 6 decimal places) where the API has *_micros.
An unknown field is an error. Omitted fields take the server's defaults
(currency_code USD, 5 per million traces, thresholds 0.5, 0.8, 1 and forecast
1, enforce). More fields:

      rule_priorities:                  # cut the lowest first; unselected rules: 0
        - {rule_labels: {tier: critical}, priority: 10}
        - {rule_names: [health], priority: -1}
      pricing: aws-xray                 # a preset; prices given beside it win
      retrievals_per_trace: 2           # with a retrieved price
      coverage_minutes: 5
      burn_rate_thresholds: [14.4]

Pricing presets: aws-xray, aws-xray-insights (their prices and dates are
in the README).

--webhook-secret signs every --webhook given with it; to give webhooks
different secrets, or to keep secrets off the command line, use a file.`

func runBudgetCreate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
		bf     budgetFlags
	)
	fs := newFlagSet("budgets", "create", "create NAME --amount AMOUNT [flags]\n       controlplane budgets create -f FILE [flags]", budgetCreateAbout, stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	// The flags every command has, and -o, go with -f too.
	withFile := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { withFile[f.Name] = true })
	bf.register(fs, false)
	file := fs.String("f", "", "create every budget of this budgets `file` (- for stdin)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	given := givenFlags(fs)
	var todo []*pb.Budget
	if *file != "" {
		delete(given, "f")
		maps.DeleteFunc(given, func(name string, _ bool) bool { return withFile[name] })
		if len(pos) > 0 || len(given) > 0 {
			return usageError(errors.New("budgets create: give either -f FILE or NAME and budget flags, not both"))
		}
		if todo, err = readBudgetsFile(*file, stdin); err != nil {
			return invalidInput(err)
		}
	} else {
		if err := wantArgs("budgets", "create", pos, 1, 1); err != nil {
			return err
		}
		if !given["amount"] {
			fs.Usage()
			return usageError(errors.New("budgets create: --amount is required"))
		}
		if given["webhook-secret"] && len(bf.webhooks.v) == 0 {
			return usageError(errors.New("budgets create: --webhook-secret signs the --webhook URLs given with it; give at least one"))
		}
		p, vs := bf.proto(pos[0], given, false)
		if len(vs) > 0 {
			// Nothing is sent: list every other problem too, with the one
			// definition of a valid budget.
			b := apiconv.BudgetFromProto(p).Normalize()
			var ve *rules.ValidationError
			if errors.As(budget.Validate(&b), &ve) {
				for _, v := range ve.Violations {
					vs = append(vs, rules.FieldViolation{Field: "budget." + v.Field, Description: v.Description})
				}
			}
			return budgetLocalInvalid(fmt.Sprintf("create budget %q", pos[0]), vs)
		}
		todo = append(todo, p)
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	api := budgetAPI(c)
	var created []*pb.Budget
	for i, b := range todo {
		resp, err := api.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: b})
		if err != nil {
			if len(todo) > 1 {
				fmt.Fprintf(stderr, "created: %s\nnot created: %s\n", budgetNames(todo[:i]), budgetNames(todo[i:]))
			}
			return c.wrap(fmt.Sprintf("create budget %q", b.GetName()), err)
		}
		created = append(created, resp.GetBudget())
	}
	return writeBudgets(stdout, output, created, *file == "")
}

func budgetNames(bs []*pb.Budget) string {
	if len(bs) == 0 {
		return "(none)"
	}
	ns := make([]string, len(bs))
	for i, b := range bs {
		ns[i] = b.GetName()
	}
	return strings.Join(ns, ", ")
}

// budgetUpdateRetries is how often update re-reads a budget whose scope it merges
// when someone else changed it in between.
const budgetUpdateRetries = 3

func runBudgetUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
		bf     budgetFlags
	)
	fs := newFlagSet("budgets", "update", "update NAME [flags]",
		`Changes the fields given as flags, and only those (the update mask is
exactly the flags given). --service and --rule-label each replace their part
of the scope and keep the other. --webhook replaces every webhook; one that
was there before keeps its secret unless --webhook-secret is given, and a URL
copied redacted from get (https://host/…) keeps the webhook it was read
from. With --etag the update is refused if the budget changed since that
etag was read.`, stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	bf.register(fs, true)
	etag := fs.String("etag", "", "update only if the budget's current etag is this `etag`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "update", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	given := givenFlags(fs)
	if given["webhook-secret"] && !given["webhook"] {
		return usageError(errors.New("budgets update: --webhook-secret signs the --webhook URLs given with it; give them too"))
	}
	paths := givenBudgetPaths(given)
	if len(paths) == 0 {
		return usageError(errors.New("budgets update: nothing to change; give at least one field flag, e.g. --amount 800"))
	}
	p, vs := bf.proto(pos[0], given, true)
	if len(vs) > 0 {
		return budgetLocalInvalid(fmt.Sprintf("update budget %q", pos[0]), vs)
	}
	p.Etag = *etag
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	api := budgetAPI(c)
	// The scope is one field of the API: to change one part of it, read the
	// other and send it back, under the etag read unless one was given, so
	// that a concurrent change to the scope is not undone.
	mergeScope := given["service"] != given["rule-label"]
	for attempt := 0; ; attempt++ {
		if mergeScope {
			resp, err := api.GetBudget(ctx, &pb.GetBudgetRequest{Name: pos[0]})
			if err != nil {
				return c.wrap("", err)
			}
			cur := resp.GetBudget()
			scope := &pb.BudgetScope{ServiceNames: bf.services.v, RuleLabels: bf.ruleLabels.m}
			if given["service"] {
				scope.RuleLabels = cur.GetScope().GetRuleLabels()
			} else {
				scope.ServiceNames = cur.GetScope().GetServiceNames()
			}
			p.Scope = scope
			if *etag == "" {
				p.Etag = cur.GetEtag()
			}
		}
		resp, err := api.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if mergeScope && *etag == "" && status.Code(err) == codes.Aborted && attempt < budgetUpdateRetries {
			continue
		}
		if err != nil {
			return c.wrap("", err) // the server's errors name the budget
		}
		return writeBudgets(stdout, output, []*pb.Budget{resp.GetBudget()}, true)
	}
}

func runBudgetDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var conn connConfig
	fs := newFlagSet("budgets", "delete", "delete NAME [flags]",
		"Deletes a budget; the rules it enforced go back to their own rates. With\n--etag the delete is refused if the budget changed since that etag was read.", stderr, &conn)
	etag := fs.String("etag", "", "delete only if the budget's current etag is this `etag`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "delete", pos, 1, 1); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := budgetAPI(c).DeleteBudget(ctx, &pb.DeleteBudgetRequest{Name: pos[0], Etag: *etag}); err != nil {
		return c.wrap("", err)
	}
	fmt.Fprintf(stdout, "deleted budget %q\n", pos[0])
	return nil
}

func runBudgetStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
	)
	fs := newFlagSet("budgets", "status", "status NAME [flags]",
		`Shows where a budget stands this month (UTC): money spent and the month-end
forecast against the cap, the factors enforcement applies to the fixed rates
and reservoirs of the rules in scope, whether the budget is exhausted, and
the spend of each rule. -o json prints the API's BudgetStatus.`, stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "status", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	api := budgetAPI(c)
	resp, err := api.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: pos[0]})
	if err != nil {
		return c.wrap("", err)
	}
	st := resp.GetStatus()
	switch output {
	case formatJSON:
		return writeJSON(stdout, st)
	case formatYAML:
		b, err := marshalJSON(st)
		if err != nil {
			return err
		}
		return writeBudgetYAML(stdout, b)
	}
	// The table also shows the cap in money and the mode, which are the
	// budget's.
	b, err := api.GetBudget(ctx, &pb.GetBudgetRequest{Name: pos[0]})
	if err != nil {
		return c.wrap("", err)
	}
	return writeBudgetStatus(stdout, b.GetBudget(), st)
}

func runBudgetAlerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
	)
	fs := newFlagSet("budgets", "alerts", "alerts [flags]",
		"Lists the alerts that fired, newest first. Each fires once per budget,\nmonth and threshold.", stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	name := fs.String("budget", "", "only this budget's alerts")
	limit := fs.Int("limit", 50, "show at most this many alerts (0: all)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "alerts", pos, 0, 0); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	if *limit < 0 {
		return usageError(fmt.Errorf("--limit: want 0 or more, got %d", *limit))
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	alerts, err := listBudgetAlerts(ctx, c, *name, *limit)
	if err != nil {
		return err
	}
	switch output {
	case formatJSON:
		return writeJSONList(stdout, "alerts", alerts)
	case formatYAML:
		b, err := jsonList("alerts", alerts)
		if err != nil {
			return err
		}
		return writeBudgetYAML(stdout, b)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tBUDGET\tKIND\tTHRESHOLD\tMESSAGE")
	for _, a := range alerts {
		fmt.Fprintln(tw, strings.Join(alertCells(a), "\t"))
	}
	return tw.Flush()
}

// Backoff between attempts to watch again after a lost stream.
const (
	watchBackoffMin = 250 * time.Millisecond
	watchBackoffMax = 30 * time.Second
)

func runBudgetWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
	)
	fs := newFlagSet("budgets", "watch", "watch [flags]",
		`Prints each alert as it fires, on whichever replica, until interrupted
(Ctrl-C, exit code 0): one line per alert (TIME BUDGET KIND THRESHOLD
MESSAGE), or with -o json one JSON object per line. A lost stream (a server
restart, a connection aged out) is watched again from the last alert
printed, so the alerts that fired in between are printed first.`, stderr, &conn)
	fs.StringVar(&output, "o", formatTable, "output `format`: table (one line per alert) or json (one object per line)")
	name := fs.String("budget", "", "only this budget's alerts")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "watch", pos, 0, 0); err != nil {
		return err
	}
	if output != formatTable && output != formatJSON {
		return usageError(fmt.Errorf("-o: watch prints table or json, got %q", output))
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	w := &alertWatch{c: c, api: budgetAPI(c), budget: *name, json: output == formatJSON, stdout: stdout, stderr: stderr}
	err = w.run(ctx)
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop watching
	}
	return err
}

// alertWatch follows WatchAlerts, watching again when the stream is lost.
type alertWatch struct {
	c      *client
	api    pb.BudgetServiceClient
	budget string
	json   bool
	stdout io.Writer
	stderr io.Writer
	last   string // ID of the newest alert printed or known when the watch began
}

func (w *alertWatch) run(ctx context.Context) error {
	// These calls fail fast, so a wrong server, name or budget is reported
	// at once; later losses of the stream are waited out.
	if w.budget != "" {
		if _, err := w.api.GetBudget(ctx, &pb.GetBudgetRequest{Name: w.budget}); err != nil {
			return w.c.wrap("", err)
		}
	}
	resp, err := w.api.ListAlerts(ctx, &pb.ListAlertsRequest{BudgetName: w.budget, PageSize: 1})
	if err != nil {
		return w.c.wrap("watch alerts", err)
	}
	if as := resp.GetAlerts(); len(as) > 0 {
		w.last = as[0].GetId()
	}
	backoff := watchBackoffMin
	for again := false; ; again = true {
		start := time.Now()
		err := w.stream(ctx, again)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, io.EOF) && status.Code(err) != codes.Unavailable {
			return w.c.wrap("watch alerts", err)
		}
		if time.Since(start) > time.Minute {
			backoff = watchBackoffMin
		}
		fmt.Fprintf(w.stderr, "watch: lost the alert stream (%s); watching again\n", status.Convert(err).Message())
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// stream opens one WatchAlerts stream and prints what it sends until it
// fails. It resumes after the last alert printed, so the server first sends
// what fired while no stream was open. When watching again, it waits for the
// server to be reachable.
func (w *alertWatch) stream(ctx context.Context, again bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// With no alert printed or listed yet, every alert the server lists is
	// one to print.
	req := &pb.WatchAlertsRequest{BudgetName: w.budget, AfterId: w.last, FromOldest: w.last == ""}
	stream, err := w.api.WatchAlerts(ctx, req, grpc.WaitForReady(again))
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := w.print(resp.GetAlert()); err != nil {
			return err
		}
	}
}

func (w *alertWatch) print(a *pb.Alert) error {
	w.last = a.GetId()
	if w.json {
		b, err := marshalJSON(a)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w.stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(w.stdout, strings.Join(alertCells(a), "  "))
	return err
}

// alertCells are an alert's TIME, BUDGET, KIND, THRESHOLD and MESSAGE.
func alertCells(a *pb.Alert) []string {
	threshold := "-"
	switch {
	case a.GetKind() == pb.Alert_KIND_BURN_RATE:
		threshold = strconv.FormatFloat(a.GetThreshold(), 'g', -1, 64) + "x"
	case a.GetThreshold() > 0:
		threshold = budgetPercent(a.GetThreshold())
	}
	return []string{a.GetFireTime().AsTime().UTC().Format(time.RFC3339), a.GetBudgetName(), alertKindText(a.GetKind()), threshold, a.GetMessage()}
}

func alertKindText(k pb.Alert_Kind) string {
	switch k {
	case pb.Alert_KIND_SPEND_THRESHOLD:
		return "spend_threshold"
	case pb.Alert_KIND_FORECAST_OVER:
		return "forecast_over"
	case pb.Alert_KIND_ENFORCEMENT_STARTED:
		return "enforcement_started"
	case pb.Alert_KIND_EXHAUSTED:
		return "exhausted"
	case pb.Alert_KIND_ENFORCEMENT_ENDED:
		return "enforcement_ended"
	case pb.Alert_KIND_BURN_RATE:
		return "burn_rate"
	}
	return "unknown"
}

// percent prints a share as a percentage without float noise: 0.57 is
// "57%", not "56.99999999999999%".
func budgetPercent(share float64) string {
	return strconv.FormatFloat(math.Round(share*1e6)/1e4, 'f', -1, 64) + "%"
}

// budgetMoney prints micros as units with at least two decimals: "500.00",
// "12.25", "0.000001".
func budgetMoney(micros int64) string {
	s := budget.FormatMicros(micros)
	switch i := strings.IndexByte(s, '.'); {
	case i < 0:
		return s + ".00"
	case len(s)-i == 2:
		return s + "0"
	}
	return s
}

func budgetModeName(m pb.Budget_Mode) string {
	if m == pb.Budget_MODE_ALERT_ONLY {
		return budget.AlertOnly.String()
	}
	return budget.Enforce.String()
}

// writeBudgets prints budgets: a table, protojson ({"budgets": [...]}, or
// the bare budget when one was asked for), or the budgets file format.
func writeBudgets(w io.Writer, format string, bs []*pb.Budget, single bool) error {
	switch format {
	case formatJSON:
		if single && len(bs) == 1 {
			return writeJSON(w, bs[0])
		}
		return writeJSONList(w, "budgets", bs)
	case formatYAML:
		return writeBudgetsFile(w, bs)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODE\tAMOUNT\tCURRENCY\tSCOPE\tTHRESHOLDS")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.GetName(), budgetModeName(b.GetMode()), budgetMoney(b.GetMonthlyAmountMicros()),
			b.GetCurrencyCode(), scopeText(b.GetScope()), thresholdsText(b))
	}
	return tw.Flush()
}

// scopeText sums up a scope without spaces, like a selector: "*", "shop-*",
// "shop-*,search{team=payments}", "*{team=payments}".
func scopeText(s *pb.BudgetScope) string {
	text := "*"
	if len(s.GetServiceNames()) > 0 {
		text = strings.Join(s.GetServiceNames(), ",")
	}
	if len(s.GetRuleLabels()) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(s.GetRuleLabels())) {
			parts = append(parts, k+"="+s.GetRuleLabels()[k])
		}
		text += "{" + strings.Join(parts, ",") + "}"
	}
	return text
}

// thresholdsText is "50%,80%,100%; forecast 100%".
func thresholdsText(b *pb.Budget) string {
	list := func(ts []float64) string {
		parts := make([]string, len(ts))
		for i, t := range ts {
			parts[i] = budgetPercent(t)
		}
		return strings.Join(parts, ",")
	}
	forecast := "forecast " + list(b.GetForecastThresholds())
	if fts := b.GetForecastThresholds(); len(fts) == 0 || len(fts) == 1 && fts[0] == 0 {
		forecast = "forecast off"
	}
	return list(b.GetSpendThresholds()) + "; " + forecast
}

// writeBudgetStatus prints a status as a block of fields and, when rules
// were counted or planned, a table of each rule's spend and plan.
func writeBudgetStatus(w io.Writer, b *pb.Budget, st *pb.BudgetStatus) error {
	cur := " " + st.GetCurrencyCode()
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "BUDGET\t%s (%s)\n", st.GetBudgetName(), budgetModeName(b.GetMode()))
	if st.GetMonthStartTime() != nil {
		fmt.Fprintf(tw, "MONTH\t%s (UTC)\n", st.GetMonthStartTime().AsTime().UTC().Format("2006-01"))
	}
	fmt.Fprintf(tw, "SPENT\t%s of %s (%s)\n", budgetMoney(st.GetSpentMicros())+cur, budgetMoney(b.GetMonthlyAmountMicros())+cur, budgetRatio(st.GetSpentRatio()))
	fmt.Fprintf(tw, "FORECAST\t%s at month end (%s); %s (%s) at the rules' own rates\n", budgetMoney(st.GetForecastMicros())+cur,
		budgetRatio(st.GetForecastRatio()), budgetMoney(st.GetForecastUnenforcedMicros())+cur, budgetRatio(st.GetForecastUnenforcedRatio()))
	if e := st.GetForecastExplanation(); e != nil {
		fmt.Fprintf(tw, "HOW\t%s\n", forecastText(e))
	}
	fmt.Fprintf(tw, "TRACES\t%d sampled of %d requests; cap %d\n", st.GetSampledTraces(), st.GetRequests(), st.GetCapTraces())
	if st.GetComputedTime() != nil {
		fmt.Fprintf(tw, "BURN RATE\t%sx the even rate over the last hour\n", strconv.FormatFloat(math.Round(st.GetBurnRate()*100)/100, 'f', -1, 64))
	}
	fmt.Fprintf(tw, "FACTORS\tfixed rates x%s, reservoirs x%s (the lowest of any rule)\n", budgetFactorText(st.GetFixedRateFactor()), budgetFactorText(st.GetReservoirFactor()))
	enforcing := "no"
	if st.GetEnforcing() {
		enforcing = "yes"
	}
	switch n := st.GetEnforcementEpisodes(); {
	case n == 1:
		enforcing += " (1 episode this month)"
	case n > 1:
		enforcing += fmt.Sprintf(" (%d episodes this month)", n)
	}
	fmt.Fprintf(tw, "ENFORCING\t%s\n", enforcing)
	if r := st.GetCoverageReserveTraces(); r > 0 || b.GetCoverageMinutes() > 0 {
		fmt.Fprintf(tw, "COVERAGE\tone trace per service and rule every %d minutes: %d traces reserved to month end\n", b.GetCoverageMinutes(), r)
	}
	exhausted := "no"
	if st.GetExhausted() {
		exhausted = "yes: only the floor is traced"
	}
	fmt.Fprintf(tw, "EXHAUSTED\t%s\n", exhausted)
	computed := "not yet: the controller has not decided for this budget"
	if st.GetComputedTime() != nil {
		computed = st.GetComputedTime().AsTime().UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "COMPUTED\t%s\n", computed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.GetRules()) == 0 {
		_, err := fmt.Fprintln(w, "\nNo traces counted this month.")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tPRIORITY\tREQUESTS\tSAMPLED\tSPENT\tFIXED RATE\tRESERVOIR\tFORECAST")
	for _, r := range st.GetRules() {
		prio, fixed, resv, forecast := "-", "-", "-", "-"
		if r.GetPlanned() {
			prio = strconv.Itoa(int(r.GetPriority()))
			fixed = "x" + budgetFactorText(r.GetFixedRateFactor())
			resv = "x" + budgetFactorText(r.GetReservoirFactor())
			forecast = "+" + budgetMoney(r.GetForecastMicros())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", r.GetRuleName(), prio, r.GetRequests(), r.GetSampledTraces(),
			budgetMoney(r.GetSpentMicros()), fixed, resv, forecast)
	}
	return tw.Flush()
}

// forecastText says how a forecast was made, in a line.
func forecastText(e *pb.ForecastExplanation) string {
	rate := func(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) + "/s" }
	var text string
	switch e.GetMethod() {
	case budget.MethodMeanRate:
		text = "mean rate since traffic was first seen (less than a day of it)"
	case budget.MethodProfile:
		text = "hour-of-day profile at level " + strconv.FormatFloat(e.GetLevel(), 'g', 3, 64)
		if t := e.GetTrendPerDay(); t != 0 {
			text += fmt.Sprintf(", trend %+.1f%%/day", 100*t)
		}
	default:
		return "no traffic yet: nothing forecast"
	}
	text += "; requests now " + rate(e.GetCurrentRequestRate()) + ", expected " + rate(e.GetExpectedRequestRate())
	return text + fmt.Sprintf("; %d requests to month end", e.GetForecastRequests())
}

func runBudgetHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		conn   connConfig
		output string
		month  string
	)
	fs := newFlagSet("budgets", "history", "history NAME [--month YYYY-MM] [flags]",
		`Shows a budget's month (UTC) hour by hour, for a burn-down: each hour's
requests, sampled traces and spend (from the usage record), the spend of the
month so far, and the last decision the controller made in the hour: its
month-end forecasts, at the factors it decided and at the rules' own rates,
and the lowest factors. -o json prints the API's GetBudgetHistoryResponse.`, stderr, &conn)
	addBudgetOutputFlag(fs, &output)
	fs.StringVar(&month, "month", "", "the `month` to show, YYYY-MM (default: this month)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("budgets", "history", pos, 1, 1); err != nil {
		return err
	}
	if err := checkFormat(output); err != nil {
		return err
	}
	req := &pb.GetBudgetHistoryRequest{Name: pos[0]}
	if month != "" {
		t, err := time.Parse("2006-01", month)
		if err != nil {
			return usageError(fmt.Errorf("budgets history: --month wants YYYY-MM, got %q", month))
		}
		req.MonthTime = timestamppb.New(t)
	}
	c, err := dial(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := budgetAPI(c).GetBudgetHistory(ctx, req)
	if err != nil {
		return c.wrap("", err)
	}
	switch output {
	case formatJSON:
		return writeJSON(stdout, resp)
	case formatYAML:
		b, err := marshalJSON(resp)
		if err != nil {
			return err
		}
		return writeBudgetYAML(stdout, b)
	}
	fmt.Fprintf(stdout, "%s, %s (UTC), amounts in %s, cap %s\n\n", resp.GetBudgetName(),
		resp.GetMonthStartTime().AsTime().UTC().Format("2006-01"), resp.GetCurrencyCode(), budgetMoney(resp.GetMonthlyAmountMicros()))
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "HOUR\tREQUESTS\tSAMPLED\tSPENT\tMONTH SO FAR\tFORECAST\tUNENFORCED\tFIXED RATE\tRESERVOIR\t")
	for _, h := range resp.GetHours() {
		forecast, unenforced, fixed, resv := "-", "-", "-", "-"
		if h.GetDecided() {
			forecast, unenforced = budgetMoney(h.GetForecastMicros()), budgetMoney(h.GetForecastUnenforcedMicros())
			fixed, resv = "x"+budgetFactorText(h.GetFixedRateFactor()), "x"+budgetFactorText(h.GetReservoirFactor())
			if h.GetExhausted() {
				fixed += " (exhausted)"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", h.GetStartTime().AsTime().UTC().Format("01-02 15:04"),
			h.GetRequests(), h.GetSampledTraces(), budgetMoney(h.GetSpentMicros()), budgetMoney(h.GetCumulativeSpentMicros()),
			forecast, unenforced, fixed, resv)
	}
	return tw.Flush()
}

func budgetRatio(r float64) string { return strconv.FormatFloat(r*100, 'f', 1, 64) + "%" }

func budgetFactorText(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// writeBudgetYAML prints JSON as YAML, for outputs that are not a file the
// CLI reads back.
func writeBudgetYAML(w io.Writer, b []byte) error {
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// The budgets file is the YAML form of a list of budgets, with the API's
// snake_case field names (see budgetCreateAbout). It is what `create -f`
// reads and what `list -o yaml` and `get -o yaml` print. Output-only fields
// (etag, times) are never printed and are refused on input; webhook URLs and
// secrets are printed redacted and masked, as the server returns them, and
// are refused so on input.

type budgetsFile struct {
	Budgets []fileBudget `yaml:"budgets"`
}

// fileBudget is one budget as printed; the field order is the proto's.
type fileBudget struct {
	Name                 string        `yaml:"name"`
	Description          string        `yaml:"description,omitempty"`
	Scope                *fileScope    `yaml:"scope,omitempty"`
	MonthlyAmount        fileAmount    `yaml:"monthly_amount"`
	CurrencyCode         string        `yaml:"currency_code"`
	PricePerMillion      fileAmount    `yaml:"price_per_million"`
	FreeTraces           int64         `yaml:"free_traces,omitempty"`
	Mode                 string        `yaml:"mode"`
	SpendThresholds      []float64     `yaml:"spend_thresholds,flow"`
	ForecastThresholds   []float64     `yaml:"forecast_thresholds,flow"`
	Channels             []fileChannel `yaml:"channels,omitempty"`
	FloorTracesPerSecond float64       `yaml:"floor_traces_per_second,omitempty"`

	RulePriorities           []filePriority `yaml:"rule_priorities,omitempty"`
	CoverageMinutes          int32          `yaml:"coverage_minutes,omitempty"`
	RetrievedPricePerMillion fileAmount     `yaml:"retrieved_price_per_million,omitempty"`
	RetrievalsPerTrace       float64        `yaml:"retrievals_per_trace,omitempty"`
	SpanPricePerMillion      fileAmount     `yaml:"span_price_per_million,omitempty"`
	SpansPerTrace            float64        `yaml:"spans_per_trace,omitempty"`
	BurnRateThresholds       []float64      `yaml:"burn_rate_thresholds,flow,omitempty"`
}

type filePriority struct {
	RuleNames  []string          `yaml:"rule_names,omitempty,flow"`
	RuleLabels map[string]string `yaml:"rule_labels,omitempty,flow"`
	Priority   int32             `yaml:"priority"`
}

// fileAmount is an amount in micros, printed as the exact decimal of its
// currency units: monthly_amount: 1234.5.
type fileAmount int64

func (a fileAmount) MarshalYAML() (any, error) {
	s := budget.FormatMicros(int64(a))
	tag := "!!int"
	if strings.Contains(s, ".") {
		tag = "!!float"
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s}, nil
}

type fileScope struct {
	ServiceNames []string          `yaml:"service_names,omitempty,flow"`
	RuleLabels   map[string]string `yaml:"rule_labels,omitempty,flow"`
}

type fileChannel struct {
	WebhookURL string `yaml:"webhook_url"`
	Secret     string `yaml:"secret,omitempty"`
}

// writeBudgetsFile prints budgets in the budgets file format.
func writeBudgetsFile(w io.Writer, bs []*pb.Budget) error {
	doc := budgetsFile{Budgets: make([]fileBudget, 0, len(bs))}
	for _, p := range bs {
		f := fileBudget{
			Name:                 p.GetName(),
			Description:          p.GetDescription(),
			MonthlyAmount:        fileAmount(p.GetMonthlyAmountMicros()),
			CurrencyCode:         p.GetCurrencyCode(),
			PricePerMillion:      fileAmount(p.GetPricePerMillionMicros()),
			FreeTraces:           p.GetFreeTraces(),
			Mode:                 budgetModeName(p.GetMode()),
			SpendThresholds:      p.GetSpendThresholds(),
			ForecastThresholds:   p.GetForecastThresholds(),
			FloorTracesPerSecond: p.GetFloorTracesPerSecond(),

			CoverageMinutes:          p.GetCoverageMinutes(),
			RetrievedPricePerMillion: fileAmount(p.GetRetrievedPricePerMillionMicros()),
			RetrievalsPerTrace:       p.GetRetrievalsPerTrace(),
			SpanPricePerMillion:      fileAmount(p.GetSpanPricePerMillionMicros()),
			SpansPerTrace:            p.GetSpansPerTrace(),
			BurnRateThresholds:       p.GetBurnRateThresholds(),
		}
		for _, rp := range p.GetRulePriorities() {
			f.RulePriorities = append(f.RulePriorities, filePriority{RuleNames: rp.GetRuleNames(), RuleLabels: rp.GetRuleLabels(), Priority: rp.GetPriority()})
		}
		if s := p.GetScope(); len(s.GetServiceNames()) > 0 || len(s.GetRuleLabels()) > 0 {
			f.Scope = &fileScope{ServiceNames: s.GetServiceNames(), RuleLabels: s.GetRuleLabels()}
		}
		for _, c := range p.GetChannels() {
			f.Channels = append(f.Channels, fileChannel{WebhookURL: c.GetWebhookUrl(), Secret: c.GetSecret()})
		}
		doc.Budgets = append(doc.Budgets, f)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// readBudgetsFile reads path ("-" for stdin) and loads it.
func readBudgetsFile(path string, stdin io.Reader) ([]*pb.Budget, error) {
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	return loadBudgets(fileName(path), data)
}

// loadBudgets decodes a budgets file strictly (an unknown or repeated field,
// at any depth, is an error naming the budget and the field) and checks
// every budget with budget.Validate, the one definition of a valid budget,
// plus what only a file can get wrong: two budgets with one name, and a
// secret copied masked from the server's output. It returns the budgets,
// normalized, in file order, or an *invalidFileError with every problem.
func loadBudgets(name string, data []byte) ([]*pb.Budget, error) {
	l := &loader{file: name}
	bs := loadBudgetsDoc(l, data)
	if len(l.problems) > 0 {
		slices.SortStableFunc(l.problems, func(a, b problem) int { return cmp.Compare(a.line, b.line) })
		texts := make([]string, len(l.problems))
		for i, p := range l.problems {
			texts[i] = p.text
		}
		return nil, &invalidFileError{File: name, Problems: texts}
	}
	return bs, nil
}

func loadBudgetsDoc(l *loader, data []byte) []*pb.Budget {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			l.addf(0, `the file is empty; want a "budgets:" list`)
		} else {
			line, msg := syntaxError(err)
			l.addf(line, "invalid YAML: %s", msg)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			line, msg := syntaxError(err)
			l.addf(line, "invalid YAML: %s", msg)
		} else {
			l.addf(extra.Line, `only one YAML document is allowed; put every budget under one "budgets:" list`)
		}
		return nil
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		l.addf(root.Line, `want a mapping with a "budgets:" list, got %s`, kindName(root))
		return nil
	}
	pairs, errs := mappingPairs(root)
	for _, e := range errs {
		l.addf(e.line, "%s", e.msg)
	}
	var list *yaml.Node
	for _, p := range pairs {
		if p.key.Value != "budgets" {
			l.addf(p.key.Line, `unknown field %q; the file has one field, "budgets"`, p.key.Value)
			continue
		}
		list = resolve(p.val)
	}
	if list == nil {
		if len(l.problems) == 0 {
			l.addf(root.Line, `no "budgets:" list`)
		}
		return nil
	}
	if isNull(list) {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		l.addf(list.Line, `"budgets" must be a list of budgets, got %s`, kindName(list))
		return nil
	}
	var (
		out  []*pb.Budget
		seen = map[string][2]int{} // name -> index, line
	)
	for i, item := range list.Content {
		n := resolve(item)
		b, ok := loadBudget(l, i+1, n)
		if b.Name != "" {
			if first, dup := seen[b.Name]; dup {
				l.addf(n.Line, "budget %q (#%d): name: budget #%d (line %d) has the same name", b.Name, i+1, first[0], first[1])
				continue
			}
			seen[b.Name] = [2]int{i + 1, n.Line}
		}
		if ok {
			out = append(out, apiconv.BudgetToRequest(&b))
		}
	}
	return out
}

// budgetFields are the fields a budget has in a file, in the proto's order.
// Money is in currency units where the API has micros: monthly_amount and
// price_per_million; "currency", currency_code's earlier name, is read too.
var budgetFields = []string{"name", "description", "scope", "monthly_amount", "currency_code", "price_per_million",
	"free_traces", "mode", "spend_thresholds", "forecast_thresholds", "channels", "floor_traces_per_second",
	"rule_priorities", "coverage_minutes", "retrieved_price_per_million", "retrievals_per_trace", "span_price_per_million",
	"spans_per_trace", "burn_rate_thresholds", "pricing"}

// budgetDecoder decodes one budget of a file, collecting problems by field.
type budgetDecoder struct {
	b      budget.Budget
	lines  map[string]int  // field path, as Validate names it -> line
	failed map[string]bool // top-level fields that did not decode
	probs  []budgetProblem
	// currencyKey is the key the currency was given under: currency_code,
	// or its earlier name currency.
	currencyKey string
}

// fileField is the file's name of a field that Validate names as the API
// does.
func (d *budgetDecoder) fileField(api string) string {
	top := budgetTopField(api)
	switch top {
	case "monthly_amount_micros":
		return "monthly_amount" + api[len(top):]
	case "price_per_million_micros", "retrieved_price_per_million_micros", "span_price_per_million_micros":
		return strings.TrimSuffix(top, "_micros") + api[len(top):]
	case "currency_code":
		if d.currencyKey != "" {
			return d.currencyKey
		}
	}
	return api
}

type budgetProblem struct {
	line  int
	field string
	msg   string
}

func (d *budgetDecoder) fail(line int, field, format string, args ...any) {
	d.probs = append(d.probs, budgetProblem{line, field, fmt.Sprintf(format, args...)})
	d.failed[budgetTopField(field)] = true
}

// loadBudget decodes and validates one budget; ok is false if it had
// problems. The budget is returned either way, with as much as was read.
func loadBudget(l *loader, index int, n *yaml.Node) (b budget.Budget, ok bool) {
	if n.Kind != yaml.MappingNode {
		l.addf(n.Line, "budget #%d: want a mapping of fields, got %s", index, kindName(n))
		return b, false
	}
	pairs, perrs := mappingPairs(n)
	d := &budgetDecoder{lines: map[string]int{}, failed: map[string]bool{}}
	// Find the name first, so that every problem can name the budget.
	for _, p := range pairs {
		if v := resolve(p.val); p.key.Value == "name" && v.Kind == yaml.ScalarNode && !isNull(v) {
			d.b.Name = v.Value
		}
	}
	// A pricing preset comes first too: the prices given beside it win.
	for _, p := range pairs {
		if p.key.Value == "pricing" {
			d.lines["pricing"] = p.key.Line
			d.pricing(resolve(p.val))
		}
	}
	who := fmt.Sprintf("budget #%d", index)
	if d.b.Name != "" {
		who = fmt.Sprintf("budget %q (#%d)", d.b.Name, index)
	}
	before := len(l.problems)
	for _, e := range perrs {
		l.addf(e.line, "%s: %s", who, e.msg)
	}
	for _, p := range pairs {
		d.lines[p.key.Value] = p.key.Line
		d.field(p.key, p.key.Value, resolve(p.val))
	}
	for _, p := range d.probs {
		l.addf(p.line, "%s: %s: %s", who, p.field, p.msg)
	}
	b = d.b.Normalize()
	var ve *rules.ValidationError
	if err := budget.Validate(&b); errors.As(err, &ve) {
		for _, v := range ve.Violations {
			field := d.fileField(v.Field)
			if d.failed[budgetTopField(field)] {
				continue // already reported as undecodable
			}
			l.addf(d.lineOf(field, n.Line), "%s: %s: %s", who, field, v.Description)
		}
	}
	return b, len(l.problems) == before
}

// lineOf is the line of a field, or of the nearest enclosing one that has
// a line.
func (d *budgetDecoder) lineOf(field string, fallback int) int {
	for f := field; f != ""; {
		if line, ok := d.lines[f]; ok {
			return line
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return fallback
}

// field decodes one top-level field of a budget.
func (d *budgetDecoder) field(key *yaml.Node, field string, v *yaml.Node) {
	b := &d.b
	var err *nodeError
	switch field {
	case "name":
		err = decodeString(v, &b.Name)
	case "description":
		err = decodeString(v, &b.Description)
	case "scope":
		d.scope(v)
	case "monthly_amount":
		err = decodeAmount(v, &b.MonthlyAmountMicros)
	case "currency_code", "currency":
		if d.currencyKey != "" {
			err = errAt(v, "%s and %s are one field (currency is its earlier name); give one", d.currencyKey, field)
			break
		}
		d.currencyKey = field
		err = decodeString(v, &b.Currency)
	case "price_per_million":
		err = decodeAmount(v, &b.PricePerMillionMicros)
	case "free_traces":
		err = decodeInt(v, &b.FreeTraces)
	case "mode":
		var s string
		if err = decodeString(v, &s); err == nil {
			switch s {
			case "", "enforce":
				b.Mode = budget.Enforce
			case "alert_only":
				b.Mode = budget.AlertOnly
			default:
				err = errAt(v, "enforce or alert_only, got %q", s)
			}
		}
	case "spend_thresholds":
		err = decodeBudgetFloats(v, &b.SpendThresholds)
	case "forecast_thresholds":
		err = decodeBudgetFloats(v, &b.ForecastThresholds)
	case "channels":
		d.channels(v)
	case "floor_traces_per_second":
		err = decodeFloat(v, &b.FloorPerSecond)
	case "rule_priorities":
		d.priorities(v)
	case "coverage_minutes":
		var n int64
		if err = decodeInt(v, &n); err == nil {
			if n < math.MinInt32 || n > math.MaxInt32 {
				err = errAt(v, "want minutes from 0 to %d, got %d", budget.MaxCoverageMinutes, n)
			} else {
				b.CoverageMinutes = int32(n)
			}
		}
	case "retrieved_price_per_million":
		err = decodeAmount(v, &b.RetrievedPricePerMillionMicros)
	case "retrievals_per_trace":
		err = decodeFloat(v, &b.RetrievalsPerTrace)
	case "span_price_per_million":
		err = decodeAmount(v, &b.SpanPricePerMillionMicros)
	case "spans_per_trace":
		err = decodeFloat(v, &b.SpansPerTrace)
	case "burn_rate_thresholds":
		err = decodeBudgetFloats(v, &b.BurnRateThresholds)
	case "pricing":
		// Applied first, in loadBudget.
	case "etag", "create_time", "update_time", "uid", "generation":
		err = errAt(v, "is output only and cannot be set in a file")
	default:
		d.unknown(key, field, budgetFields, "a budget")
	}
	if err != nil {
		d.fail(err.line, field, "%s", err.msg)
	}
}

// unknown reports a field that is not one of fields.
func (d *budgetDecoder) unknown(key *yaml.Node, path string, fields []string, what string) {
	name := path[strings.LastIndexAny(path, ".]")+1:]
	if near := closest(name, fields); near != "" {
		d.fail(key.Line, path, "unknown field; did you mean %q?", near)
		return
	}
	d.fail(key.Line, path, "unknown field; %s has %s", what, strings.Join(fields, ", "))
}

func (d *budgetDecoder) scope(v *yaml.Node) {
	if isNull(v) {
		return
	}
	if v.Kind != yaml.MappingNode {
		d.fail(v.Line, "scope", "want a mapping with service_names and rule_labels, got %s", kindName(v))
		return
	}
	pairs, errs := mappingPairs(v)
	for _, e := range errs {
		d.fail(e.line, "scope", "%s", e.msg)
	}
	for _, p := range pairs {
		path := "scope." + p.key.Value
		d.lines[path] = p.key.Line
		val := resolve(p.val)
		switch p.key.Value {
		case "service_names":
			if isNull(val) {
				continue
			}
			if val.Kind != yaml.SequenceNode {
				d.fail(val.Line, path, "want a list of globs, got %s", kindName(val))
				continue
			}
			for i, item := range val.Content {
				item = resolve(item)
				if item.Kind != yaml.ScalarNode || isNull(item) {
					d.fail(item.Line, fmt.Sprintf("%s[%d]", path, i), "want a glob, got %s", kindName(item))
					continue
				}
				d.lines[fmt.Sprintf("%s[%d]", path, i)] = item.Line
				d.b.Scope.Services = append(d.b.Scope.Services, item.Value)
			}
		case "rule_labels":
			if err := decodeMap(val, path, &d.b.Scope.RuleLabels, d.lines); err != nil {
				d.fail(err.line, path, "%s", err.msg)
			}
		default:
			d.unknown(p.key, path, []string{"service_names", "rule_labels"}, "a scope")
		}
	}
}

// pricing applies a preset of prices.
func (d *budgetDecoder) pricing(v *yaml.Node) {
	var name string
	if err := decodeString(v, &name); err != nil {
		d.fail(err.line, "pricing", "%s", err.msg)
		return
	}
	p, ok := budget.Preset(name)
	if !ok {
		d.fail(v.Line, "pricing", "a preset: %s; got %q", strings.Join(budget.PresetNames(), ", "), name)
		return
	}
	p.Apply(&d.b)
}

// priorities decodes rule_priorities: a list of {rule_names, rule_labels,
// priority}.
func (d *budgetDecoder) priorities(v *yaml.Node) {
	if isNull(v) {
		return
	}
	if v.Kind != yaml.SequenceNode {
		d.fail(v.Line, "rule_priorities", "want a list of {rule_names, rule_labels, priority}, got %s", kindName(v))
		return
	}
	for i, item := range v.Content {
		item = resolve(item)
		at := fmt.Sprintf("rule_priorities[%d]", i)
		d.lines[at] = item.Line
		if item.Kind != yaml.MappingNode {
			d.fail(item.Line, at, "want a mapping with rule_names, rule_labels and priority, got %s", kindName(item))
			continue
		}
		var e budget.RulePriority
		pairs, errs := mappingPairs(item)
		for _, pe := range errs {
			d.fail(pe.line, at, "%s", pe.msg)
		}
		for _, p := range pairs {
			path := at + "." + p.key.Value
			d.lines[path] = p.key.Line
			val := resolve(p.val)
			var err *nodeError
			switch p.key.Value {
			case "rule_names":
				if isNull(val) {
					continue
				}
				if val.Kind != yaml.SequenceNode {
					err = errAt(val, "want a list of rule names, got %s", kindName(val))
					break
				}
				for j, n := range val.Content {
					var name string
					if err = decodeString(resolve(n), &name); err != nil {
						break
					}
					d.lines[fmt.Sprintf("%s[%d]", path, j)] = n.Line
					e.RuleNames = append(e.RuleNames, name)
				}
			case "rule_labels":
				err = decodeMap(val, path, &e.RuleLabels, d.lines)
			case "priority":
				var n int64
				if err = decodeInt(val, &n); err == nil {
					if n < math.MinInt32 || n > math.MaxInt32 {
						err = errAt(val, "want a priority from %d to %d, got %d", -budget.MaxPriority, budget.MaxPriority, n)
					} else {
						e.Priority = int32(n)
					}
				}
			default:
				d.unknown(p.key, path, []string{"rule_names", "rule_labels", "priority"}, "a rule priority")
			}
			if err != nil {
				d.fail(err.line, path, "%s", err.msg)
			}
		}
		d.b.Priorities = append(d.b.Priorities, e)
	}
}

func (d *budgetDecoder) channels(v *yaml.Node) {
	if isNull(v) {
		return
	}
	if v.Kind != yaml.SequenceNode {
		d.fail(v.Line, "channels", "want a list of {webhook_url, secret}, got %s", kindName(v))
		return
	}
	for i, item := range v.Content {
		item = resolve(item)
		at := fmt.Sprintf("channels[%d]", i)
		d.lines[at] = item.Line
		if item.Kind != yaml.MappingNode {
			d.fail(item.Line, at, "want a mapping with webhook_url and secret, got %s", kindName(item))
			continue
		}
		var c budget.Channel
		pairs, errs := mappingPairs(item)
		for _, e := range errs {
			d.fail(e.line, at, "%s", e.msg)
		}
		for _, p := range pairs {
			path := at + "." + p.key.Value
			d.lines[path] = p.key.Line
			val := resolve(p.val)
			var err *nodeError
			switch p.key.Value {
			case "webhook_url":
				err = decodeString(val, &c.WebhookURL)
			case "secret":
				if err = decodeString(val, &c.Secret); err == nil && c.Secret == budget.SecretMask {
					err = errAt(val, "%q is how the server masks a secret; write the secret itself, or leave secret out", budget.SecretMask)
				}
			default:
				d.unknown(p.key, path, []string{"webhook_url", "secret"}, "a channel")
			}
			if err != nil {
				d.fail(err.line, path, "%s", err.msg)
			}
		}
		d.b.Channels = append(d.b.Channels, c)
	}
}

// decodeAmount reads a YAML number of currency units, such as 500 or 12.25,
// exactly into micros: the file keeps money readable where the API has
// micros.
func decodeAmount(v *yaml.Node, out *int64) *nodeError {
	if isNull(v) {
		return nil
	}
	var f float64
	if v.Kind != yaml.ScalarNode || v.Decode(&f) != nil {
		return errAt(v, "want an amount such as 12.50, got %s", valueText(v))
	}
	m, err := budget.ParseMicros(v.Value)
	if err != nil {
		return errAt(v, "%v", err)
	}
	*out = m
	return nil
}

func decodeBudgetFloats(v *yaml.Node, out *[]float64) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return errAt(v, "want a list of numbers such as [0.5, 0.8, 1], got %s", kindName(v))
	}
	fs := make([]float64, 0, len(v.Content))
	for _, item := range v.Content {
		var f float64
		if err := decodeFloat(resolve(item), &f); err != nil {
			return err
		}
		fs = append(fs, f)
	}
	*out = fs
	return nil
}
