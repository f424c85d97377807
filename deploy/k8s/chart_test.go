// Package k8s tests the Helm chart in deploy/helm/controlplane without a
// cluster: it renders the chart with the helm pinned in tools/go.mod and
// decodes every manifest strictly into the Kubernetes API types. It is a
// module of its own so that k8s.io/api never enters the main module's
// requirements.
package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	root  = "../.."
	chart = "deploy/helm/controlplane" // from root
)

// pendingFlags are flags the chart can set (off by default) that serve does
// not have yet, with the feature that brings them.
var pendingFlags = map[string]string{}

// manifests is one rendering of the chart, decoded.
type manifests struct {
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	secrets         []*corev1.Secret
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors []*monitoringv1.ServiceMonitor
	prometheusRules []*monitoringv1.PrometheusRule
}

// decode adds one manifest, refusing unknown kinds and unknown fields.
func (m *manifests) decode(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		m.deployments, obj = append(m.deployments, o), o
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		m.statefulSets, obj = append(m.statefulSets, o), o
	case "v1/Service":
		o := &corev1.Service{}
		m.services, obj = append(m.services, o), o
	case "v1/ServiceAccount":
		o := &corev1.ServiceAccount{}
		m.serviceAccounts, obj = append(m.serviceAccounts, o), o
	case "v1/Secret":
		o := &corev1.Secret{}
		m.secrets, obj = append(m.secrets, o), o
	case "policy/v1/PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		m.pdbs, obj = append(m.pdbs, o), o
	case "autoscaling/v2/HorizontalPodAutoscaler":
		o := &autoscalingv2.HorizontalPodAutoscaler{}
		m.hpas, obj = append(m.hpas, o), o
	case "monitoring.coreos.com/v1/ServiceMonitor":
		o := &monitoringv1.ServiceMonitor{}
		m.serviceMonitors, obj = append(m.serviceMonitors, o), o
	case "monitoring.coreos.com/v1/PrometheusRule":
		o := &monitoringv1.PrometheusRule{}
		m.prometheusRules, obj = append(m.prometheusRules, o), o
	default:
		return fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

// helm runs the pinned helm from the repository's root.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "-modfile=tools/go.mod", "helm"}, args...)...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// render renders the chart with helm template and these extra arguments, and
// decodes every manifest strictly.
func render(t *testing.T, args ...string) *manifests {
	t.Helper()
	out, err := helm(t, append([]string{"template", "cp", chart, "--namespace", "tracing"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for n := 0; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		if err := m.decode(doc); err != nil {
			t.Fatalf("manifest %d: %v\n%s", n, err, doc)
		}
	}
	return m
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

var valueSets = []struct {
	name string
	args []string
}{
	{"default values", nil},
	{"production values", []string{"-f", chart + "/ci/production-values.yaml"}},
}

// TestChartManifests checks the objects of both renderings against each
// other and against the code: ports, probe paths, flags, selectors.
func TestChartManifests(t *testing.T) {
	flags := serveFlags(t)
	paths := httpPaths(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			m := render(t, vs.args...)
			if len(m.deployments) != 1 {
				t.Fatalf("%d Deployments, want 1", len(m.deployments))
			}
			d := m.deployments[0]
			pod := &d.Spec.Template
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
			}
			c := &pod.Spec.Containers[0]
			if !slices.Equal(c.Args, []string{"serve"}) || len(c.Command) != 0 {
				t.Errorf("container runs %q %q, want only the args [serve] (flags come from the environment)", c.Command, c.Args)
			}

			env := checkEnv(t, c, flags)
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for name, flag := range map[string]string{"grpc": "CONTROLPLANE_GRPC_ADDR", "http": "CONTROLPLANE_HTTP_ADDR"} {
				if want := fmt.Sprintf(":%d", ports[name]); ports[name] == 0 || env[flag] != want {
					t.Errorf("port %s is %d but %s is %q", name, ports[name], flag, env[flag])
				}
			}

			for probeName, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if probe == nil || probe.HTTPGet == nil {
					t.Errorf("no HTTP %s probe", probeName)
					continue
				}
				if !paths[probe.HTTPGet.Path] {
					t.Errorf("%s probe path %s is not served by internal/server (it serves %v)", probeName, probe.HTTPGet.Path, slices.Sorted(maps.Keys(paths)))
				}
				if probe.HTTPGet.Port.String() != "http" {
					t.Errorf("%s probe on port %s, want the http port", probeName, probe.HTTPGet.Port.String())
				}
			}
			if got := c.LivenessProbe.HTTPGet.Path; got != "/healthz" {
				t.Errorf("liveness probe path %s, want /healthz", got)
			}
			if got := c.ReadinessProbe.HTTPGet.Path; got != "/readyz" {
				t.Errorf("readiness probe path %s, want /readyz", got)
			}

			checkSecurity(t, &pod.Spec, c)
			checkReplicas(t, m, d)
			checkSelectors(t, m, d, ports, paths)
			checkRedis(t, m, env)
		})
	}
}

// checkEnv checks every CONTROLPLANE_* variable names a serve flag, once,
// and returns the literal values.
func checkEnv(t *testing.T, c *corev1.Container, flags map[string]bool) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("environment variable %s set twice", e.Name)
		}
		env[e.Name] = e.Value
		flag, ok := flagOf(e.Name)
		if ok && !flags[flag] {
			t.Errorf("%s: serve has no --%s", e.Name, flag)
		}
	}
	return env
}

// flagOf maps CONTROLPLANE_FOO_BAR to foo-bar.
func flagOf(env string) (string, bool) {
	rest, ok := strings.CutPrefix(env, "CONTROLPLANE_")
	return strings.ReplaceAll(strings.ToLower(rest), "_", "-"), ok
}

func checkSecurity(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod does not require a non-root user")
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container's root file system is writable")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container allows privilege escalation")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("pod mounts a service account token it has no use for")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("container resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}
}

// checkReplicas: at least two replicas, spread over nodes, one down at a
// time at most.
func checkReplicas(t *testing.T, m *manifests, d *appsv1.Deployment) {
	t.Helper()
	switch {
	case len(m.hpas) == 1:
		h := m.hpas[0]
		if d.Spec.Replicas != nil {
			t.Error("the Deployment sets replicas while an HPA owns them")
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
			t.Errorf("HPA minReplicas %v, want at least 2", h.Spec.MinReplicas)
		}
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("HPA scales %s %s, want Deployment %s", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, d.Name)
		}
	case len(m.hpas) == 0:
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("replicas %v, want at least 2", d.Spec.Replicas)
		}
	default:
		t.Errorf("%d HPAs", len(m.hpas))
	}
	aa := d.Spec.Template.Spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil {
		t.Fatal("no pod anti-affinity")
	}
	var terms []corev1.PodAffinityTerm
	terms = append(terms, aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
	for _, w := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, w.PodAffinityTerm)
	}
	if len(terms) == 0 {
		t.Error("pod anti-affinity has no term")
	}
	for _, term := range terms {
		if !matches(t, term.LabelSelector, d.Spec.Template.Labels) {
			t.Errorf("anti-affinity term %+v does not select the control plane's pods", term)
		}
	}
	if len(m.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(m.pdbs))
	}
	if !matches(t, m.pdbs[0].Spec.Selector, d.Spec.Template.Labels) {
		t.Error("the PodDisruptionBudget does not select the control plane's pods")
	}
}

// checkSelectors: the Service reaches the pods' named ports (the X-Ray
// Service, which has the xray port alone, is TestChartPendingProtocols'), the
// ServiceMonitor scrapes a path the server serves, the PrometheusRule is
// deploy/prometheus/alerts.yaml.
func checkSelectors(t *testing.T, m *manifests, d *appsv1.Deployment, ports map[string]int32, paths map[string]bool) {
	t.Helper()
	podLabels := d.Spec.Template.Labels
	var svc *corev1.Service
	for _, s := range m.services {
		if len(s.Spec.Ports) == 1 && s.Spec.Ports[0].Name == "xray" {
			if ports["xray"] == 0 {
				t.Errorf("Service %s targets port xray, which the container does not have", s.Name)
			}
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
			if svc != nil {
				t.Errorf("Services %s and %s both select the control plane", svc.Name, s.Name)
			}
			svc = s
		}
	}
	if svc == nil {
		t.Fatal("no Service selects the control plane's pods")
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
		if ports[p.TargetPort.String()] == 0 {
			t.Errorf("Service port %s targets %s, which the container does not have", p.Name, p.TargetPort.String())
		}
	}
	for _, want := range []string{"grpc", "http"} {
		if !svcPorts[want] {
			t.Errorf("Service %s has no %s port", svc.Name, want)
		}
	}
	for _, sm := range m.serviceMonitors {
		if !matches(t, &sm.Spec.Selector, svc.Labels) {
			t.Errorf("ServiceMonitor %s does not select Service %s", sm.Name, svc.Name)
		}
		for _, other := range m.services {
			if other != svc && matches(t, &sm.Spec.Selector, other.Labels) {
				t.Errorf("ServiceMonitor %s also selects Service %s", sm.Name, other.Name)
			}
		}
		for _, ep := range sm.Spec.Endpoints {
			if !svcPorts[ep.Port] {
				t.Errorf("ServiceMonitor %s scrapes port %q, which Service %s does not have", sm.Name, ep.Port, svc.Name)
			}
			if !paths[ep.Path] {
				t.Errorf("ServiceMonitor %s scrapes %s, which internal/server does not serve", sm.Name, ep.Path)
			}
		}
	}
	for _, pr := range m.prometheusRules {
		var file monitoringv1.PrometheusRuleSpec
		b, err := os.ReadFile(filepath.Join(root, "deploy/prometheus/alerts.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, &file); err != nil {
			t.Fatalf("deploy/prometheus/alerts.yaml: %v", err)
		}
		if len(file.Groups) == 0 {
			t.Fatal("deploy/prometheus/alerts.yaml has no groups")
		}
		if diff := cmp.Diff(file, pr.Spec); diff != "" {
			t.Errorf("PrometheusRule %s differs from deploy/prometheus/alerts.yaml (-file +rule):\n%s", pr.Name, diff)
		}
	}
}

// checkRedis: the control plane's Redis URL comes from a Secret or names the
// in-chart Redis, which persists and never evicts.
func checkRedis(t *testing.T, m *manifests, env map[string]string) {
	t.Helper()
	c := &m.deployments[0].Spec.Template.Spec.Containers[0]
	var url *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "CONTROLPLANE_REDIS_URL" {
			url = &c.Env[i]
		}
	}
	if url == nil {
		t.Fatal("CONTROLPLANE_REDIS_URL is not set: replicas would not share a store")
	}
	switch len(m.statefulSets) {
	case 0:
		if url.ValueFrom == nil || url.ValueFrom.SecretKeyRef == nil {
			t.Errorf("external Redis URL not from a Secret: %+v", url)
		}
	case 1:
		ss := m.statefulSets[0]
		args := strings.Join(ss.Spec.Template.Spec.Containers[0].Args, " ")
		for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
			if !strings.Contains(args, want) {
				t.Errorf("in-chart Redis runs %q, without %q", args, want)
			}
		}
		var svc *corev1.Service
		for _, s := range m.services {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(ss.Spec.Template.Labels)) {
				svc = s
			}
		}
		if svc == nil {
			t.Fatal("no Service selects the in-chart Redis")
		}
		if want := fmt.Sprintf("redis://%s:%d/0", svc.Name, svc.Spec.Ports[0].Port); env["CONTROLPLANE_REDIS_URL"] != want {
			t.Errorf("CONTROLPLANE_REDIS_URL %q, want %q", env["CONTROLPLANE_REDIS_URL"], want)
		}
	default:
		t.Errorf("%d StatefulSets", len(m.statefulSets))
	}
}

func matches(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %+v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

// TestChartSetsEveryFlag: each serve flag is either set through config (by
// its name) or by one of the chart's own sections, which refuse it in
// config.
func TestChartSetsEveryFlag(t *testing.T) {
	flags := serveFlags(t)
	set := map[string]bool{}
	for _, vs := range valueSets {
		for _, e := range render(t, vs.args...).deployments[0].Spec.Template.Spec.Containers[0].Env {
			if f, ok := flagOf(e.Name); ok {
				set[f] = true
			}
		}
	}
	var viaConfig []string
	for _, flag := range slices.Sorted(maps.Keys(flags)) {
		_, err := helm(t, "template", "cp", chart, "--set-string", "config."+flag+"=x")
		switch {
		case err == nil:
			viaConfig = append(viaConfig, flag)
		case strings.Contains(err.Error(), "the chart sets --"+flag):
			if !set[flag] {
				t.Errorf("--%s: config refuses it, but neither the default nor the production values set it", flag)
			}
		default:
			t.Errorf("--%s: %v", flag, err)
		}
	}
	// All of config's flags at once: each becomes its variable.
	args := []string{}
	for _, f := range viaConfig {
		args = append(args, "--set-string", "config."+f+"=v-"+f)
	}
	got := map[string]string{}
	for _, e := range render(t, args...).deployments[0].Spec.Template.Spec.Containers[0].Env {
		if f, ok := flagOf(e.Name); ok && slices.Contains(viaConfig, f) {
			got[f] = e.Value
		}
	}
	for _, f := range viaConfig {
		if got[f] != "v-"+f {
			t.Errorf("config.%s=v-%s: variable is %q", f, f, got[f])
		}
	}
}

// TestChartPendingProtocols: a flag the chart sets that serve does not
// have yet is listed as pending until serve has it. The X-Ray and Jaeger
// ports are on by default, and turned off in serve too when the chart
// turns them off (serve listens on :2000 and :5778 unless told otherwise);
// the X-Ray Service keeps each client on one replica (client-IP affinity).
func TestChartPendingProtocols(t *testing.T) {
	flags := serveFlags(t)
	for flag, feature := range pendingFlags {
		if flags[flag] {
			t.Errorf("serve now has --%s: remove it from pendingFlags and say in values.yaml that %s works", flag, feature)
		}
	}
	for _, name := range []string{"xray", "jaeger"} {
		v := "CONTROLPLANE_" + strings.ToUpper(name) + "_ADDR"
		off := render(t, "--set", name+".enabled=false")
		c := off.deployments[0].Spec.Template.Spec.Containers[0]
		found := false
		for _, e := range c.Env {
			if e.Name == v {
				found = true
				if e.Value != "" {
					t.Errorf("%s.enabled=false sets %s=%q, want empty", name, v, e.Value)
				}
			}
		}
		if !found {
			t.Errorf("%s.enabled=false does not set %s: serve would listen on its default port", name, v)
		}
		for _, p := range c.Ports {
			if p.Name == name {
				t.Errorf("%s.enabled=false: port %s is on", name, name)
			}
		}
		for _, s := range off.services {
			for _, p := range s.Spec.Ports {
				if p.Name == name {
					t.Errorf("%s.enabled=false: Service %s has port %s", name, s.Name, name)
				}
			}
		}
	}
	m := render(t)
	c := &m.deployments[0].Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, want := range map[string]int32{"xray": 2000, "jaeger": 5778} {
		if ports[name] != want {
			t.Errorf("port %s is %d, want %d", name, ports[name], want)
		}
		v := "CONTROLPLANE_" + strings.ToUpper(name) + "_ADDR"
		if env[v] != ":"+strconv.Itoa(int(want)) {
			t.Errorf("%s=%q, want :%d", v, env[v], want)
		}
		if f, _ := flagOf(v); pendingFlags[f] == "" && !flags[f] {
			t.Errorf("%s names neither a serve flag nor a pending one", v)
		}
	}
	var xraySvc *corev1.Service
	for _, s := range m.services {
		for _, p := range s.Spec.Ports {
			if p.Name == "xray" {
				xraySvc = s
			}
		}
	}
	switch {
	case xraySvc == nil:
		t.Error("no Service has the xray port")
	case xraySvc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP || len(xraySvc.Spec.Ports) != 1:
		t.Errorf("Service %s: affinity %q, %d ports; want ClientIP and the xray port alone", xraySvc.Name, xraySvc.Spec.SessionAffinity, len(xraySvc.Spec.Ports))
	}
}

// TestChartRefusesBadValues: contradictory values fail at render time with
// a message that names the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"two Redis", []string{"--set", "redis.external.url=redis://r:6379/0"}, "redis.internal.enabled=false"},
		{"no Redis", []string{"--set", "redis.internal.enabled=false"}, "replicas share their state"},
		{"url and secret", []string{"--set", "redis.internal.enabled=false,redis.external.url=redis://r,redis.external.existingSecret=s"}, "not both"},
		{"client CA without TLS", []string{"--set", "tls.clientCA.secretName=ca"}, "tls.clientCA needs tls.secretName"},
		{"redis-url in config", []string{"--set", "config.redis-url=redis://r"}, "config.redis-url"},
		{"unknown anti-affinity", []string{"--set", "podAntiAffinity=strong"}, "podAntiAffinity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helm(t, append([]string{"template", "cp", chart}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// serveFlags finds the flag names that serve defines.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	// serve.go and the files of its parts (serve_access.go…).
	files, err := filepath.Glob(filepath.Join(root, "internal/cli/serve*.go"))
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`fs\.\w+Var\(&\w+\.\w+, "([a-z-]+)"`).FindAllStringSubmatch(string(b), -1) {
			flags[m[1]] = true
		}
	}
	if len(flags) == 0 {
		t.Fatal("found no serve flags")
	}
	return flags
}

// httpPaths finds the paths internal/server's HTTP handler serves.
func httpPaths(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "internal/server/http.go"))
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	// The route table of httpRoutes: {"GET /healthz", …}.
	for _, m := range regexp.MustCompile(`\{"(?:[A-Z]+ )?(/[^"]*)",`).FindAllStringSubmatch(string(b), -1) {
		paths[m[1]] = true
	}
	if len(paths) == 0 {
		t.Fatal("found no HTTP paths")
	}
	return paths
}

// TestChartAuthSecrets: auth.adminTokenSecret and auth.secretsKeySecret
// mount their Secrets whole (no subPath, so a rotation reaches the pods)
// where --admin-token-file and --secrets-key-file point, readable by the
// pod's group; without them neither flag is set (protected mode).
func TestChartAuthSecrets(t *testing.T) {
	m := render(t, "--set", "auth.adminTokenSecret=cp-admin,auth.adminTokenKey=tok,auth.secretsKeySecret=cp-keys")
	pod := &m.deployments[0].Spec.Template.Spec
	c := &pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for variable, secret := range map[string]string{"CONTROLPLANE_ADMIN_TOKEN_FILE": "cp-admin", "CONTROLPLANE_SECRETS_KEY_FILE": "cp-keys"} {
		file := env[variable]
		var found bool
		for _, vm := range c.VolumeMounts {
			if !strings.HasPrefix(file, vm.MountPath+"/") {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.Secret != nil && v.Secret.SecretName == secret {
					found = true
					if vm.SubPath != "" || !vm.ReadOnly {
						t.Errorf("%s: mounted with subPath %q, read-only %v", variable, vm.SubPath, vm.ReadOnly)
					}
					if mode := v.Secret.DefaultMode; mode == nil || *mode&0o004 != 0 || *mode&0o040 == 0 {
						t.Errorf("%s: Secret mode %v, want readable by the group only", variable, mode)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s=%q lies in no mount of Secret %s", variable, file, secret)
		}
	}
	if !strings.HasSuffix(env["CONTROLPLANE_ADMIN_TOKEN_FILE"], "/tok") {
		t.Errorf("CONTROLPLANE_ADMIN_TOKEN_FILE=%q, want the key tok", env["CONTROLPLANE_ADMIN_TOKEN_FILE"])
	}
	for _, e := range render(t).deployments[0].Spec.Template.Spec.Containers[0].Env {
		if e.Name == "CONTROLPLANE_ADMIN_TOKEN_FILE" || e.Name == "CONTROLPLANE_SECRETS_KEY_FILE" {
			t.Errorf("the default values set %s", e.Name)
		}
	}
	if _, err := helm(t, "template", "cp", chart, "--set", "config.admin-token-file=/x"); err == nil || !strings.Contains(err.Error(), "auth.adminTokenSecret") {
		t.Errorf("config.admin-token-file: %v, want a refusal naming auth.adminTokenSecret", err)
	}
}
