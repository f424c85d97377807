package xraycore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// The X-Ray port under hostile input (docs/RELIABILITY.md): the transport
// over the real core, on loopback, with what a careless or hostile client
// sends. Every refusal is a 4xx in X-Ray's shape and changes nothing.

type hostileReply struct {
	status int
	typ    string
	msg    string
	body   map[string]any
}

// serveHTTP serves core on loopback, every request as principal p (the
// guard's job on a real port), and returns a poster.
func (e *env) serveHTTP(t *testing.T, core xray.Core, p *auth.Principal) func(path, body string) hostileReply {
	t.Helper()
	h, err := xray.NewHandler(core, xray.Options{Now: e.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p != nil {
			r = r.WithContext(auth.NewContext(r.Context(), p))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return func(path, body string) hostileReply {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		r := hostileReply{status: resp.StatusCode}
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("POST %s: not a JSON object: %s", path, raw)
		}
		r.typ, _ = r.body["__type"].(string)
		r.msg, _ = r.body["Message"].(string)
		return r
	}
}

var editor = &auth.Principal{Name: "ci", Role: auth.RoleEditor, Kind: auth.KindAccessKey}

func createBody(name, override string) string {
	return `{"SamplingRule":{"RuleName":"` + name + `","Priority":10,"FixedRate":0.1,"ReservoirSize":1,"ServiceName":"shop","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","ResourceARN":"*","Version":1` + override + `}}`
}

func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// TestHostileBodies: malformed and hostile JSON on every kind of call is
// refused as InvalidRequestException, naming what is wrong, and leaves the
// rules as they were.
func TestHostileBodies(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	post := e.serveHTTP(t, e.core, editor)
	const id = `"ClientID":"0123456789abcdef01234567"`
	stats := func(doc string) string {
		return `{"SamplingStatisticsDocuments":[{` + id + `,"RuleName":"checkout",` + doc + `}]}`
	}
	for _, tc := range []struct {
		name, path, body, text string
	}{
		{"nesting 40,000 deep", "/GetSamplingRules", `{"NextToken":` + nested(40_000) + `}`, "JSON"},
		{"nesting in an unknown member", "/CreateSamplingRule", `{"X":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`, "JSON"},
		{"FixedRate 1e400", "/CreateSamplingRule", createBody("a", `,"FixedRate":1e400`), "FixedRate"},
		{"FixedRate 1e308", "/CreateSamplingRule", createBody("a", `,"FixedRate":1e308`), "FixedRate"},
		{"FixedRate -0.5", "/CreateSamplingRule", createBody("a", `,"FixedRate":-0.5`), "FixedRate"},
		{"ReservoirSize 1e30", "/CreateSamplingRule", createBody("a", `,"ReservoirSize":1e30`), "SamplingRule.ReservoirSize: want an integer"},
		{"ReservoirSize 2^63", "/CreateSamplingRule", createBody("a", `,"ReservoirSize":9223372036854775808`), "SamplingRule.ReservoirSize: want an integer"},
		{"Priority 1e10", "/CreateSamplingRule", createBody("a", `,"Priority":10000000000`), "Priority"},
		{"Version 1.5", "/CreateSamplingRule", createBody("a", `,"Version":1.5`), "SamplingRule.Version: want an integer"},
		{"FixedRate NaN", "/CreateSamplingRule", createBody("a", `,"FixedRate":NaN`), "syntax"},
		{"FixedRate Infinity", "/CreateSamplingRule", createBody("a", `,"FixedRate":Infinity`), "syntax"},
		{"FixedRate \"NaN\"", "/CreateSamplingRule", createBody("a", `,"FixedRate":"NaN"`), "FixedRate"},
		{"MaxRate NaN string", "/CreateSamplingRule", createBody("a", `,"SamplingRateBoost":{"MaxRate":"NaN","CooldownWindowMinutes":1}`), "SamplingRateBoost"},
		{"RuleName a number", "/CreateSamplingRule", createBody("a", `,"RuleName":5`), "RuleName"},
		{"Attributes a list", "/CreateSamplingRule", createBody("a", `,"Attributes":["a"]`), "Attributes"},
		{"six attributes", "/CreateSamplingRule", createBody("a", `,"Attributes":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1"}`), "Attributes"},
		{"an attribute key of 1,000 characters", "/CreateSamplingRule", createBody("a", `,"Attributes":{"`+strings.Repeat("k", 1000)+`":"v"}`), "Attributes"},
		{"RuleName of invalid UTF-8", "/CreateSamplingRule", createBody("\xff\xfe", ""), "RuleName"},
		{"ServiceName of 65 characters", "/CreateSamplingRule", createBody("a", `,"ServiceName":"`+strings.Repeat("s", 65)+`"`), "ServiceName"},
		{"tags an object", "/TagResource", `{"ResourceARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout","Tags":{"a":"b"}}`, "Tags"},
		{"51 tags", "/CreateSamplingRule", `{"SamplingRule":` + createBody("a", "")[len(`{"SamplingRule":`):len(createBody("a", ""))-1] + `,"Tags":[` + tags(51) + `]}`, "Tags"},
		{"a tag value of invalid UTF-8", "/TagResource", `{"ResourceARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout","Tags":[{"Key":"k","Value":"` + "\xff" + `"}]}`, "Value"},
		{"an array body", "/GetSamplingRules", `[]`, "JSON object"},
		{"two objects", "/GetSamplingRules", `{}{}`, "after"},
		{"statistics an object", "/SamplingTargets", `{"SamplingStatisticsDocuments":{}}`, "SamplingStatisticsDocuments"},
		{"RequestCount 2^53+1", "/SamplingTargets", stats(`"RequestCount":9007199254740993,"SampledCount":0,"BorrowCount":0,"Timestamp":1`), "SamplingStatisticsDocuments.RequestCount: an integer out of range"},
		{"RequestCount a string", "/SamplingTargets", stats(`"RequestCount":"10","SampledCount":0,"BorrowCount":0,"Timestamp":1`), "SamplingStatisticsDocuments.RequestCount: want an integer"},
		{"a negative timestamp", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":-1`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"a timestamp after 5138", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":1e14`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"a NaN timestamp", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":"NaN"`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"26 documents", "/SamplingTargets", `{"SamplingStatisticsDocuments":[` + docs(26) + `]}`, "at most 25"},
		{"a short ClientID", "/SamplingTargets", `{"SamplingStatisticsDocuments":[{"ClientID":"abc","RuleName":"checkout","RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":1}]}`, "ClientID"},
		{"a 10 MB body", "/SamplingTargets", `{"SamplingStatisticsDocuments":[],"X":"` + strings.Repeat("a", 10<<20) + `"}`, "over"},
	} {
		before := e.version(t)
		r := post(tc.path, tc.body)
		if r.status != http.StatusBadRequest || r.typ != "InvalidRequestException" || !strings.Contains(r.msg, tc.text) {
			t.Errorf("%s: %d %s %q, want 400 InvalidRequestException with %q", tc.name, r.status, r.typ, r.msg, tc.text)
		}
		if after := e.version(t); after != before {
			t.Errorf("%s: rules version %d → %d", tc.name, before, after)
		}
	}
}

func tags(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"Key":"k%d","Value":"v"}`, i)
	}
	return b.String()
}

func docs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ClientID":"0123456789abcdef01234567","RuleName":"checkout","RequestCount":%d,"SampledCount":0,"BorrowCount":0,"Timestamp":1}`, i)
	}
	return b.String()
}

func (e *env) version(t *testing.T) int64 {
	t.Helper()
	v, err := e.st.RulesVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestHostileTimestamps: every form of timestamp clients send is read; one
// far in the future is the core's to reject, as a document, not the call.
func TestHostileTimestamps(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	post := e.serveHTTP(t, e.core, nil)
	now := e.clk.Now()
	for i, tc := range []struct {
		name, ts, code string
	}{
		{"seconds", fmt.Sprint(now.Unix()), ""},
		{"milliseconds", fmt.Sprint(now.UnixMilli()), ""},
		{"fractional seconds", fmt.Sprintf("%d.25", now.Unix()), ""},
		{"a string of seconds", fmt.Sprintf(`"%d"`, now.Unix()), ""},
		{"RFC 3339", `"` + now.Format("2006-01-02T15:04:05Z") + `"`, ""},
		{"1970", "0", ""},
		{"null", "null", ""},
		{"the year 2286 in milliseconds", "1e13", "FUTURE"},
		{"an hour ahead", fmt.Sprint(now.Unix() + 3600), "FUTURE"},
	} {
		body := fmt.Sprintf(`{"SamplingStatisticsDocuments":[{"ClientID":"%s","RuleName":"checkout","RequestCount":10,"SampledCount":1,"BorrowCount":0,"Timestamp":%s}]}`, clientID(i), tc.ts)
		r := post("/SamplingTargets", body)
		if r.status != http.StatusOK {
			t.Errorf("%s: %d %s %q, want 200", tc.name, r.status, r.typ, r.msg)
			continue
		}
		un, _ := r.body["UnprocessedStatistics"].([]any)
		targets, _ := r.body["SamplingTargetDocuments"].([]any)
		switch {
		case tc.code == "" && (len(un) != 0 || len(targets) != 1):
			t.Errorf("%s: unprocessed %v, targets %v; want the document taken", tc.name, un, targets)
		case tc.code != "" && (len(un) != 1 || !strings.Contains(fmt.Sprint(un[0]), tc.code)):
			t.Errorf("%s: unprocessed %v, want %s", tc.name, un, tc.code)
		}
	}
}

// TestHostileStatistics: 25 documents of one rule count once; negative and
// inconsistent counts are rejected one by one; duplicate or differently
// cased JSON keys cannot reach the Default rule past its checks.
func TestHostileStatistics(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	post := e.serveHTTP(t, e.core, editor)
	r := post("/SamplingTargets", `{"SamplingStatisticsDocuments":[`+docs(25)+`]}`)
	if un, _ := r.body["UnprocessedStatistics"].([]any); r.status != 200 || len(un) != 24 {
		t.Fatalf("25 documents of one rule: %d, %d unprocessed, want 200 and 24 (DUPLICATE)", r.status, len(un))
	}
	st, err := e.core.fleet.Status(context.Background(), fleetQuery())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Rules[0]; got.Rule.Name != "checkout" || got.Instances != 1 {
		t.Errorf("after 25 documents of one client: %s has %d instances, want 1", got.Rule.Name, got.Instances)
	}
	for _, c := range []struct{ name, doc, code string }{
		{"negative", `"RequestCount":-5,"SampledCount":0,"BorrowCount":0`, "NEGATIVE"},
		{"sampled above requests", `"RequestCount":1,"SampledCount":5,"BorrowCount":0`, "INCONSISTENT"},
	} {
		r := post("/SamplingTargets", `{"SamplingStatisticsDocuments":[{"ClientID":"`+clientID(7)+`","RuleName":"checkout",`+c.doc+`}]}`)
		if un, _ := r.body["UnprocessedStatistics"].([]any); r.status != 200 || len(un) != 1 || !strings.Contains(fmt.Sprint(un[0]), c.code) {
			t.Errorf("%s: %d %v, want 200 with %s unprocessed", c.name, r.status, r.body, c.code)
		}
	}
	for _, body := range []string{
		`{"RuleName":"checkout","RuleName":"Default"}`,
		`{"RuleName":"checkout","rulename":"Default"}`,
		`{"RuleARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/Default"}`,
	} {
		before := e.version(t)
		if r := post("/DeleteSamplingRule", body); r.status != 400 || !strings.Contains(r.msg, "Default") {
			t.Errorf("delete %s: %d %s %q, want 400 naming the Default rule", body, r.status, r.typ, r.msg)
		}
		if after := e.version(t); after != before {
			t.Errorf("delete %s changed the rules", body)
		}
	}
	for _, body := range []string{
		`{"SamplingRuleUpdate":{"RuleName":"Default","URLPath":"/x"}}`,
		`{"SamplingRuleUpdate":{"RuleName":"Default","ServiceName":"shop"}}`,
		`{"SamplingRuleUpdate":{"RuleName":"Default","Priority":1}}`,
		`{"SamplingRuleUpdate":{"RuleName":"Default","SamplingRateBoost":{"MaxRate":1,"CooldownWindowMinutes":1}}}`,
		`{"SamplingRuleUpdate":{"RuleName":"checkout","RuleARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/Default","FixedRate":1}}`,
	} {
		before := e.version(t)
		if r := post("/UpdateSamplingRule", body); r.status != 400 {
			t.Errorf("update %s: %d %s %q, want 400", body, r.status, r.typ, r.msg)
		}
		if after := e.version(t); after != before {
			t.Errorf("update %s changed the rules", body)
		}
	}
	if r := post("/CreateSamplingRule", createBody("Default", "")); r.status != 400 {
		t.Errorf("a second Default: %d %s %q, want 400", r.status, r.typ, r.msg)
	}
}

// TestClaimFlood: a flood of ClientIDs (500 new ones every period) against
// a table of 64 claims: the table stays within its bound, the honest
// clients' claims stay held (each report refreshes its own), and the
// quotas of one period, honest and flood together, never add up to more
// than the reservoir.
func TestClaimFlood(t *testing.T) {
	const (
		maxClients = 64
		reservoir  = 10
		honest     = 4
		flood      = 500
	)
	e := newEnv(t)
	e.replica = newReplica(t, e.st, e.clk, maxClients)
	e.create(t, rule("checkout", reservoir, 0.1))
	ctx := context.Background()
	report := func(id string) float64 {
		got, err := e.core.Report(ctx, xray.Report{ClientID: id, Statistics: []xray.Statistics{{Rule: "checkout", Requests: 100, Sampled: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Targets) != 1 {
			t.Fatalf("no target: %+v", got)
		}
		return got.Targets[0].Quota
	}
	next := 1000
	for period := range 8 {
		e.clk.Add(10 * time.Second)
		var total, honestTotal float64
		for i := range honest {
			honestTotal += report(clientID(i))
		}
		total = honestTotal
		for range flood {
			total += report(clientID(next))
			next++
		}
		if total > reservoir+1e-9 {
			t.Errorf("period %d: quotas add up to %.3f, more than the reservoir %d", period, total, reservoir)
		}
		if n := e.core.claims.len(); n > maxClients {
			t.Errorf("period %d: %d claims held, bound %d", period, n, maxClients)
		}
		for i := range honest {
			if _, ok, _ := e.core.claims.Previous(claimClient(clientID(i)), "checkout", "", e.clk.Now()); !ok {
				t.Errorf("period %d: honest client %d's claim was evicted", period, i)
			}
		}
		t.Logf("period %d: quotas %.3f of %d (honest clients %.3f), %d claims held, %v not kept", period, total, reservoir, honestTotal, e.core.claims.len(), promtest.Value(t, e.reg, "controlplane_xray_claims_full_total"))
	}
}

func claimClient(id string) string { return clientPrefix + id }

func fleetQuery() fleet.Query { return fleet.Query{} }

// TestOutOfScopeEdits: a principal scoped to shop-* edits, through X-Ray,
// only rules whose service glob is within shop-*, before and after the
// edit; the Default rule ("*") is not within it. What it may do is
// audited under its name.
func TestOutOfScopeEdits(t *testing.T) {
	e := newEnv(t)
	billing := rule("billing", 1, 0.1)
	billing.ServiceName = "billing"
	e.create(t, billing)
	shop := rule("cart", 1, 0.1)
	shop.ServiceName = "shop-cart"
	e.create(t, shop)
	team := &auth.Principal{Name: "shop-team", Role: auth.RoleEditor, Kind: auth.KindAccessKey, Services: []string{"shop-*"}}
	post := e.serveHTTP(t, auth.ScopeXRay(e.core, auth.NewLimiter(auth.Limits{}, e.clk.Now, nil)), team)
	arn := func(name string) string { return "arn:aws:xray:us-east-1:000000000000:sampling-rule/" + name }
	for _, c := range []struct{ path, body string }{
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"billing","FixedRate":1}}`},
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleARN":"` + arn("billing") + `","FixedRate":1}}`},
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"cart","ServiceName":"billing"}}`},
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"cart","ServiceName":"*"}}`},
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"cart","ServiceName":"shop*"}}`},
		{"/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"Default","FixedRate":1}}`},
		{"/DeleteSamplingRule", `{"RuleName":"billing"}`},
		{"/CreateSamplingRule", strings.Replace(createBody("mine", ""), `"ServiceName":"shop"`, `"ServiceName":"*"`, 1)},
		{"/TagResource", `{"ResourceARN":"` + arn("billing") + `","Tags":[{"Key":"owner","Value":"shop"}]}`},
		{"/UntagResource", `{"ResourceARN":"` + arn("billing") + `","TagKeys":["owner"]}`},
	} {
		before := e.version(t)
		if r := post(c.path, c.body); r.status != http.StatusForbidden || r.typ != "AccessDeniedException" {
			t.Errorf("%s %s: %d %s %q, want 403 AccessDeniedException", c.path, c.body, r.status, r.typ, r.msg)
		}
		if after := e.version(t); after != before {
			t.Errorf("%s %s changed the rules", c.path, c.body)
		}
	}
	if r := post("/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"cart","FixedRate":0.5,"ServiceName":"shop-cart-eu"}}`); r.status != http.StatusOK {
		t.Errorf("an edit within scope: %d %s %q", r.status, r.typ, r.msg)
	}
	page, err := e.st.RuleEvents(context.Background(), "cart", 1, "")
	if err != nil || len(page.Events) != 1 || page.Events[0].Actor != team.Actor() {
		t.Errorf("audit of the edit within scope: %+v (%v), want actor %s", page.Events, err, team.Actor())
	}
	r := post("/GetSamplingRules", `{}`)
	var names []string
	for _, rec := range r.body["SamplingRuleRecords"].([]any) {
		names = append(names, rec.(map[string]any)["SamplingRule"].(map[string]any)["RuleName"].(string))
	}
	if strings.Join(names, " ") != "cart Default" {
		t.Errorf("rules the scoped principal lists: %q, want cart and Default", names)
	}
}

// TestEditRaces: X-Ray edits (no etags: the core's read-modify-write
// retries) race gRPC-style edits (the etag read, then a conditional
// update, retried on a conflict) and tag calls on one rule. Every edit
// that succeeds is exactly one audit event under its own principal, each
// tag added is kept (no lost update), and the rule's revision counts the
// successes. Concurrent creates and deletes of one name: exactly one wins.
func TestEditRaces(t *testing.T) {
	e := newEnv(t)
	start := e.create(t, rule("checkout", 10, 0.1))
	const workers, edits = 4, 10
	var mu sync.Mutex
	ok := map[string]int{}
	var tagged []string
	succeed := func(actor string, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			ok[actor]++
		case errors.Is(err, store.ErrConflict), errors.Is(err, xray.ErrThrottled):
			// More races than retries: X-Ray's ThrottledException.
		default:
			t.Errorf("%s: %v", actor, err)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range edits {
				_, err := e.core.UpdateRule(as("xray"), xray.RuleUpdate{Name: "checkout", Patch: xray.Rule{Rule: rules.Rule{FixedRate: float64(w*edits+i) / 100}}, Fields: []string{xray.FieldFixedRate}}, "")
				succeed("aws:xray", err)
			}
		})
		wg.Go(func() {
			for i := range edits {
				var err error
				for range edit.UpdateRetries {
					var cur rules.Rule
					if cur, err = e.core.edit.Get(context.Background(), "checkout"); err != nil {
						break
					}
					_, err = e.core.edit.Update(as("grpc"), rules.Rule{Name: "checkout", ReservoirSize: int64(w*edits + i)}, []string{"reservoir_size"}, cur.Revision)
					if !errors.Is(err, store.ErrConflict) {
						break
					}
				}
				succeed("aws:grpc", err)
			}
		})
		wg.Go(func() {
			for i := range edits {
				key := fmt.Sprintf("k%d-%d", w, i)
				err := e.core.TagRule(as("tagger"), "checkout", xray.Tags{key: "v"})
				if err == nil {
					mu.Lock()
					tagged = append(tagged, key)
					mu.Unlock()
				}
				succeed("aws:tagger", err)
			}
		})
	}
	wg.Wait()
	got, err := e.core.edit.Get(context.Background(), "checkout")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range ok {
		total += n
	}
	if got.Revision-start.Revision != int64(total) {
		t.Errorf("revision moved by %d, %d edits succeeded", got.Revision-start.Revision, total)
	}
	for _, k := range tagged {
		if _, kept := got.Tags[k]; !kept {
			t.Errorf("tag %s was added and then lost", k)
		}
	}
	page, err := e.st.RuleEvents(context.Background(), "checkout", 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	for _, ev := range page.Events {
		if ev.Action == store.ActionUpdate {
			audited[ev.Actor]++
		}
	}
	if fmt.Sprint(audited) != fmt.Sprint(ok) {
		t.Errorf("audited updates by actor %v, successes %v", audited, ok)
	}
	t.Logf("successes %v of %d each", ok, workers*edits)

	var wins atomicCount
	for range 8 {
		wg.Go(func() {
			if _, err := e.core.CreateRule(as("racer"), rule("race", 1, 0.1), nil); err == nil {
				wins.add()
			} else if !errors.Is(err, store.ErrAlreadyExists) {
				t.Errorf("create race: %v", err)
			}
		})
	}
	wg.Wait()
	var deletes atomicCount
	for range 8 {
		wg.Go(func() {
			if _, err := e.core.DeleteRule(as("racer"), "race", ""); err == nil {
				deletes.add()
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("delete race: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.n != 1 || deletes.n != 1 {
		t.Errorf("8 concurrent creates: %d won; 8 deletes: %d won; want 1 each", wins.n, deletes.n)
	}
}

type atomicCount struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCount) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }

// TestTagFlood: tags added 50 at a time stop at 50 per rule, however many
// calls add them; the call that would pass it changes nothing.
func TestTagFlood(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	post := e.serveHTTP(t, e.core, editor)
	const arn = "arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout"
	if r := post("/TagResource", `{"ResourceARN":"`+arn+`","Tags":[`+tags(50)+`]}`); r.status != http.StatusOK {
		t.Fatalf("50 tags: %d %s %q", r.status, r.typ, r.msg)
	}
	before := e.version(t)
	if r := post("/TagResource", `{"ResourceARN":"`+arn+`","Tags":[{"Key":"one-more","Value":"v"}]}`); r.status != http.StatusBadRequest || r.typ != "TooManyTagsException" {
		t.Errorf("the 51st tag: %d %s %q, want 400 TooManyTagsException", r.status, r.typ, r.msg)
	}
	if r := post("/TagResource", `{"ResourceARN":"`+arn+`","Tags":[{"Key":"k0","Value":"replaced"}]}`); r.status != http.StatusOK {
		t.Errorf("replacing a tag's value at 50 tags: %d %s %q", r.status, r.typ, r.msg)
	}
	if r := post("/TagResource", `{"ResourceARN":"`+arn+`x","Tags":[{"Key":"k","Value":"v"}]}`); r.status != http.StatusNotFound || r.typ != "ResourceNotFoundException" {
		t.Errorf("tags of no rule: %d %s %q, want 404 ResourceNotFoundException", r.status, r.typ, r.msg)
	}
	if after := e.version(t); after != before+1 {
		t.Errorf("rules version %d → %d, want one edit (the replaced value)", before, after)
	}
}
