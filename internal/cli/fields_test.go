package cli

import (
	"bytes"
	"context"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
	"github.com/tracesampling/controlplane/pkg/rules/rulestest"
)

// The field-coverage test: a field of a rule cannot be half added. Every
// field of rules.Rule (filled by reflection, rulestest.Filled) and of the
// API's Rule (filled through protoreflect, filledProto) must come through
// the API mapping both ways, the rules file, the CLI's JSON, the server
// (create, get, and an update mask naming it) and the diff `rules apply`
// sends as a mask; the stores are checked by storetest's EveryFieldKept,
// the Go SDK by its TestEveryRuleFieldReachesTheSampler.
// A failure names the layer and the field.

// outputOnly are the API Rule's fields the server sets: ignored on input.
var outputOnly = []protoreflect.Name{"etag", "create_time", "update_time"}

// notInAPI are the fields of rules.Rule the API's Rule has no field for,
// and why.
var notInAPI = map[string]string{
	"RulesVersion": "the server's reports take it per rule from the store; the API reports a listing's rules version",
}

// filledProto returns an API Rule with every field set to a value of its
// own that the server accepts, seed making the values differ between
// calls; a field of a kind it has no filler for fails the test.
func filledProto(t *testing.T, seed int) *pb.Rule {
	t.Helper()
	p := &pb.Rule{}
	n := seed * 100
	fillMessage(t, p.ProtoReflect(), &n)
	return p
}

func fillMessage(t *testing.T, m protoreflect.Message, n *int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		*n++
		k := *n
		switch {
		case fd.IsMap() && fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind:
			m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k"+strconv.Itoa(k)).MapKey(), protoreflect.ValueOfString("v"+strconv.Itoa(k)))
		case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Timestamp":
			ts := timestamppb.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k) * time.Hour))
			m.Set(fd, protoreflect.ValueOfMessage(ts.ProtoReflect()))
		case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap():
			fillMessage(t, m.Mutable(fd).Message(), n)
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			fillMessage(t, m.Mutable(fd).List().AppendMutable().Message(), n)
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			m.Mutable(fd).List().Append(protoreflect.ValueOfString("p" + strconv.Itoa(k)))
		case fd.IsList() && fd.Kind() == protoreflect.DoubleKind:
			m.Mutable(fd).List().Append(protoreflect.ValueOfFloat64(1 / float64(k%1000+2)))
		case fd.IsList() || fd.IsMap():
			t.Fatalf("no filler for %s (a %s list or map): add one, and carry the field through every layer", fd.FullName(), fd.Kind())
		case fd.Kind() == protoreflect.EnumKind:
			// A value other than the default, which differs between seeds.
			vals := fd.Enum().Values()
			m.Set(fd, protoreflect.ValueOfEnum(vals.Get(1+k/100%(vals.Len()-1)).Number()))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("p"+strconv.Itoa(k)))
		case fd.Kind() == protoreflect.Int32Kind:
			m.Set(fd, protoreflect.ValueOfInt32(int32(k%1440+1))) // a priority, or minutes within a day
		case fd.Kind() == protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(int64(k+1)))
		case fd.Kind() == protoreflect.DoubleKind:
			m.Set(fd, protoreflect.ValueOfFloat64(1/float64(k%1000+2)))
		default:
			t.Fatalf("no filler for %s (%s): add one, and carry the field through every layer", fd.FullName(), fd.Kind())
		}
	}
}

// setFields returns the names of p's fields that are set.
func setFields(p proto.Message) []protoreflect.Name {
	var names []protoreflect.Name
	p.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		names = append(names, fd.Name())
		return true
	})
	slices.Sort(names)
	return names
}

// differingFields returns the names of the fields of a and b, messages of
// one type, that differ.
func differingFields[M proto.Message](a, b M) []protoreflect.Name {
	var names []protoreflect.Name
	fields := a.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !a.ProtoReflect().Get(fd).Equal(b.ProtoReflect().Get(fd)) {
			names = append(names, fd.Name())
		}
	}
	return names
}

// apiPaths checks that rulepb.ToProto maps every field of rules.Rule to an API
// field of its own, found by mapping a rule that has only that field set
// (fields of notInAPI map to none), and that every API field is some
// field's.
func apiPaths(t *testing.T) {
	t.Helper()
	filled := rulestest.Filled(t, 1)
	reached := map[protoreflect.Name]bool{}
	for _, name := range ruleFieldNames() {
		all := slices.DeleteFunc(ruleFieldNames(), func(f string) bool { return f == name })
		only := rulestest.Without(t, filled, all...)
		set := setFields(rulepb.ToProto(&only))
		_, excused := notInAPI[name]
		switch {
		case excused && len(set) == 0:
		case excused:
			t.Errorf("rulepb: rules.Rule.%s maps to %v, but the test says the API has no field for it (notInAPI)", name, set)
		case len(set) != 1:
			t.Errorf("rulepb: ToProto maps rules.Rule.%s to the API fields %v, want exactly one", name, set)
		default:
			reached[set[0]] = true
		}
	}
	fields := (&pb.Rule{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if name := fields.Get(i).Name(); !reached[name] {
			t.Errorf("rulepb: no field of rules.Rule is mapped to the API's Rule.%s", name)
		}
	}
}

// ruleFieldNames returns the names of rules.Rule's fields.
func ruleFieldNames() []string {
	t := reflect.TypeFor[rules.Rule]()
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = t.Field(i).Name
	}
	return names
}

func TestEveryRuleFieldIsCarried(t *testing.T) {
	domain := rulestest.Filled(t, 1)
	fromClient := rulestest.Without(t, domain, rulestest.StoreSet...) // what a client can set
	api := filledProto(t, 1)
	ignoreOutputOnly := protocmp.IgnoreFields(&pb.Rule{}, outputOnly...)

	t.Run("rulepb", func(t *testing.T) {
		apiPaths(t)
		if diff := cmp.Diff(fromClient, rulepb.FromProto(rulepb.ToProto(&domain))); diff != "" {
			t.Errorf("rulepb: rules.Rule -> API -> rules.Rule lost a field (-want +got):\n%s", diff)
		}
		back := rulepb.FromProto(api)
		if diff := cmp.Diff(api, rulepb.ToProto(&back), protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("rulepb: API -> rules.Rule -> API lost a field (-want +got):\n%s", diff)
		}
	})

	t.Run("rules file", func(t *testing.T) {
		var buf bytes.Buffer
		if err := files.WriteRules(&buf, []*pb.Rule{rulepb.ToProto(&domain)}); err != nil {
			t.Fatal(err)
		}
		entries, err := files.LoadRules("fields.yaml", buf.Bytes())
		if err != nil {
			t.Fatalf("files: the rules file does not read back: %v\n%s", err, buf.String())
		}
		if len(entries) != 1 {
			t.Fatalf("files: %d rules read back, want 1", len(entries))
		}
		if diff := cmp.Diff(fromClient, entries[0].Rule); diff != "" {
			t.Errorf("files: write then load lost a field (-want +got):\n%s\n%s", diff, buf.String())
		}
	})

	t.Run("JSON output", func(t *testing.T) {
		b, err := output.MarshalJSON(api)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.Rule
		if err := output.UnmarshalJSON(b, &got); err != nil {
			t.Fatalf("output: the JSON does not read back: %v\n%s", err, b)
		}
		if diff := cmp.Diff(api, &got, protocmp.Transform()); diff != "" {
			t.Errorf("output: JSON and back lost a field (-want +got):\n%s\n%s", diff, b)
		}
	})

	t.Run("mutable fields", func(t *testing.T) {
		// Every API field but the name and the output-only ones is one an
		// update mask may name, and each has a flag of its own.
		var want []string
		fields := api.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			if name := fields.Get(i).Name(); name != "name" && !slices.Contains(outputOnly, name) {
				want = append(want, string(name))
			}
		}
		if diff := cmp.Diff(want, rules.MutableFields); diff != "" {
			t.Errorf("rules.MutableFields is not the API's mutable fields in the proto's order (-want +got):\n%s", diff)
		}
		var flags []string
		for _, fp := range flagPaths() {
			if !slices.Contains(flags, fp[1]) {
				flags = append(flags, fp[1])
			}
		}
		if diff := cmp.Diff(want, flags); diff != "" {
			t.Errorf("cli: the rule flags (flagPaths) do not set each mutable field, in the proto's order (-want +got):\n%s", diff)
		}
	})

	t.Run("masks", func(t *testing.T) {
		// For each mutable field: the edit that takes it alone from a patch
		// (rules.WithFields) changes that API field and no other, the diff
		// `rules apply` makes of it names it, as its mask, and the audit
		// log's summary of a rule shows it.
		base := rulestest.Filled(t, 1)
		patch := rulestest.Filled(t, 2)
		patch.Name = base.Name
		for _, path := range rules.MutableFields {
			next := rules.WithFields(base, &patch, []string{path})
			if got := differingFields(rulepb.ToProto(&base), rulepb.ToProto(&next)); !slices.Equal(got, []protoreflect.Name{protoreflect.Name(path)}) {
				t.Errorf("rules.WithFields with the mask %q changed the API fields %v", path, got)
			}
			cs := output.RuleChanges(&base, &next)
			if got := output.MaskPaths(cs); !slices.Equal(got, []string{path}) {
				t.Errorf("output.RuleChanges of a change of %q gives the mask %q (%s)", path, got, output.JoinChanges(cs))
			}
			// The audit log's summary of a create or delete names every
			// field but the description, free text too long for its line.
			if d := output.DescribeRule(&base); path != "description" && !strings.Contains(d, path+" ") && !strings.Contains(d, path+".") {
				t.Errorf("output.DescribeRule leaves out %q: %s", path, d)
			}
		}
	})

	t.Run("server", func(t *testing.T) {
		// Create and read back over gRPC; then update each field alone with
		// a mask naming it: the answer differs in that field only.
		s := startCLIServer(t, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := s.api.CreateRule(ctx, &pb.CreateRuleRequest{Rule: api}); err != nil {
			t.Fatalf("server: CreateRule of a rule with every field: %v", err)
		}
		got := s.get(t, api.GetName())
		if diff := cmp.Diff(api, got, protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("server: create then get lost a field (-want +got):\n%s", diff)
		}
		patch := filledProto(t, 2)
		patch.Name, patch.Etag = api.GetName(), "" // any revision
		for _, path := range rules.MutableFields {
			before := s.get(t, api.GetName())
			resp, err := s.api.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: patch, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{path}}})
			if err != nil {
				t.Errorf("server: UpdateRule with the mask %q: %v", path, err)
				continue
			}
			changed := slices.DeleteFunc(differingFields(before, resp.GetRule()), func(n protoreflect.Name) bool { return slices.Contains(outputOnly, n) })
			if !slices.Equal(changed, []protoreflect.Name{protoreflect.Name(path)}) {
				t.Errorf("server: UpdateRule with the mask %q changed %v", path, changed)
			}
		}
		if diff := cmp.Diff(patch, s.get(t, api.GetName()), protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("server: updating every field, one mask at a time, did not reach the patch (-want +got):\n%s", diff)
		}
	})
}
