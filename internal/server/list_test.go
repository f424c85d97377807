package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/store"
)

func TestListRulesPagingAndFilter(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	var want []string
	for i := range 25 {
		r := &pb.Rule{Name: fmt.Sprintf("r%02d", i), Priority: int32(100 - i%5), ServiceName: "svc-*"}
		if i%2 == 0 {
			r.Labels = map[string]string{"team": "even"}
			r.ServiceName = "even-svc"
		}
		if _, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	// Expected order: priority ascending, then name.
	for p := int32(96); p <= 100; p++ {
		for i := range 25 {
			if int32(100-i%5) == p {
				want = append(want, fmt.Sprintf("r%02d", i))
			}
		}
	}
	want = append(want, "Default")

	list := func(filter string, size int32) []string {
		var names []string
		token := ""
		for pages := 0; ; pages++ {
			resp, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{PageSize: size, PageToken: token, Filter: filter})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetRules()) > int(size) {
				t.Fatalf("page of %d rules, page size %d", len(resp.GetRules()), size)
			}
			for _, r := range resp.GetRules() {
				names = append(names, r.GetName())
			}
			if token = resp.GetNextPageToken(); token == "" {
				return names
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
	}
	if got := list("", 10); !slices.Equal(got, want) {
		t.Errorf("paged listing = %v\nwant %v", got, want)
	}
	even := list("labels.team=even", 4)
	if len(even) != 13 {
		t.Errorf("labels.team=even gave %d rules: %v", len(even), even)
	}
	// service=svc-x matches the odd rules' glob "svc-*" and the Default rule.
	if got := list(`service="svc-x" AND labels.team=even`, 3); len(got) != 0 {
		t.Errorf("conjunction gave %v, want none", got)
	}
	if got := list("service=svc-x", 50); len(got) != 13 || got[len(got)-1] != "Default" {
		t.Errorf("service=svc-x gave %v", got)
	}

	resp, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.rules.ListRules(ctx, &pb.ListRulesRequest{PageSize: 2, PageToken: resp.GetNextPageToken(), Filter: "labels.team=even"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("token reused with another filter: %v, want InvalidArgument", err)
	}
}

// faultStore fails or panics on demand, to prove the boundary maps what the
// real stores cannot be made to do on cue.
type faultStore struct {
	RuleStore
	err   error
	panic bool
}

func (f *faultStore) Snapshot(ctx context.Context) (store.Snapshot, error) {
	if f.panic {
		panic("boom")
	}
	return store.Snapshot{}, f.err
}

func TestStoreFailuresAreMapped(t *testing.T) {
	tests := []struct {
		name string
		fs   *faultStore
		code codes.Code
	}{
		{"unavailable", &faultStore{err: fmt.Errorf("snapshot: %w: dial tcp 10.0.0.1:6379: connection refused", store.ErrUnavailable)}, codes.Unavailable},
		{"unexpected", &faultStore{err: errors.New("ERR wrong number of arguments for 'hget' command")}, codes.Internal},
		{"panic", &faultStore{panic: true}, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fs.RuleStore = newMemStore(t)
			ts := startServer(t, tt.fs)
			_, err := ts.rules.ListRules(ctxT(t), &pb.ListRulesRequest{})
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code = %v, want %v", st.Code(), tt.code)
			}
			for _, leak := range []string{"6379", "hget", "boom"} {
				if strings.Contains(st.Message(), leak) {
					t.Errorf("message %q leaks internal detail %q", st.Message(), leak)
				}
			}
			// The server keeps serving after a panic.
			if _, err := ts.rules.GetRule(ctxT(t), &pb.GetRuleRequest{Name: "Default"}); err != nil {
				t.Errorf("after failure: %v", err)
			}
		})
	}
}

// TestNotReplicatedSaysTheEditIsApplied: an edit that no replica confirmed
// is UNAVAILABLE, with a message that says it is applied and may be lost,
// so that a client reads it back rather than sending it again blindly.
func TestNotReplicatedSaysTheEditIsApplied(t *testing.T) {
	fs := &faultStore{RuleStore: newMemStore(t), err: fmt.Errorf("redis: edit applied but not confirmed by the replicas: %w: %w: WAIT 127.0.0.1:6379",
		store.ErrUnavailable, store.ErrNotReplicated)}
	ts := startServer(t, fs)
	_, err := ts.rules.ListRules(ctxT(t), &pb.ListRulesRequest{})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "applied") || !strings.Contains(st.Message(), "read it back") {
		t.Errorf("status %v %q, want Unavailable saying the edit is applied and to read it back", st.Code(), st.Message())
	}
	if strings.Contains(st.Message(), "6379") {
		t.Errorf("message %q leaks internal detail", st.Message())
	}
}
