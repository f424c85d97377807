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
	Need Permission
	// Or, if set, is a second permission that also allows the call: the
	// rule reads of the sampling APIs need Sample or Read, so that a
	// viewer's or editor's key runs `aws xray get-sampling-rules` as an
	// SDK's does.
	Or    Permission
	Class Class
}

// grants reports whether role r may make a call with this rule.
func (rule Rule) grants(r Role) bool {
	return r.Grants(rule.Need) || rule.Or != 0 && r.Grants(rule.Or)
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
	"/controlplane.v1.RuleService/CreateRule":     {Need: EditRules, Class: ClassEdit},
	"/controlplane.v1.RuleService/GetRule":        {Need: Read, Class: ClassNone},
	"/controlplane.v1.RuleService/ListRules":      {Need: Read, Class: ClassNone},
	"/controlplane.v1.RuleService/UpdateRule":     {Need: EditRules, Class: ClassEdit},
	"/controlplane.v1.RuleService/DeleteRule":     {Need: EditRules, Class: ClassEdit},
	"/controlplane.v1.RuleService/ListRuleEvents": {Need: Read, Class: ClassNone},
	"/controlplane.v1.RuleService/BatchEditRules": {Need: EditRules, Class: ClassEdit},

	"/controlplane.v1.SamplingService/GetSamplingRules":   {Need: Sample, Or: Read, Class: ClassNone},
	"/controlplane.v1.SamplingService/GetSamplingTargets": {Need: Sample, Class: ClassNone},
	"/controlplane.v1.SamplingService/StreamSampling":     {Need: Sample, Class: ClassStream},

	"/controlplane.v1.BudgetService/CreateBudget":     {Need: EditBudgets, Class: ClassEdit},
	"/controlplane.v1.BudgetService/GetBudget":        {Need: Read, Class: ClassNone},
	"/controlplane.v1.BudgetService/ListBudgets":      {Need: Read, Class: ClassNone},
	"/controlplane.v1.BudgetService/UpdateBudget":     {Need: EditBudgets, Class: ClassEdit},
	"/controlplane.v1.BudgetService/DeleteBudget":     {Need: EditBudgets, Class: ClassEdit},
	"/controlplane.v1.BudgetService/GetBudgetStatus":  {Need: Read, Class: ClassNone},
	"/controlplane.v1.BudgetService/GetBudgetHistory": {Need: Read, Class: ClassNone},
	"/controlplane.v1.BudgetService/ListAlerts":       {Need: Read, Class: ClassNone},
	"/controlplane.v1.BudgetService/WatchAlerts":      {Need: Read, Class: ClassStream},
	"/controlplane.v1.BudgetService/SimulateCost":     {Need: Read, Class: ClassCostly},

	"/controlplane.v1.StatusService/GetFleetStatus": {Need: Read, Class: ClassNone},
	"/controlplane.v1.StatusService/Explain":        {Need: Read, Class: ClassNone},

	MethodCreateToken: {Need: ManageTokens, Class: ClassEdit},
	MethodGetToken:    {Need: ManageTokens, Class: ClassNone},
	MethodListTokens:  {Need: ManageTokens, Class: ClassNone},
	MethodRevokeToken: {Need: ManageTokens, Class: ClassEdit},

	"/grpc.health.v1.Health/Check": {Need: Public, Class: ClassNone},
	"/grpc.health.v1.Health/Watch": {Need: Public, Class: ClassStream},
	"/grpc.health.v1.Health/List":  {Need: Read, Class: ClassNone},

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {Need: Read, Class: ClassStream},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {Need: Read, Class: ClassStream},

	"/jaeger.api_v2.SamplingManager/GetSamplingStrategy": {Need: Sample, Class: ClassNone},
}

// httpPolicy names every HTTP route by path, on any of the control plane's
// HTTP ports; httpPrefixPolicy the subtrees. Anything else is refused.
var httpPolicy = map[string]Rule{
	"/healthz": {Need: Public, Class: ClassNone},
	"/readyz":  {Need: Public, Class: ClassNone},
	"/metrics": {Need: Read, Class: ClassNone},
	"/ui":      {Need: Read, Class: ClassNone},

	// The X-Ray sampling API.
	"/GetSamplingRules":           {Need: Sample, Or: Read, Class: ClassNone},
	"/SamplingTargets":            {Need: Sample, Class: ClassNone},
	"/SamplingStatisticSummaries": {Need: Read, Class: ClassNone},
	"/ListTagsForResource":        {Need: Read, Class: ClassNone},
	"/CreateSamplingRule":         {Need: EditRules, Class: ClassEdit},
	"/UpdateSamplingRule":         {Need: EditRules, Class: ClassEdit},
	"/DeleteSamplingRule":         {Need: EditRules, Class: ClassEdit},
	"/TagResource":                {Need: EditRules, Class: ClassEdit},
	"/UntagResource":              {Need: EditRules, Class: ClassEdit},

	// Jaeger remote sampling: /sampling?service=NAME, and the agent's
	// older /?service=NAME.
	"/sampling": {Need: Sample, Class: ClassNone},
	"/":         {Need: Sample, Class: ClassNone},
}

var httpPrefixPolicy = map[string]Rule{
	"/ui/":          {Need: Read, Class: ClassNone},
	"/debug/pprof/": {Need: Debug, Class: ClassNone},
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
	if !r.grants(p.Role) {
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
