package cli

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/budgettest"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
)

// The budget's field-coverage test, the twin of TestEveryRuleFieldIsCarried:
// every field of budget.Budget (filled by reflection, budgettest.Filled)
// and of the API's Budget (filled through protoreflect, filledBudgetProto)
// must come through the API mapping both ways, the budgets file, the CLI's
// JSON, the edit masks (budget.WithFields, and the diff `budgets apply`
// sends as a mask) and the server (create, get, and an update mask naming
// it); the store's record is checked in internal/store/internal/record
// (TestBudgetRecordKeepsEveryField). A failure names the layer and field.

// budgetOutputOnly are the API Budget's fields the server sets: ignored on
// input.
var budgetOutputOnly = []protoreflect.Name{"etag", "create_time", "update_time", "update_actor", "uid", "generation"}

// filledBudgetProto returns an API Budget with every field set to a value
// of its own that the server accepts, seed making the values differ; the
// three fields whose valid values their type does not say are set as
// budgettest sets them.
func filledBudgetProto(t *testing.T, seed int) *pb.Budget {
	t.Helper()
	p := &pb.Budget{}
	n := seed * 100
	fillMessage(t, p.ProtoReflect(), &n)
	p.CurrencyCode = "Y" + string(rune('A'+seed%26)) + "Z"
	p.MonthlyAmountMicros = int64(seed) * 1_000_000 * budget.MicrosPerUnit
	for i, c := range p.Channels {
		c.WebhookUrl = "https://hooks" + strconv.Itoa(seed) + ".example/p" + strconv.Itoa(i)
	}
	b := apiconv.BudgetFromProto(p)
	if err := budget.Validate(&b); err != nil {
		t.Fatalf("filledBudgetProto made an invalid budget (fix its fillers): %v", err)
	}
	return p
}

// shown is p as the server's answers show it: webhook URLs redacted,
// secrets masked.
func shown(p *pb.Budget) *pb.Budget {
	p = proto.Clone(p).(*pb.Budget)
	for _, c := range p.GetChannels() {
		c.WebhookUrl = budget.RedactURL(c.GetWebhookUrl())
		if c.GetSecret() != "" {
			c.Secret = budget.SecretMask
		}
	}
	return p
}

// budgetAPIPaths checks that BudgetToRequest maps every field of
// budget.Budget to an API field of its own, found by mapping a budget that
// has only that field set, and that every API field is some field's.
func budgetAPIPaths(t *testing.T) {
	t.Helper()
	filled := budgettest.Filled(t, 1)
	zero := apiconv.BudgetToRequest(&budget.Budget{})
	reached := map[protoreflect.Name]bool{}
	for _, name := range budgettest.FieldNames() {
		others := slices.DeleteFunc(budgettest.FieldNames(), func(f string) bool { return f == name })
		only := budgettest.Without(t, filled, others...)
		set := differingFields(zero, apiconv.BudgetToRequest(&only))
		if len(set) != 1 {
			t.Errorf("apiconv: BudgetToRequest maps budget.Budget.%s to the API fields %v, want exactly one", name, set)
			continue
		}
		reached[set[0]] = true
	}
	fields := zero.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if name := fields.Get(i).Name(); !reached[name] {
			t.Errorf("apiconv: no field of budget.Budget is mapped to the API's Budget.%s", name)
		}
	}
}

func TestEveryBudgetFieldIsCarried(t *testing.T) {
	domain := budgettest.Filled(t, 1)
	fromClient := budgettest.Without(t, domain, budgettest.StoreSet...) // what a client can set
	api := filledBudgetProto(t, 1)
	ignoreOutputOnly := protocmp.IgnoreFields(&pb.Budget{}, budgetOutputOnly...)

	t.Run("apiconv", func(t *testing.T) {
		budgetAPIPaths(t)
		if diff := cmp.Diff(fromClient, apiconv.BudgetFromProto(apiconv.BudgetToRequest(&domain))); diff != "" {
			t.Errorf("apiconv: budget.Budget -> API -> budget.Budget lost a field (-want +got):\n%s", diff)
		}
		back := apiconv.BudgetFromProto(api)
		if diff := cmp.Diff(api, apiconv.BudgetToRequest(&back), protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("apiconv: API -> budget.Budget -> API lost a field (-want +got):\n%s", diff)
		}
		// Answers differ from requests in the channels' URLs and secrets only.
		if diff := cmp.Diff(shown(apiconv.BudgetToRequest(&domain)), apiconv.BudgetToProto(&domain), protocmp.Transform()); diff != "" {
			t.Errorf("apiconv: BudgetToProto is not BudgetToRequest with the webhooks hidden (-want +got):\n%s", diff)
		}
	})

	t.Run("budgets file", func(t *testing.T) {
		var buf bytes.Buffer
		if err := files.WriteBudgets(&buf, []*pb.Budget{apiconv.BudgetToRequest(&domain)}); err != nil {
			t.Fatal(err)
		}
		entries, err := files.LoadBudgets("fields.yaml", buf.Bytes())
		if err != nil {
			t.Fatalf("files: the budgets file does not read back: %v\n%s", err, buf.String())
		}
		if len(entries) != 1 {
			t.Fatalf("files: %d budgets read back, want 1", len(entries))
		}
		if diff := cmp.Diff(fromClient, apiconv.BudgetFromProto(entries[0])); diff != "" {
			t.Errorf("files: write then load lost a field (-want +got):\n%s\n%s", diff, buf.String())
		}
	})

	t.Run("JSON output", func(t *testing.T) {
		b, err := output.MarshalJSON(api)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.Budget
		if err := output.UnmarshalJSON(b, &got); err != nil {
			t.Fatalf("output: the JSON does not read back: %v\n%s", err, b)
		}
		if diff := cmp.Diff(api, &got, protocmp.Transform()); diff != "" {
			t.Errorf("output: JSON and back lost a field (-want +got):\n%s\n%s", diff, b)
		}
	})

	t.Run("mutable fields", func(t *testing.T) {
		// Every API field but the name and the output-only ones is one an
		// update mask may name.
		var want []string
		fields := api.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			if name := fields.Get(i).Name(); name != "name" && !slices.Contains(budgetOutputOnly, name) {
				want = append(want, string(name))
			}
		}
		if diff := cmp.Diff(want, budget.MutableFields); diff != "" {
			t.Errorf("budget.MutableFields is not the API's mutable fields in the proto's order (-want +got):\n%s", diff)
		}
	})

	t.Run("masks", func(t *testing.T) {
		// For each mutable field: the edit that takes it alone from a patch
		// (budget.WithFields) changes that API field and no other, and the
		// diff `budgets apply` makes of it, against the budget as the
		// server shows it, names it as its mask.
		base := budgettest.Filled(t, 1)
		patch := budgettest.Filled(t, 2)
		patch.Name = base.Name
		asShown := apiconv.BudgetFromProto(apiconv.BudgetToProto(&base))
		for _, path := range budget.MutableFields {
			next := budget.WithFields(base, &patch, []string{path})
			if got := differingFields(apiconv.BudgetToRequest(&base), apiconv.BudgetToRequest(&next)); !slices.Equal(got, []protoreflect.Name{protoreflect.Name(path)}) {
				t.Errorf("budget.WithFields with the mask %q changed the API fields %v", path, got)
			}
			cs := output.BudgetChanges(&asShown, &next)
			if got := output.MaskPaths(cs); !slices.Equal(got, []string{path}) {
				t.Errorf("output.BudgetChanges of a change of %q gives the mask %q (%s)", path, got, output.JoinChanges(cs))
			}
		}
	})

	t.Run("server", func(t *testing.T) {
		// Create and read back over gRPC; then update each field alone with
		// a mask naming it: the answer differs in that field only.
		s := startBudgetServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := s.api.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: api}); err != nil {
			t.Fatalf("server: CreateBudget of a budget with every field: %v", err)
		}
		get := func() *pb.Budget {
			t.Helper()
			resp, err := s.api.GetBudget(ctx, &pb.GetBudgetRequest{Name: api.GetName()})
			if err != nil {
				t.Fatalf("server: GetBudget: %v", err)
			}
			return resp.GetBudget()
		}
		if diff := cmp.Diff(shown(api), get(), protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("server: create then get lost a field (-want +got):\n%s", diff)
		}
		patch := filledBudgetProto(t, 2)
		patch.Name, patch.Etag = api.GetName(), "" // any revision
		for _, path := range budget.MutableFields {
			before := get()
			resp, err := s.api.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: patch, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{path}}})
			if err != nil {
				t.Errorf("server: UpdateBudget with the mask %q: %v", path, err)
				continue
			}
			changed := slices.DeleteFunc(differingFields(before, resp.GetBudget()), func(n protoreflect.Name) bool { return slices.Contains(budgetOutputOnly, n) })
			if !slices.Equal(changed, []protoreflect.Name{protoreflect.Name(path)}) {
				t.Errorf("server: UpdateBudget with the mask %q changed %v", path, changed)
			}
		}
		if diff := cmp.Diff(shown(patch), get(), protocmp.Transform(), ignoreOutputOnly); diff != "" {
			t.Errorf("server: updating every field, one mask at a time, did not reach the patch (-want +got):\n%s", diff)
		}
	})
}
