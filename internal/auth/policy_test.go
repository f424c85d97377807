package auth_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	_ "google.golang.org/grpc/health/grpc_health_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/tracesampling/controlplane/gen/controlplane/v1"
	_ "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/internal/auth"
)

// allowed is the policy as the issue states it, written out by hand so the
// matrix checks the table in policy.go rather than itself: who may call
// each method or route. "public" is anyone, credentials or not.
var allowed = map[string]string{
	"/controlplane.v1.RuleService/CreateRule":     "editor admin",
	"/controlplane.v1.RuleService/GetRule":        "viewer editor admin",
	"/controlplane.v1.RuleService/ListRules":      "viewer editor admin",
	"/controlplane.v1.RuleService/UpdateRule":     "editor admin",
	"/controlplane.v1.RuleService/DeleteRule":     "editor admin",
	"/controlplane.v1.RuleService/ListRuleEvents": "viewer editor admin",
	"/controlplane.v1.RuleService/BatchEditRules": "editor admin",

	"/controlplane.v1.SamplingService/GetSamplingRules":   "viewer editor sdk admin",
	"/controlplane.v1.SamplingService/GetSamplingTargets": "sdk admin",
	"/controlplane.v1.SamplingService/StreamSampling":     "sdk admin",

	"/controlplane.v1.BudgetService/CreateBudget":     "editor admin",
	"/controlplane.v1.BudgetService/GetBudget":        "viewer editor admin",
	"/controlplane.v1.BudgetService/ListBudgets":      "viewer editor admin",
	"/controlplane.v1.BudgetService/UpdateBudget":     "editor admin",
	"/controlplane.v1.BudgetService/DeleteBudget":     "editor admin",
	"/controlplane.v1.BudgetService/GetBudgetStatus":  "viewer editor admin",
	"/controlplane.v1.BudgetService/GetBudgetHistory": "viewer editor admin",
	"/controlplane.v1.BudgetService/ListAlerts":       "viewer editor admin",
	"/controlplane.v1.BudgetService/WatchAlerts":      "viewer editor admin",
	"/controlplane.v1.BudgetService/SimulateCost":     "viewer editor admin",

	"/controlplane.v1.StatusService/GetFleetStatus": "viewer editor admin",
	"/controlplane.v1.StatusService/Explain":        "viewer editor admin",

	"/controlplane.v1.TokenService/CreateToken": "admin",
	"/controlplane.v1.TokenService/GetToken":    "admin",
	"/controlplane.v1.TokenService/ListTokens":  "admin",
	"/controlplane.v1.TokenService/RevokeToken": "admin",

	"/grpc.health.v1.Health/Check": "public",
	"/grpc.health.v1.Health/Watch": "public",
	"/grpc.health.v1.Health/List":  "viewer editor admin",

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      "viewer editor admin",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "viewer editor admin",

	"/jaeger.api_v2.SamplingManager/GetSamplingStrategy": "sdk admin",
}

// allowedRoutes is the same for HTTP paths.
var allowedRoutes = map[string]string{
	"/healthz":      "public",
	"/readyz":       "public",
	"/metrics":      "viewer editor admin",
	"/ui":           "viewer editor admin",
	"/ui/":          "viewer editor admin",
	"/ui/budgets/x": "viewer editor admin",

	"/GetSamplingRules":           "viewer editor sdk admin",
	"/SamplingTargets":            "sdk admin",
	"/SamplingStatisticSummaries": "viewer editor admin",
	"/ListTagsForResource":        "viewer editor admin",
	"/CreateSamplingRule":         "editor admin",
	"/UpdateSamplingRule":         "editor admin",
	"/DeleteSamplingRule":         "editor admin",
	"/TagResource":                "editor admin",
	"/UntagResource":              "editor admin",

	"/sampling": "sdk admin",
	"/":         "sdk admin",

	"/debug/pprof/":     "admin",
	"/debug/pprof/heap": "admin",

	"/nothing-here":    "",
	"/healthz/x":       "",
	"/metrics/":        "",
	"/debug/pprofiles": "",
	"/uix":             "",
}

// servedPackages are the protobuf packages whose every service serve
// registers: the API's, Jaeger's remote sampling, health and reflection.
var servedPackages = []protoreflect.FullName{
	"controlplane.v1", "jaeger.api_v2", "grpc.health.v1", "grpc.reflection.v1", "grpc.reflection.v1alpha",
}

// registeredMethods returns every method of every service of
// servedPackages, read from the service descriptors the generated code
// registers, so that a service or method added to a proto is checked
// without a change here.
func registeredMethods(t *testing.T) []string {
	t.Helper()
	var ms []string
	for _, pkg := range servedPackages {
		protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
			for i := range fd.Services().Len() {
				sd := fd.Services().Get(i)
				for j := range sd.Methods().Len() {
					ms = append(ms, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
				}
			}
			return true
		})
	}
	return ms
}

// TestEveryMethodHasAPolicy fails for a registered method without a policy
// (it would be refused; the test says so before a user does) and for a
// policy entry of no method (a typo that leaves the real method refused).
func TestEveryMethodHasAPolicy(t *testing.T) {
	registered := registeredMethods(t)
	if len(registered) < 24 {
		t.Fatalf("only %d methods registered: %q", len(registered), registered)
	}
	for _, m := range registered {
		if _, ok := auth.MethodRule(m); !ok {
			t.Errorf("method %s is served but has no access policy", m)
		}
		if _, ok := allowed[m]; !ok {
			t.Errorf("method %s is served but the matrix does not list it", m)
		}
	}
	for m := range auth.GRPCPolicy() {
		if !slices.Contains(registered, m) {
			t.Errorf("policy names %s, which no service serves", m)
		}
	}
	if _, ok := auth.MethodRule("/controlplane.v1.RuleService/NewMethod"); ok {
		t.Error("an unknown method has a policy")
	}
}

// principalKind is one column of the matrix.
type principalKind struct {
	name  string
	creds func(e *env, t *testing.T) auth.Credentials
	// role is the role of a valid credential, or "" for one that is not
	// (none, wrong, expired, revoked).
	role string
	// outOfScope: a valid credential scoped to other services.
	outOfScope bool
}

func matrixColumns() []principalKind {
	tok := func(role auth.Role, services ...string) func(e *env, t *testing.T) auth.Credentials {
		return func(e *env, t *testing.T) auth.Credentials {
			iss := e.issue(t, auth.TokenSpec{Name: string(role) + strings.ReplaceAll(strings.Join(services, "_"), "*", ""), Role: role, Services: services})
			return bearer(iss.Secret)
		}
	}
	cols := []principalKind{
		{name: "no credentials", creds: func(*env, *testing.T) auth.Credentials { return auth.Credentials{Peer: remote} }},
		{name: "wrong token", creds: func(*env, *testing.T) auth.Credentials { return bearer(auth.NewTokenSecret()) }},
		{name: "malformed token", creds: func(*env, *testing.T) auth.Credentials { return bearer("tsc_nope") }},
		{name: "expired token", creds: func(e *env, t *testing.T) auth.Credentials {
			iss := e.issue(t, auth.TokenSpec{Name: "expired", Role: auth.RoleAdmin, TTL: time.Hour})
			e.clk.Add(time.Hour)
			return bearer(iss.Secret)
		}},
		{name: "revoked token", creds: func(e *env, t *testing.T) auth.Credentials {
			iss := e.issue(t, auth.TokenSpec{Name: "revoked", Role: auth.RoleAdmin})
			if _, err := e.store.RevokeToken(t.Context(), "revoked", "root"); err != nil {
				t.Fatal(err)
			}
			return bearer(iss.Secret)
		}},
		{name: "static admin", role: "admin", creds: func(*env, *testing.T) auth.Credentials { return bearer(adminSecret) }},
	}
	for _, r := range auth.Roles {
		cols = append(cols,
			principalKind{name: string(r), role: string(r), creds: tok(r)},
			principalKind{name: string(r) + " scoped in", role: string(r), creds: tok(r, "shop-*")},
			principalKind{name: string(r) + " scoped out", role: string(r), creds: tok(r, "payments-*"), outOfScope: true},
		)
	}
	return cols
}

// callOf describes a call as a transport would: a sampling call names the
// service shop-cart, an edit the glob shop-cart-*.
func callOf(name string, rule auth.Rule) auth.Call {
	c := auth.Call{Name: name, Rule: rule}
	switch rule.Need {
	case auth.Sample:
		c.Services = []string{"shop-cart"}
	case auth.EditRules, auth.EditBudgets:
		c.Globs = []string{"shop-cart-*"}
	}
	return c
}

// TestAuthorizationMatrix crosses every method and route with every kind of
// principal and checks the outcome against the hand-written policy.
func TestAuthorizationMatrix(t *testing.T) {
	type target struct {
		name string
		rule auth.Rule
		ok   bool
	}
	var targets []target
	for _, m := range registeredMethods(t) {
		r, ok := auth.MethodRule(m)
		targets = append(targets, target{m, r, ok})
	}
	for path := range allowedRoutes {
		r, ok := auth.RouteRule(path)
		targets = append(targets, target{"HTTP " + path, r, ok})
	}
	want := func(name string) string {
		if p, ok := strings.CutPrefix(name, "HTTP "); ok {
			return allowedRoutes[p]
		}
		return allowed[name]
	}
	for _, col := range matrixColumns() {
		t.Run(col.name, func(t *testing.T) {
			e := newEnv(t, auth.Options{Limits: auth.Limits{EditBurst: 1000, CostlyBurst: 1000}})
			creds := col.creds(e, t)
			for _, tg := range targets {
				policy := want(tg.name)
				if policy == "" {
					if tg.ok {
						t.Errorf("%s has a policy; it should be refused by default", tg.name)
					}
					continue
				}
				if !tg.ok {
					t.Errorf("%s has no policy", tg.name)
					continue
				}
				_, err := e.guard.Check(t.Context(), creds, callOf(tg.name, tg.rule))
				var wantErr error
				switch {
				case policy == "public":
				case col.role == "":
					wantErr = auth.ErrUnauthenticated
				case !slices.Contains(strings.Fields(policy), col.role):
					wantErr = auth.ErrPermissionDenied
				case col.outOfScope && (tg.rule.Need == auth.Sample || tg.rule.Need == auth.EditRules || tg.rule.Need == auth.EditBudgets):
					wantErr = auth.ErrPermissionDenied
				}
				if wantErr == nil && err != nil || wantErr != nil && !errors.Is(err, wantErr) {
					t.Errorf("%s: error %v, want %v", tg.name, err, wantErr)
				}
			}
		})
	}
}
