package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/rules"
)

// Output formats of -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func checkFormat(f string) error {
	switch f {
	case formatTable, formatJSON, formatYAML:
		return nil
	}
	return usageError(fmt.Errorf("-o: want table, json or yaml, got %q", f))
}

// writeRules prints rules: a table, protojson ({"rules": [...]}, or the bare
// rule when one was asked for), or the rules file format, which `apply` reads
// back.
func writeRules(w io.Writer, format string, rs []*pb.Rule, single bool) error {
	switch format {
	case formatJSON:
		if single && len(rs) == 1 {
			return writeJSON(w, rs[0])
		}
		return writeJSONList(w, "rules", rs)
	case formatYAML:
		return writeRulesFile(w, rs)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPRIORITY\tFIXED_RATE\tRESERVOIR\tSERVICE\tMETHOD\tPATH")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.GetName(), r.GetPriority(), formatRate(r.GetFixedRate()),
			r.GetReservoirSize(), orAny(r.GetServiceName()), orAny(r.GetHttpMethod()), orAny(r.GetUrlPath()))
	}
	return tw.Flush()
}

// writeEvents prints audit events, newest first.
func writeEvents(w io.Writer, format string, events []*pb.RuleEvent) error {
	switch format {
	case formatJSON:
		return writeJSONList(w, "events", events)
	case formatYAML:
		// The audit log is not a rules file: print the JSON form as YAML.
		b, err := jsonList("events", events)
		if err != nil {
			return err
		}
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
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tRULE\tCHANGES")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.GetEventTime().AsTime().UTC().Format(time.RFC3339),
			e.GetActor(), actionName(e.GetAction()), e.GetRuleName(), eventSummary(e))
	}
	return tw.Flush()
}

func actionName(a pb.RuleEvent_Action) string {
	switch a {
	case pb.RuleEvent_ACTION_CREATE:
		return "create"
	case pb.RuleEvent_ACTION_UPDATE:
		return "update"
	case pb.RuleEvent_ACTION_DELETE:
		return "delete"
	}
	return "unknown"
}

// eventSummary says what an edit did: the fields it changed, or for a create
// or delete the rule's settings.
func eventSummary(e *pb.RuleEvent) string {
	switch {
	case e.GetBefore() != nil && e.GetAfter() != nil:
		before, after := apiconv.RuleFromProto(e.GetBefore()).Normalize(), apiconv.RuleFromProto(e.GetAfter()).Normalize()
		return joinChanges(ruleChanges(&before, &after))
	case e.GetAfter() != nil:
		r := apiconv.RuleFromProto(e.GetAfter()).Normalize()
		return describeRule(&r)
	case e.GetBefore() != nil:
		r := apiconv.RuleFromProto(e.GetBefore()).Normalize()
		return describeRule(&r)
	}
	return ""
}

// writeJSON prints m as indented protojson. protojson deliberately varies its
// whitespace between builds, so the output is re-indented with encoding/json
// to be stable.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

func writeIndented(w io.Writer, b []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// writeJSONList prints {"key": [messages...]}: the shape of a List response
// without its paging fields, which mean nothing once every page is read.
func writeJSONList[M proto.Message](w io.Writer, key string, ms []M) error {
	b, err := jsonList(key, ms)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

func jsonList[M proto.Message](key string, ms []M) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{%q:[", key)
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		mb, err := marshalJSON(m)
		if err != nil {
			return nil, err
		}
		b.Write(mb)
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, err
	}
	return compact.Bytes(), nil
}

func formatRate(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func orAny(glob string) string {
	if glob == "" {
		return "*"
	}
	return glob
}

// change is one field that differs between two versions of a rule.
type change struct {
	path string // the update_mask path: "fixed_rate", "labels"
	text string // `fixed_rate 0.5 -> 0.2`, `labels.team "a" -> "b"`
}

// ruleChanges lists the mutable fields that differ from a to b (both
// normalized), in the proto's field order; map entries are listed one by one.
func ruleChanges(a, b *rules.Rule) []change {
	var cs []change
	num := func(path, x, y string) {
		if x != y {
			cs = append(cs, change{path, path + " " + x + " -> " + y})
		}
	}
	str := func(path, x, y string) {
		if x != y {
			cs = append(cs, change{path, fmt.Sprintf("%s %q -> %q", path, x, y)})
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
			cs = append(cs, change{path, fmt.Sprintf("%s.%s %s -> %s", path, k, entryText(xv, xok), entryText(yv, yok))})
		}
	}
	num("priority", strconv.Itoa(int(a.Priority)), strconv.Itoa(int(b.Priority)))
	num("fixed_rate", formatRate(a.FixedRate), formatRate(b.FixedRate))
	num("reservoir_size", strconv.FormatInt(a.ReservoirSize, 10), strconv.FormatInt(b.ReservoirSize, 10))
	str("service_name", a.ServiceName, b.ServiceName)
	str("service_type", a.ServiceType, b.ServiceType)
	str("host", a.Host, b.Host)
	str("http_method", a.HTTPMethod, b.HTTPMethod)
	str("url_path", a.URLPath, b.URLPath)
	str("resource_arn", a.ResourceARN, b.ResourceARN)
	entries("attributes", a.Attributes, b.Attributes)
	str("description", a.Description, b.Description)
	entries("labels", a.Labels, b.Labels)
	return cs
}

func entryText(v string, ok bool) string {
	if !ok {
		return "(none)"
	}
	return strconv.Quote(v)
}

func joinChanges(cs []change) string {
	texts := make([]string, len(cs))
	for i, c := range cs {
		texts[i] = c.text
	}
	return strings.Join(texts, ", ")
}

// maskPaths returns the update_mask for a list of changes.
func maskPaths(cs []change) []string {
	var paths []string
	for _, c := range cs {
		if !slices.Contains(paths, c.path) {
			paths = append(paths, c.path)
		}
	}
	return paths
}

// describeRule sums up a rule's settings on one line, leaving out globs that
// match anything.
func describeRule(r *rules.Rule) string {
	parts := []string{
		"priority " + strconv.Itoa(int(r.Priority)),
		"fixed_rate " + formatRate(r.FixedRate),
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
	}{{"attributes", r.Attributes}, {"labels", r.Labels}} {
		keys := make([]string, 0, len(m.m))
		for k := range m.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s.%s %q", m.name, k, m.m[k]))
		}
	}
	return strings.Join(parts, ", ")
}
