package files

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"go.yaml.in/yaml/v3"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TopField is the top-level field of a field path: "channels" of
// "channels[0].webhook_url", "budget.scope" of "budget.scope.service_names".
func TopField(field string) string {
	prefix := ""
	if rest, ok := strings.CutPrefix(field, "budget."); ok {
		prefix, field = "budget.", rest
	}
	if i := strings.IndexAny(field, ".["); i >= 0 {
		field = field[:i]
	}
	return prefix + field
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

// WriteBudgets prints budgets in the budgets file format.
func WriteBudgets(w io.Writer, bs []*pb.Budget) error {
	doc := budgetsFile{Budgets: make([]fileBudget, 0, len(bs))}
	for _, p := range bs {
		f := fileBudget{
			Name:                 p.GetName(),
			Description:          p.GetDescription(),
			MonthlyAmount:        fileAmount(p.GetMonthlyAmountMicros()),
			CurrencyCode:         p.GetCurrencyCode(),
			PricePerMillion:      fileAmount(p.GetPricePerMillionMicros()),
			FreeTraces:           p.GetFreeTraces(),
			Mode:                 ModeName(p.GetMode()),
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

// ReadBudgets reads the budgets file at path ("-" for stdin) and loads it.
func ReadBudgets(path string, stdin io.Reader) ([]*pb.Budget, error) {
	data, err := read(path, stdin)
	if err != nil {
		return nil, err
	}
	return LoadBudgets(DisplayName(path), data)
}

// LoadBudgets decodes a budgets file strictly (an unknown or repeated field,
// at any depth, is an error naming the budget and the field) and checks
// every budget with budget.Validate, the one definition of a valid budget,
// plus what only a file can get wrong: two budgets with one name, and a
// secret copied masked from the server's output. It returns the budgets,
// normalized, in file order, or an *Error with every problem.
func LoadBudgets(name string, data []byte) ([]*pb.Budget, error) {
	l := &loader{file: name}
	var out []*pb.Budget
	l.load(data, list{key: "budgets", noun: "budget", item: func(index int, n *yaml.Node) (string, bool, func()) {
		b, ok := loadBudget(l, index, n)
		return b.Name, ok, func() { out = append(out, apiconv.BudgetToRequest(&b)) }
	}})
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// budgetFields are the fields a budget has in a file, in the proto's order.
// Money is in currency units where the API has micros: monthly_amount and
// the prices per million; "currency", currency_code's earlier name, is read
// too. pricing, a preset of prices, is the file's alone.
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
	top := TopField(api)
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
	d.failed[TopField(field)] = true
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
			if d.failed[TopField(field)] {
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
		// The API reads a price of 0 as "the default": say so rather than
		// bill 5 per million for a price written as free.
		if err = decodeAmount(v, &b.PricePerMillionMicros); err == nil && !isNull(v) && b.PricePerMillionMicros == 0 {
			err = errAt(v, "must be more than 0 (a price of 0 would count every trace as free); leave price_per_million out for the default, %s per million",
				budget.FormatMicros(budget.DefaultPricePerMillionMicros))
		}
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
				switch err = decodeString(val, &c.Secret); {
				case err != nil:
				case c.Secret == budget.SecretMask:
					err = errAt(val, "%q is how the server masks a secret; write the secret itself, or leave secret out", budget.SecretMask)
				case c.Secret == "" && !isNull(val):
					// Often a variable that was not set: unsigned alerts
					// must be asked for by leaving the secret out.
					err = errAt(val, "empty; leave secret out for an unsigned webhook")
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

// ModeName is a budget mode as the file and the CLI write it: enforce or
// alert_only.
func ModeName(m pb.Budget_Mode) string {
	if m == pb.Budget_MODE_ALERT_ONLY {
		return budget.AlertOnly.String()
	}
	return budget.Enforce.String()
}
