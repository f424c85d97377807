package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestSeesGlob(t *testing.T) {
	p := &auth.Principal{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}, Kind: auth.KindToken}
	for glob, want := range map[string]bool{
		"*": true, "": true, "shop-cart": true, "shop-*-eu": true, "shop-*": true,
		"payments": false, "*-eu": false, "shop": false,
	} {
		if got := p.SeesGlob(glob); got != want {
			t.Errorf("SeesGlob(%q) = %v, want %v", glob, got, want)
		}
	}
	cart := &auth.Principal{Name: "cart-sdk", Role: auth.RoleSDK, Services: []string{"shop-cart"}, Kind: auth.KindToken}
	if !cart.SeesGlob("shop-*") {
		t.Error("a principal scoped to shop-cart does not see a rule for shop-*")
	}
	if !(*auth.Principal)(nil).SeesGlob("payments") || !(&auth.Principal{Role: auth.RoleSDK}).SeesGlob("payments") {
		t.Error("an unscoped principal does not see every rule")
	}
}

// TestScopeXRay runs the X-Ray API as serve is to (the guard's middleware,
// the handler with the guard as verifier, the core scoped) for an SDK
// token scoped to shop-*.
func TestScopeXRay(t *testing.T) {
	e := newEnv(t, auth.Options{Limits: auth.Limits{ClientIDsPerPrincipal: 1}})
	core, err := xraytest.New(e.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = core.Close() })
	for _, r := range []rules.Rule{
		{Name: "shop", Priority: 1, FixedRate: 0.1, ServiceName: "shop-cart"},
		{Name: "pay", Priority: 2, FixedRate: 0.1, ServiceName: "payments"},
	} {
		if _, err := core.CreateRule(t.Context(), xray.Rule{Rule: r.Normalize()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := xray.NewHandler(auth.ScopeXRay(core, e.guard.Limiter()), xray.Options{Verifier: e.guard, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := e.guard.Middleware(h)
	sdk := e.issue(t, auth.TokenSpec{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}})
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+sdk.Secret)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Body)
		}
		return rec.Code, out
	}

	code, out := post("/GetSamplingRules", `{}`)
	var names []string
	for _, rec := range out["SamplingRuleRecords"].([]any) {
		names = append(names, rec.(map[string]any)["SamplingRule"].(map[string]any)["RuleName"].(string))
	}
	slices.Sort(names)
	if code != http.StatusOK || !slices.Equal(names, []string{"Default", "shop"}) {
		t.Errorf("GetSamplingRules: %d, rules %q; want Default and shop, not pay", code, names)
	}

	const a, b = "0123456789abcdef01234567", "0123456789abcdef0123456b"
	doc := func(client, rule string) string {
		return `{"ClientID": "` + client + `", "RuleName": "` + rule + `", "RequestCount": 10, "SampledCount": 1, "BorrowCount": 0, "Timestamp": 1735787046}`
	}
	code, out = post("/SamplingTargets", `{"SamplingStatisticsDocuments": [`+doc(a, "shop")+`, `+doc(a, "pay")+`]}`)
	var targets, rejected []string
	for _, d := range out["SamplingTargetDocuments"].([]any) {
		targets = append(targets, d.(map[string]any)["RuleName"].(string))
	}
	for _, d := range out["UnprocessedStatistics"].([]any) {
		m := d.(map[string]any)
		rejected = append(rejected, m["RuleName"].(string)+" "+strings.SplitN(m["Message"].(string), ":", 2)[0])
	}
	if diff := cmp.Diff([]string{"shop"}, targets); code != http.StatusOK || diff != "" {
		t.Errorf("SamplingTargets: %d, targets (-want +got):\n%s", code, diff)
	}
	if diff := cmp.Diff([]string{"pay " + auth.OutOfScope}, rejected); diff != "" {
		t.Errorf("SamplingTargets: rejected (-want +got):\n%s", diff)
	}

	// The token may report as one client ID (Limits above); a second is
	// throttled, in X-Ray's shape.
	code, out = post("/SamplingTargets", `{"SamplingStatisticsDocuments": [`+doc(b, "shop")+`]}`)
	if code != http.StatusTooManyRequests || out["__type"] != "ThrottledException" {
		t.Errorf("a second client ID: %d %v, want 429 ThrottledException", code, out)
	}
}
