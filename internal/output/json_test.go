package output

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
)

// TestJSON: 64-bit integers are numbers, enums have the short names of the
// other outputs, fields keep the proto's order, and UnmarshalJSON reads it
// all back.
func TestJSON(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name string
		m    proto.Message
		want string
	}{
		{
			name: "budget",
			m: &pb.Budget{Name: "shop", MonthlyAmountMicros: 1_000_000_000_000_000_000, CurrencyCode: "USD", PricePerMillionMicros: 5_000_000,
				Mode: pb.Budget_MODE_ALERT_ONLY, SpendThresholds: []float64{0.5, 1}, Scope: &pb.BudgetScope{RuleLabels: map[string]string{"team": "a<b>&c"}}},
			want: `"scope":{"service_names":[],"rule_labels":{"team":"a<b>&c"}},"monthly_amount_micros":1000000000000000000,"currency_code":"USD","price_per_million_micros":5000000,"free_traces":0,"mode":"alert_only","spend_thresholds":[0.5,1]`,
		},
		{
			name: "alert",
			m:    &pb.Alert{Id: "1", BudgetName: "shop", Kind: pb.Alert_KIND_ENFORCEMENT_STARTED, FireTime: at},
			want: `"kind":"enforcement_started"`,
		},
		{
			name: "event",
			m:    &pb.RuleEvent{Action: pb.RuleEvent_ACTION_UPDATE, EventTime: at, After: &pb.Rule{Name: "a", ReservoirSize: 1 << 60}},
			want: `"action":"update"`,
		},
		{
			name: "status",
			m:    &pb.BudgetStatus{BudgetName: "shop", SpentMicros: 12, Rules: []*pb.RuleSpend{{RuleName: "a", Requests: 9_007_199_254_740_993}}},
			want: `"rules":[{"rule_name":"a","requests":9007199254740993,`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := MarshalJSON(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tc.want) {
				t.Errorf("MarshalJSON =\n%s\nwant it to contain\n%s", b, tc.want)
			}
			got := tc.m.ProtoReflect().New().Interface()
			if err := UnmarshalJSON(b, got); err != nil {
				t.Fatalf("UnmarshalJSON: %v\n%s", err, b)
			}
			if diff := cmp.Diff(tc.m, got, protocmp.Transform()); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEnumNames: the JSON's enum names are the ones the tables and the
// budgets file use.
func TestEnumNames(t *testing.T) {
	for _, m := range []pb.Budget_Mode{pb.Budget_MODE_ENFORCE, pb.Budget_MODE_ALERT_ONLY} {
		if got, want := enumText(m), files.ModeName(m); got != want {
			t.Errorf("%v: JSON says %q, the file %q", m, got, want)
		}
	}
	for k, want := range map[pb.Alert_Kind]string{pb.Alert_KIND_SPEND_THRESHOLD: "spend_threshold", pb.Alert_KIND_EXHAUSTED: "exhausted"} {
		if got := alertKindText(k); got != want {
			t.Errorf("%v: %q, want %q", k, got, want)
		}
	}
	if got := actionName(pb.RuleEvent_Action(99)); got != "99" {
		t.Errorf("an unknown action is %q, want its number", got)
	}
}
