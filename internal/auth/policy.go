package auth

import (
	"context"
	"maps"
	"strings"
)

// Permission is what a call needs.
type Permission uint8

// Permissions.
const (
	// Public calls need no credentials: health checks and probes.
	Public Permission = iota + 1
	// Read: rules, budgets, status, alerts, the audit log, the dashboard,
	// metrics, reflection.
	Read
	// EditRules: create, update and delete rules (within the principal's
	// services).
	EditRules
	// EditBudgets: create, update and delete budgets (within the
	// principal's services).
	EditBudgets
	// Sample: the sampling calls of SDKs and samplers (for the principal's
	// services).
	Sample
	// ManageTokens: create, list and revoke tokens.
	ManageTokens
	// Debug: Go's profiles.
	Debug
)

var permissionNames = map[Permission]string{
	Public: "public", Read: "read", EditRules: "edit rules", EditBudgets: "edit budgets",
	Sample: "sample", ManageTokens: "manage tokens", Debug: "debug",
}

func (p Permission) String() string { return permissionNames[p] }

// roleGrants is what each role may do.
var roleGrants = map[Role][]Permission{
	RoleViewer: {Read},
	RoleEditor: {Read, EditRules, EditBudgets},
	RoleSDK:    {Sample},
	RoleAdmin:  {Read, EditRules, EditBudgets, Sample, ManageTokens, Debug},
}

// Grants reports whether role r may do what p needs.
func (r Role) Grants(p Permission) bool {
	if p == Public {
		return true
	}
	for _, g := range roleGrants[r] {
		if g == p {
			return true
		}
	}
	return false
}

// leastRole names the first role that grants p, for refusals.
func leastRole(p Permission) Role {
	for _, r := range []Role{RoleViewer, RoleSDK, RoleEditor, RoleAdmin} {
		if r.Grants(p) {
			return r
		}
	}
	return RoleAdmin
}

// Class is the per-principal limit a call counts against.
type Class uint8

// Classes of calls.
const (
	ClassNone Class = iota
	// ClassEdit calls count against the edit rate.
	ClassEdit
	// ClassCostly calls (SimulateCost) count against the costly-call rate.
	ClassCostly
	// ClassStream calls hold one of the principal's streams while open.
	ClassStream
)

// Rule is the policy of one method or route.
type Rule struct {
	Need  Permission
	Class Class
}

// Full gRPC method names of the token API, which the lead's TokenService
// is expected to use.
const (
	MethodCreateToken = "/controlplane.v1.TokenService/CreateToken"
	MethodGetToken    = "/controlplane.v1.TokenService/GetToken"
	MethodListTokens  = "/controlplane.v1.TokenService/ListTokens"
	MethodRevokeToken = "/controlplane.v1.TokenService/RevokeToken"
)

// grpcPolicy names every gRPC method the control plane serves. A method
// missing here is refused (default deny), and a test fails for every
// registered method without an entry.
var grpcPolicy = map[string]Rule{
	"/controlplane.v1.RuleService/CreateRule":     {EditRules, ClassEdit},
	"/controlplane.v1.RuleService/GetRule":        {Read, ClassNone},
	"/controlplane.v1.RuleService/ListRules":      {Read, ClassNone},
	"/controlplane.v1.RuleService/UpdateRule":     {EditRules, ClassEdit},
	"/controlplane.v1.RuleService/DeleteRule":     {EditRules, ClassEdit},
	"/controlplane.v1.RuleService/ListRuleEvents": {Read, ClassNone},
	"/controlplane.v1.RuleService/BatchEditRules": {EditRules, ClassEdit},

	"/controlplane.v1.SamplingService/GetSamplingRules":   {Sample, ClassNone},
	"/controlplane.v1.SamplingService/GetSamplingTargets": {Sample, ClassNone},
	"/controlplane.v1.SamplingService/StreamSampling":     {Sample, ClassStream},

	"/controlplane.v1.BudgetService/CreateBudget":     {EditBudgets, ClassEdit},
	"/controlplane.v1.BudgetService/GetBudget":        {Read, ClassNone},
	"/controlplane.v1.BudgetService/ListBudgets":      {Read, ClassNone},
	"/controlplane.v1.BudgetService/UpdateBudget":     {EditBudgets, ClassEdit},
	"/controlplane.v1.BudgetService/DeleteBudget":     {EditBudgets, ClassEdit},
	"/controlplane.v1.BudgetService/GetBudgetStatus":  {Read, ClassNone},
	"/controlplane.v1.BudgetService/GetBudgetHistory": {Read, ClassNone},
	"/controlplane.v1.BudgetService/ListAlerts":       {Read, ClassNone},
	"/controlplane.v1.BudgetService/WatchAlerts":      {Read, ClassStream},
	"/controlplane.v1.BudgetService/SimulateCost":     {Read, ClassCostly},

	"/controlplane.v1.StatusService/GetFleetStatus": {Read, ClassNone},
	"/controlplane.v1.StatusService/Explain":        {Read, ClassNone},

	MethodCreateToken: {ManageTokens, ClassEdit},
	MethodGetToken:    {ManageTokens, ClassNone},
	MethodListTokens:  {ManageTokens, ClassNone},
	MethodRevokeToken: {ManageTokens, ClassEdit},

	"/grpc.health.v1.Health/Check": {Public, ClassNone},
	"/grpc.health.v1.Health/Watch": {Public, ClassStream},
	"/grpc.health.v1.Health/List":  {Read, ClassNone},

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {Read, ClassStream},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {Read, ClassStream},

	"/jaeger.api_v2.SamplingManager/GetSamplingStrategy": {Sample, ClassNone},
}

// httpPolicy names every HTTP route by path, on any of the control plane's
// HTTP ports; httpPrefixPolicy the subtrees. Anything else is refused.
var httpPolicy = map[string]Rule{
	"/healthz": {Public, ClassNone},
	"/readyz":  {Public, ClassNone},
	"/metrics": {Read, ClassNone},
	"/ui":      {Read, ClassNone},

	// The X-Ray sampling API.
	"/GetSamplingRules":           {Sample, ClassNone},
	"/SamplingTargets":            {Sample, ClassNone},
	"/SamplingStatisticSummaries": {Read, ClassNone},
	"/ListTagsForResource":        {Read, ClassNone},
	"/CreateSamplingRule":         {EditRules, ClassEdit},
	"/UpdateSamplingRule":         {EditRules, ClassEdit},
	"/DeleteSamplingRule":         {EditRules, ClassEdit},
	"/TagResource":                {EditRules, ClassEdit},
	"/UntagResource":              {EditRules, ClassEdit},

	// Jaeger remote sampling: /sampling?service=NAME, and the agent's
	// older /?service=NAME.
	"/sampling": {Sample, ClassNone},
	"/":         {Sample, ClassNone},
}

var httpPrefixPolicy = map[string]Rule{
	"/ui/":          {Read, ClassNone},
	"/debug/pprof/": {Debug, ClassNone},
}

// xrayRoutes are the HTTP routes of the X-Ray API, where SigV4 is
// accepted and refusals take X-Ray's error shape.
var xrayRoutes = map[string]bool{
	"/GetSamplingRules": true, "/SamplingTargets": true, "/SamplingStatisticSummaries": true,
	"/ListTagsForResource": true, "/CreateSamplingRule": true, "/UpdateSamplingRule": true,
	"/DeleteSamplingRule": true, "/TagResource": true, "/UntagResource": true,
}

// jaegerRoutes take the service from the "service" query parameter.
var jaegerRoutes = map[string]bool{"/sampling": true, "/": true}

// GRPCPolicy returns a copy of the policy of every gRPC method, by full
// method name.
func GRPCPolicy() map[string]Rule { return maps.Clone(grpcPolicy) }

// HTTPPolicy returns a copy of the policy of every HTTP path, and of every
// path prefix (ending in '/').
func HTTPPolicy() (paths, prefixes map[string]Rule) {
	return maps.Clone(httpPolicy), maps.Clone(httpPrefixPolicy)
}

// MethodRule returns the policy of a full gRPC method name.
func MethodRule(method string) (Rule, bool) {
	r, ok := grpcPolicy[method]
	return r, ok
}

// RouteRule returns the policy of an HTTP path: an exact entry, or the
// longest prefix entry.
func RouteRule(path string) (Rule, bool) {
	if r, ok := httpPolicy[path]; ok {
		return r, true
	}
	best, found := "", false
	var rule Rule
	for p, r := range httpPrefixPolicy {
		if strings.HasPrefix(path, p) && len(p) > len(best) {
			best, rule, found = p, r, true
		}
	}
	return rule, found
}

// Authorize decides whether p may make a call with rule r, named call in
// refusals. services are the concrete service names the call acts for (a
// sampler's service) and globs the service globs it edits (a rule's
// service_name before and after, a budget's scope; "" is every service).
// A nil p is an unauthenticated caller.
func Authorize(p *Principal, call string, r Rule, services, globs []string) error {
	if r.Need == Public {
		return nil
	}
	if p == nil {
		return unauthenticated("%s needs credentials: send 'authorization: Bearer <token>' (the CLI's --token or CONTROLPLANE_TOKEN) or a client certificate (%s)", call, docRef)
	}
	if !p.Role.Grants(r.Need) {
		return denied("%s (role %s) may not call %s: it needs the %s role or more (an admin creates one with `controlplane tokens create NAME --role %s`)",
			p.Actor(), p.Role, call, leastRole(r.Need), leastRole(r.Need))
	}
	for _, s := range services {
		if !p.MatchesService(s) {
			return denied("%s is scoped to services %q, not %q: use a token scoped to it", p.Actor(), p.Services, s)
		}
	}
	return checkGlobs(p, globs)
}

// CheckScope checks that the principal in ctx may edit resources for the
// given service globs. The transports' handlers call it with what the
// interceptor cannot see: the globs of the resource as stored (an update
// may move a rule from one service to another; a delete removes it), and
// after the field mask is applied. A call without a principal is refused.
func CheckScope(ctx context.Context, globs ...string) error {
	p := FromContext(ctx)
	if p == nil {
		return unauthenticated("no authenticated principal for this edit (%s)", docRef)
	}
	return checkGlobs(p, globs)
}

func checkGlobs(p *Principal, globs []string) error {
	for _, g := range globs {
		if !p.CoversGlob(g) {
			shown := g
			if shown == "" {
				shown = "* (every service)"
			}
			return denied("%s is scoped to services %q, and service glob %q is not surely within them: narrow the glob (one of the scopes with more characters) or ask an editor without scope", p.Actor(), p.Services, shown)
		}
	}
	return nil
}
