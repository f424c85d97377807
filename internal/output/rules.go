package output

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// entries prints a map as key=value pairs by key, "-" if it is empty.
func entries(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// WriteRules prints rules: a table (wide: every column), protojson ({"rules": [...]}, or the bare
// rule when one was asked for), or the rules file format, which `apply` reads
// back.
func WriteRules(w io.Writer, format string, rs []*pb.Rule, single bool) error {
	switch format {
	case JSON:
		if single && len(rs) == 1 {
			return WriteJSON(w, rs[0])
		}
		return WriteJSONList(w, "rules", rs)
	case YAML:
		return files.WriteRules(w, rs)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if format == Wide {
		// Tags, for AWS tooling and up to 50 of 384 characters, do not fit
		// a row: -o yaml and -o json show them.
		fmt.Fprintln(tw, "NAME\tPRIORITY\tFIXED_RATE\tRESERVOIR\tSERVICE\tSERVICE_TYPE\tHOST\tMETHOD\tPATH\tRESOURCE_ARN\tATTRIBUTES\tRESOURCE_ATTRIBUTES\tLABELS\tBOOST\tEXPIRES\tETAG")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetName(), r.GetPriority(), FormatRate(r.GetFixedRate()),
				r.GetReservoirSize(), orAny(r.GetServiceName()), orAny(r.GetServiceType()), orAny(r.GetHost()), orAny(r.GetHttpMethod()),
				orAny(r.GetUrlPath()), orAny(r.GetResourceArn()), entries(r.GetAttributes()), entries(r.GetResourceAttributes()), entries(r.GetLabels()), boostColumn(r), expiresColumn(r), r.GetEtag())
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAME\tPRIORITY\tFIXED_RATE\tRESERVOIR\tSERVICE\tMETHOD\tPATH")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.GetName(), r.GetPriority(), FormatRate(r.GetFixedRate()),
			r.GetReservoirSize(), orAny(r.GetServiceName()), orAny(r.GetHttpMethod()), orAny(r.GetUrlPath()))
	}
	return tw.Flush()
}

// WriteEvents prints audit events, newest first.
func WriteEvents(w io.Writer, format string, events []*pb.RuleEvent) error {
	switch format {
	case JSON:
		return WriteJSONList(w, "events", events)
	case YAML:
		// The audit log is not a rules file: print the JSON form as YAML.
		b, err := JSONList("events", events)
		if err != nil {
			return err
		}
		return WriteYAML(w, b)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tRULE\tCHANGES")
	for _, e := range events {
		summary := eventSummary(e)
		if m := e.GetMessage(); m != "" {
			summary = m + "; " + summary
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.GetEventTime().AsTime().UTC().Format(time.RFC3339),
			e.GetActor(), actionName(e.GetAction()), e.GetRuleName(), summary)
	}
	return tw.Flush()
}

func actionName(a pb.RuleEvent_Action) string { return enumText(a) }

// eventSummary says what an edit did: the fields it changed, or for a create
// or delete the rule's settings.
func eventSummary(e *pb.RuleEvent) string {
	switch {
	case e.GetBefore() != nil && e.GetAfter() != nil:
		before, after := rulepb.FromProto(e.GetBefore()).Normalize(), rulepb.FromProto(e.GetAfter()).Normalize()
		return JoinChanges(RuleChanges(&before, &after))
	case e.GetAfter() != nil:
		r := rulepb.FromProto(e.GetAfter()).Normalize()
		return DescribeRule(&r)
	case e.GetBefore() != nil:
		r := rulepb.FromProto(e.GetBefore()).Normalize()
		return DescribeRule(&r)
	}
	return ""
}

func orAny(glob string) string {
	if glob == "" {
		return "*"
	}
	return glob
}

// Change is one field that differs between two versions of a rule.
type Change struct {
	Path string // the update_mask path: "fixed_rate", "labels"
	Text string // `fixed_rate 0.5 -> 0.2`, `labels.team "a" -> "b"`
}

// RuleChanges lists the mutable fields that differ from a to b (both
// normalized), in the proto's field order; map entries are listed one by one.
func RuleChanges(a, b *rules.Rule) []Change {
	var cs []Change
	num := func(path, x, y string) {
		if x != y {
			cs = append(cs, Change{path, path + " " + x + " -> " + y})
		}
	}
	str := func(path, x, y string) {
		if x != y {
			cs = append(cs, Change{path, fmt.Sprintf("%s %q -> %q", path, x, y)})
		}
	}
	entries := func(path string, x, y map[string]string) {
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			xv, xok := x[k]
			yv, yok := y[k]
			if xok == yok && xv == yv {
				continue
			}
			cs = append(cs, Change{path, fmt.Sprintf("%s.%s %s -> %s", path, k, entryText(xv, xok), entryText(yv, yok))})
		}
	}
	num("priority", strconv.Itoa(int(a.Priority)), strconv.Itoa(int(b.Priority)))
	num("fixed_rate", FormatRate(a.FixedRate), FormatRate(b.FixedRate))
	num("reservoir_size", strconv.FormatInt(a.ReservoirSize, 10), strconv.FormatInt(b.ReservoirSize, 10))
	str("service_name", a.ServiceName, b.ServiceName)
	str("service_type", a.ServiceType, b.ServiceType)
	str("host", a.Host, b.Host)
	str("http_method", a.HTTPMethod, b.HTTPMethod)
	str("url_path", a.URLPath, b.URLPath)
	str("resource_arn", a.ResourceARN, b.ResourceARN)
	entries("attributes", a.Attributes, b.Attributes)
	entries("resource_attributes", a.ResourceAttributes, b.ResourceAttributes)
	str("description", a.Description, b.Description)
	entries("labels", a.Labels, b.Labels)
	if !a.ExpireTime.Equal(b.ExpireTime) {
		cs = append(cs, Change{"expire_time", "expire_time " + expiryText(a.ExpireTime) + " -> " + expiryText(b.ExpireTime)})
	}
	entries("tags", a.Tags, b.Tags)
	if x, y := boostText(a.Boost), boostText(b.Boost); x != y {
		cs = append(cs, Change{"sampling_rate_boost", "sampling_rate_boost " + x + " -> " + y})
	}
	return cs
}

// boostText prints a boost, "(none)" for none.
func boostText(b *rules.RateBoost) string {
	if b == nil {
		return "(none)"
	}
	return fmt.Sprintf("{max_rate %s, cooldown %s}", FormatRate(b.MaxRate), cooldownText(b.Cooldown))
}

// cooldownText prints a cooldown in minutes ("10m"), as the API gives it.
func cooldownText(d time.Duration) string {
	if d%time.Minute != 0 {
		return d.String()
	}
	return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
}

// boostColumn is a rule's boost in a table: max rate/cooldown, or "-".
func boostColumn(r *pb.Rule) string {
	b := r.GetSamplingRateBoost()
	if b == nil {
		return "-"
	}
	return FormatRate(b.GetMaxRate()) + "/" + strconv.Itoa(int(b.GetCooldownWindowMinutes())) + "m"
}

// expiryText prints an expiry time, "(none)" for none.
func expiryText(t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return t.UTC().Format(time.RFC3339)
}

// expiresColumn is a rule's expiry in a table: when, or "-".
func expiresColumn(r *pb.Rule) string {
	if r.GetExpireTime() == nil {
		return "-"
	}
	return r.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
}

func entryText(v string, ok bool) string {
	if !ok {
		return "(none)"
	}
	return strconv.Quote(v)
}

func JoinChanges(cs []Change) string {
	texts := make([]string, len(cs))
	for i, c := range cs {
		texts[i] = c.Text
	}
	return strings.Join(texts, ", ")
}

// MaskPaths returns the update_mask for a list of changes.
func MaskPaths(cs []Change) []string {
	var paths []string
	for _, c := range cs {
		if !slices.Contains(paths, c.Path) {
			paths = append(paths, c.Path)
		}
	}
	return paths
}

// DescribeRule sums up a rule's settings on one line, leaving out globs that
// match anything.
func DescribeRule(r *rules.Rule) string {
	parts := []string{
		"priority " + strconv.Itoa(int(r.Priority)),
		"fixed_rate " + FormatRate(r.FixedRate),
		"reservoir_size " + strconv.FormatInt(r.ReservoirSize, 10),
	}
	for _, g := range []struct{ name, v string }{
		{"service_name", r.ServiceName}, {"service_type", r.ServiceType}, {"host", r.Host},
		{"http_method", r.HTTPMethod}, {"url_path", r.URLPath}, {"resource_arn", r.ResourceARN},
	} {
		if g.v != "*" && g.v != "" {
			parts = append(parts, fmt.Sprintf("%s %q", g.name, g.v))
		}
	}
	for _, m := range []struct {
		name string
		m    map[string]string
	}{{"attributes", r.Attributes}, {"resource_attributes", r.ResourceAttributes}, {"labels", r.Labels}, {"tags", r.Tags}} {
		keys := make([]string, 0, len(m.m))
		for k := range m.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s.%s %q", m.name, k, m.m[k]))
		}
	}
	if !r.ExpireTime.IsZero() {
		parts = append(parts, "expire_time "+expiryText(r.ExpireTime))
	}
	if r.Boost != nil {
		parts = append(parts, "sampling_rate_boost "+boostText(r.Boost))
	}
	return strings.Join(parts, ", ")
}
