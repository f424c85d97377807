package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/pkg/rules"
)

const budgetsLong = `Manage the monthly tracing cost budgets of a control plane server, see where
each stands this month, and follow the alerts they raise.

Every command calls the server at --server (default: CONTROLPLANE_SERVER,
else CONTROLPLANE_ENDPOINT, else localhost:7070); --timeout bounds each call
(watch's stream itself has none). For list and get, -o yaml prints the
budgets file format, which create -f reads back.

` + exitCodesHelp + ` watch exits 0 when interrupted.`

func newBudgetsCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	conn := &connConfig{}
	cmd := &cobra.Command{
		Use:   "budgets",
		Short: "monthly tracing budgets: edit, status, alerts",
		Long:  budgetsLong,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addConnFlags(cmd.PersistentFlags(), conn, lookupEnv)
	cmd.AddCommand(
		newBudgetListCmd(conn),
		newBudgetGetCmd(conn),
		newBudgetCreateCmd(conn),
		newBudgetUpdateCmd(conn),
		newBudgetDeleteCmd(conn),
		newBudgetStatusCmd(conn),
		newBudgetHistoryCmd(conn),
		newBudgetAlertsCmd(conn),
		newBudgetWatchCmd(conn),
		newBudgetApplyCmd(conn),
	)
	return cmd
}

func addBudgetOutputFlag(fs *pflag.FlagSet, format *string) {
	addOutputFlag(fs, format, "output `format`: table, json or yaml (for list and get, the budgets file format)")
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

func newBudgetListCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list budgets, by name",
		Long:  "Lists every budget, by name.",
		Args:  argsBetween(0, 0),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
			return err
		}
		c, err := dial(*conn)
		if err != nil {
			return err
		}
		defer c.Close()
		bs, err := listBudgets(ctx, c)
		if err != nil {
			return err
		}
		return output.WriteBudgets(stdout, format, bs, false)
	}
	return cmd
}

func newBudgetGetCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "show one budget",
		Long:  "Shows one budget. With -o yaml it prints the budgets file format (webhook\nURLs redacted and secrets shown as \"****\", as the server returns them).",
		Args:  argsBetween(1, 1),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
			return err
		}
		c, err := dial(*conn)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := budgetAPI(c).GetBudget(ctx, &pb.GetBudgetRequest{Name: pos[0]})
		if err != nil {
			return c.wrap("", err)
		}
		return output.WriteBudgets(stdout, format, []*pb.Budget{resp.GetBudget()}, true)
	}
	return cmd
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
func (bf *budgetFlags) register(fs *pflag.FlagSet, update bool) {
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
	fs.Var(&bf.amount, "amount", "monthly cap in currency `units`: more than 0 and at most "+budget.FormatMicros(budget.MaxMonthlyAmountMicros)+
		", at most 6 decimal places (required on create)")
	fs.StringVar(&bf.currency, "currency", currency, "ISO 4217 `code`; informational, nothing is converted")
	fs.Var(&bf.pricePerMillion, "price-per-million", "`price` of a million recorded traces, in currency units: more than 0 and at most "+
		budget.FormatMicros(budget.MaxPricePerMillionMicros))
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
	if given["price-per-million"] && bf.pricePerMillion.micros == 0 {
		// The API reads 0 as "the default", which a price written as
		// free is not.
		vs = append(vs, rules.FieldViolation{Field: "budget.price_per_million_micros", Description: fmt.Sprintf(
			"must be more than 0 (a price of 0 would count every trace as free); leave --price-per-million out for the default, %s per million",
			budget.FormatMicros(budget.DefaultPricePerMillionMicros))})
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

// errEmptySecret refuses --webhook-secret "": often a variable that was not
// set, and unsigned alerts are asked for by leaving the flag out.
func errEmptySecret(cmd string) error {
	return fmt.Errorf("budgets %s: --webhook-secret is empty; leave it out for unsigned webhooks", cmd)
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

func (f *amountFlag) Type() string { return "amount" }

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

func (f *budgetListFlag) Type() string { return "string" }

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
		parts[i] = output.FormatRate(x)
	}
	return strings.Join(parts, ",")
}

func (f *budgetFloatsFlag) Type() string { return "number" }

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
		parts[i] = output.PriorityText(e.RuleNames, e.RuleLabels, e.Priority)
	}
	return strings.Join(parts, ",")
}

func (f *priorityFlag) Type() string { return "selector:n" }

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

// budgetLocalInvalid reports a budget that is not sent because the command line
// cannot express it, in the form of the server's own answer.
func budgetLocalInvalid(op string, vs []rules.FieldViolation) error {
	order := func(field string) int {
		top := strings.TrimPrefix(files.TopField(field), "budget.")
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
different secrets, or to keep secrets off the command line, use a file.
create makes new budgets only; 'budgets apply -f FILE' also updates the
budgets of a file that exist, and with --prune deletes the others.`

func newBudgetCreateCmd(conn *connConfig) *cobra.Command {
	var (
		format string
		bf     budgetFlags
	)
	cmd := &cobra.Command{
		Use:   "create (NAME --amount AMOUNT [flags] | -f FILE)",
		Short: "create a budget from flags, or every budget of a file (-f)",
		Long:  budgetCreateAbout,
		Args:  cobra.ArbitraryArgs,
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	bf.register(fs, false)
	file := fs.StringP("file", "f", "", "create every budget of this budgets `file` (- for stdin)")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdin, stdout, stderr := cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
		if err := checkFormat(format); err != nil {
			return err
		}
		// The budget's own flags; the connection flags and -o go with -f too.
		given := givenFlags(cmd.LocalNonPersistentFlags())
		delete(given, "output")
		var todo []*pb.Budget
		if *file != "" {
			delete(given, "file")
			if len(pos) > 0 || len(given) > 0 {
				return usageError(errors.New("budgets create: give either -f FILE or NAME and budget flags, not both"))
			}
			var err error
			if todo, err = files.ReadBudgets(*file, stdin); err != nil {
				return invalidInput(err)
			}
		} else {
			if err := argsBetween(1, 1)(cmd, pos); err != nil {
				return err
			}
			if !given["amount"] {
				return usageError(errors.New("budgets create: --amount is required"))
			}
			if given["webhook-secret"] && bf.webhookSecret == "" {
				return usageError(errEmptySecret("create"))
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
		c, err := dial(*conn)
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
				if *file != "" && status.Code(err) == codes.AlreadyExists {
					fmt.Fprintln(stderr, "create makes new budgets only; 'budgets apply -f FILE' also updates the ones that exist")
				}
				return c.wrap(fmt.Sprintf("create budget %q", b.GetName()), err)
			}
			created = append(created, resp.GetBudget())
		}
		return output.WriteBudgets(stdout, format, created, *file == "")
	}
	return cmd
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

func newBudgetUpdateCmd(conn *connConfig) *cobra.Command {
	var (
		format string
		bf     budgetFlags
	)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "change the fields given as flags, and only those",
		Long: `Changes the fields given as flags, and only those (the update mask is
exactly the flags given). --service and --rule-label each replace their part
of the scope and keep the other. --webhook replaces every webhook; one that
was there before keeps its secret unless --webhook-secret is given, and a URL
copied redacted from get (https://host/…) keeps the webhook it was read
from. With --etag the update is refused if the budget changed since that
etag was read.`,
		Args: argsBetween(1, 1),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	bf.register(fs, true)
	etag := fs.String("etag", "", "update only if the budget's current etag is this `etag`")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
			return err
		}
		given := givenFlags(fs)
		if given["webhook-secret"] && bf.webhookSecret == "" {
			return usageError(errEmptySecret("update"))
		}
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
		c, err := dial(*conn)
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
			return output.WriteBudgets(stdout, format, []*pb.Budget{resp.GetBudget()}, true)
		}
	}
	return cmd
}

func newBudgetDeleteCmd(conn *connConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "delete a budget",
		Long:  "Deletes a budget; the rules it enforced go back to their own rates. With\n--etag the delete is refused if the budget changed since that etag was read.",
		Args:  argsBetween(1, 1),
	}
	fs := cmd.Flags()
	etag := fs.String("etag", "", "delete only if the budget's current etag is this `etag`")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		c, err := dial(*conn)
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
	return cmd
}

func newBudgetStatusCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "spend and forecast this month (and how it was made), enforcement, spend and plan per rule",
		Long: `Shows where a budget stands this month (UTC): money spent and the month-end
forecast against the cap (at the factors decided and at the rules' own
rates) and how it was made, the burn rate, the factors enforcement applies
to the fixed rates and reservoirs of the rules in scope, whether the budget
is exhausted, the coverage reserve, and each rule's spend and plan. -o json
prints the API's BudgetStatus.`,
		Args: argsBetween(1, 1),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
			return err
		}
		c, err := dial(*conn)
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
		switch format {
		case output.JSON:
			return output.WriteJSON(stdout, st)
		case output.YAML:
			b, err := output.MarshalJSON(st)
			if err != nil {
				return err
			}
			return output.WriteYAML(stdout, b)
		}
		// The table also shows the cap in money and the mode, which are the
		// budget's.
		b, err := api.GetBudget(ctx, &pb.GetBudgetRequest{Name: pos[0]})
		if err != nil {
			return c.wrap("", err)
		}
		return output.WriteBudgetStatus(stdout, b.GetBudget(), st)
	}
	return cmd
}

func newBudgetHistoryCmd(conn *connConfig) *cobra.Command {
	var format, month string
	cmd := &cobra.Command{
		Use:   "history NAME [--month YYYY-MM]",
		Short: "the month hour by hour: spend, forecasts, factors",
		Long: `Shows a budget's month (UTC) hour by hour, for a burn-down: each hour's
requests, sampled traces and spend (from the usage record), the spend of the
month so far, and the last decision the controller made in the hour: its
month-end forecasts, at the factors it decided and at the rules' own rates,
and the lowest factors. -o json prints the API's GetBudgetHistoryResponse.`,
		Args: argsBetween(1, 1),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	fs.StringVar(&month, "month", "", "the `month` to show, YYYY-MM (default: this month)")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
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
		c, err := dial(*conn)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := budgetAPI(c).GetBudgetHistory(ctx, req)
		if err != nil {
			return c.wrap("", err)
		}
		switch format {
		case output.JSON:
			return output.WriteJSON(stdout, resp)
		case output.YAML:
			b, err := output.MarshalJSON(resp)
			if err != nil {
				return err
			}
			return output.WriteYAML(stdout, b)
		}
		return output.WriteBudgetHistory(stdout, resp)
	}
	return cmd
}

func newBudgetAlertsCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "list the alerts that fired, newest first",
		Long:  "Lists the alerts that fired, newest first. Each fires once per budget,\nmonth and threshold.",
		Args:  argsBetween(0, 0),
	}
	fs := cmd.Flags()
	addBudgetOutputFlag(fs, &format)
	name := fs.String("budget", "", "only this budget's alerts")
	limit := fs.Int("limit", 50, "show at most this many alerts (0: all)")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout := cmd.Context(), cmd.OutOrStdout()
		if err := checkFormat(format); err != nil {
			return err
		}
		if *limit < 0 {
			return usageError(fmt.Errorf("--limit: want 0 or more, got %d", *limit))
		}
		c, err := dial(*conn)
		if err != nil {
			return err
		}
		defer c.Close()
		alerts, err := listBudgetAlerts(ctx, c, *name, *limit)
		if err != nil {
			return err
		}
		switch format {
		case output.JSON:
			return output.WriteJSONList(stdout, "alerts", alerts)
		case output.YAML:
			b, err := output.JSONList("alerts", alerts)
			if err != nil {
				return err
			}
			return output.WriteYAML(stdout, b)
		}
		tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tBUDGET\tKIND\tTHRESHOLD\tMESSAGE")
		for _, a := range alerts {
			fmt.Fprintln(tw, strings.Join(output.AlertCells(a), "\t"))
		}
		return tw.Flush()
	}
	return cmd
}

// Backoff between attempts to watch again after a lost stream.
const (
	watchBackoffMin = 250 * time.Millisecond
	watchBackoffMax = 30 * time.Second
)

func newBudgetWatchCmd(conn *connConfig) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "print alerts as they fire, until interrupted (Ctrl-C)",
		Long: `Prints each alert as it fires, on whichever replica, until interrupted
(Ctrl-C, exit code 0): one line per alert (TIME BUDGET KIND THRESHOLD
MESSAGE), or with -o json one JSON object per line. A lost stream (a server
restart, a connection aged out) is watched again from the last alert
printed, so the alerts that fired in between are printed first. While the
server cannot be reached, each attempt says so on stderr, with the wait
before the next (up to 30s); --give-up-after ends the watch (exit code 6)
once the server has been away that long.`,
		Args: argsBetween(0, 0),
	}
	fs := cmd.Flags()
	addOutputFlag(fs, &format, "output `format`: table (one line per alert) or json (one object per line)")
	name := fs.String("budget", "", "only this budget's alerts")
	giveUp := fs.Duration("give-up-after", 0, "end the watch when the server has been away this long (0: never)")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stdout, stderr := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
		if *giveUp < 0 {
			return usageError(fmt.Errorf("--give-up-after: want 0 or more, got %v", *giveUp))
		}
		if format != output.Table && format != output.JSON {
			return usageError(fmt.Errorf("-o: watch prints table or json, got %q", format))
		}
		c, err := dial(*conn)
		if err != nil {
			return err
		}
		defer c.Close()
		w := &alertWatch{c: c, api: budgetAPI(c), budget: *name, json: format == output.JSON, giveUp: *giveUp, stdout: stdout, stderr: stderr}
		err = w.run(ctx)
		if ctx.Err() != nil {
			return nil // interrupted: the normal way to stop watching
		}
		return err
	}
	return cmd
}

// alertWatch follows WatchAlerts, watching again when the stream is lost.
type alertWatch struct {
	c      *client
	api    pb.BudgetServiceClient
	budget string
	json   bool
	giveUp time.Duration // how long the server may be away; 0: forever
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
	var awaySince time.Time // when the last stream was lost; zero while one is open
	for {
		start := time.Now()
		opened, err := w.stream(ctx, !awaySince.IsZero())
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, io.EOF) && status.Code(err) != codes.Unavailable {
			return w.c.wrap("watch alerts", err)
		}
		now := time.Now()
		if opened {
			if now.Sub(start) > time.Minute {
				backoff = watchBackoffMin
			}
			awaySince = now
			fmt.Fprintf(w.stderr, "watch: lost the alert stream (%s); watching again in %v\n", status.Convert(err).Message(), backoff)
		} else {
			if awaySince.IsZero() {
				awaySince = start // lost before the first stream opened
			}
			if w.giveUp > 0 && now.Sub(awaySince) >= w.giveUp {
				return w.c.wrap(fmt.Sprintf("watch alerts: gave up after %v without the server", w.giveUp.Round(time.Second)), err)
			}
			fmt.Fprintf(w.stderr, "watch: cannot reach the control plane at %s (%s); trying again in %v\n", w.c.addr, status.Convert(err).Message(), backoff)
		}
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
// fails; opened says whether the stream was open (the server reached). It
// resumes after the last alert printed, so the server first sends what
// fired while no stream was open. Opening fails at once while the server
// cannot be reached; after the watch, again, says it watches again.
func (w *alertWatch) stream(ctx context.Context, again bool) (opened bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// With no alert printed or listed yet, every alert the server lists is
	// one to print.
	req := &pb.WatchAlertsRequest{BudgetName: w.budget, AfterId: w.last, FromOldest: w.last == ""}
	stream, err := w.api.WatchAlerts(ctx, req)
	if err != nil {
		return false, err
	}
	if again {
		fmt.Fprintln(w.stderr, "watch: watching again")
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return true, err
		}
		if err := w.print(resp.GetAlert()); err != nil {
			return true, err
		}
	}
}

func (w *alertWatch) print(a *pb.Alert) error {
	w.last = a.GetId()
	if w.json {
		b, err := output.MarshalJSON(a)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w.stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(w.stdout, strings.Join(output.AlertCells(a), "  "))
	return err
}
