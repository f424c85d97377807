// Package deploy holds deployment files; its test keeps them valid, since no
// Docker engine or Prometheus runs where the tests do.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/testpki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// composeFile is the part of compose.yaml the tests read; decoding refuses
// any other field, so a misspelt key fails here rather than being ignored
// by docker compose.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string                               `yaml:"image"`
	Build       struct{ Context, Dockerfile string } `yaml:"build"`
	Restart     string                               `yaml:"restart"`
	Command     []string                             `yaml:"command"`
	Environment map[string]string                    `yaml:"environment"`
	Volumes     []string                             `yaml:"volumes"`
	Ports       []string                             `yaml:"ports"`
	Healthcheck struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func TestComposeFile(t *testing.T) {
	var compose composeFile
	readYAMLStrict(t, "compose.yaml", &compose)
	if len(compose.Services) < 3 {
		t.Fatalf("compose has %d services, want redis and two replicas", len(compose.Services))
	}
	flags := serveFlags(t)
	paths := httpPaths(t)
	replicas := 0
	for name, svc := range compose.Services {
		if svc.Restart == "" {
			t.Errorf("service %s has no restart policy", name)
		}
		if len(svc.Healthcheck.Test) < 2 || svc.Healthcheck.Test[0] != "CMD" {
			t.Errorf("service %s: health check %q, want [CMD …]", name, svc.Healthcheck.Test)
		}
		if svc.Build.Dockerfile != "" {
			replicas++
			if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
				t.Errorf("service %s builds from a missing Dockerfile: %v", name, err)
			}
			// The image's own checker, on a path the server serves.
			want := []string{"CMD", "/healthcheck", "http://127.0.0.1:7071/readyz"}
			if !slices.Equal(svc.Healthcheck.Test, want) {
				t.Errorf("service %s: health check %q, want %q", name, svc.Healthcheck.Test, want)
			}
			if !paths["/readyz"] {
				t.Error("internal/server no longer serves /readyz, which the health check asks")
			}
		}
		for k := range svc.Environment {
			if !strings.HasPrefix(k, "CONTROLPLANE_") {
				continue
			}
			flag := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "CONTROLPLANE_")), "_", "-")
			if !flags[flag] {
				t.Errorf("service %s sets %s, but serve has no --%s", name, k, flag)
			}
		}
		for dep, d := range svc.DependsOn {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
			if d.Condition == "service_healthy" && len(compose.Services[dep].Healthcheck.Test) == 0 {
				t.Errorf("service %s waits for %s to be healthy, which has no health check", name, dep)
			}
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			} else if _, ok := compose.Volumes[src]; !ok {
				t.Errorf("service %s mounts volume %s, which is not declared", name, src)
			}
		}
	}
	if replicas < 2 {
		t.Errorf("%d control plane replicas in compose, want 2", replicas)
	}
}

// TestComposeMonitoring checks that Prometheus scrapes every replica and
// loads the alerts, and that Grafana gets the Prometheus data source and
// the dashboard, at the paths compose mounts them.
func TestComposeMonitoring(t *testing.T) {
	var compose composeFile
	readYAMLStrict(t, "compose.yaml", &compose)
	prom, ok := compose.Services["prometheus"]
	if !ok {
		t.Fatal("compose has no prometheus service")
	}
	mounts := mountedFiles(t, prom)
	var cfg struct {
		Global struct {
			ScrapeInterval     string `yaml:"scrape_interval"`
			EvaluationInterval string `yaml:"evaluation_interval"`
		} `yaml:"global"`
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			Authorization struct {
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	cfgFile, ok := mounts["/etc/prometheus/prometheus.yml"]
	if !ok {
		t.Fatal("prometheus service does not mount /etc/prometheus/prometheus.yml")
	}
	readYAMLStrict(t, cfgFile, &cfg)
	if len(cfg.RuleFiles) == 0 {
		t.Error("Prometheus loads no rule files")
	}
	for _, f := range cfg.RuleFiles {
		if filepath.Clean(mounts[f]) != filepath.Clean("prometheus/alerts.yaml") {
			t.Errorf("Prometheus loads rules from %s, mounted from %q, want prometheus/alerts.yaml", f, mounts[f])
		}
	}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "" && !httpPaths(t)[sc.MetricsPath] {
			t.Errorf("job %s scrapes %s, which internal/server does not serve", sc.JobName, sc.MetricsPath)
		}
		// /metrics needs a token: the replicas' admin token file, mounted.
		if f := sc.Authorization.CredentialsFile; f == "" || mounts[f] == "" {
			t.Errorf("job %s sends no token from a mounted file (credentials_file %q)", sc.JobName, f)
		} else {
			for name, svc := range compose.Services {
				if svc.Build.Dockerfile == "" {
					continue
				}
				if file := mountedFiles(t, svc)[svc.Environment["CONTROLPLANE_ADMIN_TOKEN_FILE"]]; filepath.Clean(file) != filepath.Clean(mounts[f]) {
					t.Errorf("job %s sends the token of %s, but replica %s's admin token is %q", sc.JobName, mounts[f], name, file)
				}
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				scraped[target] = true
			}
		}
	}
	for name, svc := range compose.Services {
		if svc.Build.Dockerfile == "" {
			continue
		}
		if !scraped[name+":7071"] {
			t.Errorf("Prometheus does not scrape replica %s at %s:7071 (targets %v)", name, name, slices.Sorted(maps.Keys(scraped)))
		}
		if _, ok := prom.DependsOn[name]; !ok {
			t.Errorf("prometheus does not depend on replica %s", name)
		}
	}
	for target := range scraped {
		host, _, _ := strings.Cut(target, ":")
		if svc, ok := compose.Services[host]; !ok || svc.Build.Dockerfile == "" {
			t.Errorf("Prometheus scrapes %s, which is not a control plane replica in compose", target)
		}
	}

	graf, ok := compose.Services["grafana"]
	if !ok {
		t.Fatal("compose has no grafana service")
	}
	mounts = mountedFiles(t, graf)
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, Access, URL string
			IsDefault                    bool `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	readYAMLStrict(t, filepath.Join(mounts["/etc/grafana/provisioning/datasources"], "prometheus.yaml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" || !ds.Datasources[0].IsDefault {
		t.Errorf("Grafana data sources %+v, want the default one of type prometheus at http://prometheus:9090", ds.Datasources)
	}
	if _, ok := graf.DependsOn["prometheus"]; !ok {
		t.Error("grafana does not depend on prometheus")
	}
	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name            string `yaml:"name"`
			Type            string `yaml:"type"`
			DisableDeletion bool   `yaml:"disableDeletion"`
			AllowUIUpdates  bool   `yaml:"allowUiUpdates"`
			Options         struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAMLStrict(t, filepath.Join(mounts["/etc/grafana/provisioning/dashboards"], "controlplane.yaml"), &providers)
	if len(providers.Providers) != 1 {
		t.Fatalf("%d dashboard providers, want 1", len(providers.Providers))
	}
	dash := path.Join(providers.Providers[0].Options.Path, "controlplane.json")
	if filepath.Clean(mounts[dash]) != filepath.Clean("grafana/controlplane.json") {
		t.Errorf("Grafana reads dashboards from %s, where compose mounts %q, want grafana/controlplane.json", dash, mounts[dash])
	}
	if home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && home != dash {
		t.Errorf("Grafana's home dashboard %s is not the mounted %s", home, dash)
	}
}

// mountedFiles maps the container paths of a service's bind mounts to their
// host paths (relative to deploy/).
func mountedFiles(t *testing.T, svc composeService) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && strings.HasPrefix(parts[0], ".") {
			m[parts[1]] = parts[0]
		}
	}
	return m
}

// TestComposeRedisPersists: the control plane keeps everything in Redis, so
// compose's Redis must write it to disk, on a volume, and never evict a key.
func TestComposeRedisPersists(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, "compose.yaml", &compose)
	redis, ok := compose.Services["redis"]
	if !ok {
		t.Fatal("compose has no redis service")
	}
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	if strings.Contains(cmd, "--appendonly no") || strings.Contains(cmd, `--save ""`) {
		t.Errorf("redis command %q turns persistence off", cmd)
	}
	onVolume := false
	for _, v := range redis.Volumes {
		onVolume = onVolume || strings.HasSuffix(v, ":/data")
	}
	if !onVolume {
		t.Errorf("redis keeps /data in the container (volumes %q): a new container starts empty", redis.Volumes)
	}
}

func TestDockerfileRunsServe(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./cmd/controlplane", `"serve"`, "EXPOSE 7070 7071", "-o /out/healthcheck ./deploy/healthcheck", "COPY --from=build /out/healthcheck /healthcheck"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestAlertRules checks the Prometheus rules parse and only use metrics the
// control plane exports.
func TestAlertRules(t *testing.T) {
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, "prometheus/alerts.yaml", &rules)
	exported := exportedMetrics(t)
	metric := regexp.MustCompile(`controlplane_[a-z_]+`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: incomplete rule %+v", g.Name, r)
			}
			for _, m := range metric.FindAllString(r.Expr, -1) {
				if !exported[m] {
					t.Errorf("alert %s uses %s, which the control plane does not export", r.Alert, m)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert rules")
	}
}

// readYAMLStrict decodes a YAML file, refusing fields v does not have.
func readYAMLStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// serveFlags finds the flag names that serve defines.
func serveFlags(t *testing.T) map[string]bool {
	// serve.go and the files of its parts (serve_access.go…).
	files, err := filepath.Glob("../internal/cli/serve*.go")
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

// exportedMetrics finds the metric names defined in the Go sources.
func exportedMetrics(t *testing.T) map[string]bool {
	names := map[string]bool{}
	re := regexp.MustCompile(`"(controlplane_[a-z_]+)"`)
	for _, dir := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				names[m[1]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// httpPaths finds the paths internal/server's HTTP handler serves.
func httpPaths(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../internal/server/http.go")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	// The route table of httpRoutes: {"GET /healthz", …}.
	for _, m := range regexp.MustCompile(`\{"(?:[A-Z]+ )?(/[^"]*)",`).FindAllStringSubmatch(string(b), -1) {
		paths[m[1]] = true
	}
	if len(paths) == 0 {
		t.Fatal("found no HTTP paths in internal/server/http.go")
	}
	return paths
}

// TestDockerignore checks that the build context keeps every file the image
// compiles: the non-test Go files (and embedded files) of every package of
// the repository's modules that the two commands import (the server's, and
// the generated API's and the shared packages' through go.work), go.work and
// every module's go.mod and go.sum.
func TestDockerignore(t *testing.T) {
	ignored := dockerignore(t, "../.dockerignore")
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if not .Standard}}{{.Module.Path}}{{"\t"}}{{.Dir}}{{"\t"}}{{join .GoFiles " "}} {{join .EmbedFiles " "}}{{end}}`,
		"./cmd/controlplane", "./deploy/healthcheck")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.work", "go.mod", "go.sum", "deploy/Dockerfile"}
	for _, m := range []string{"gen", "pkg", "clients/go"} {
		needed = append(needed, m+"/go.mod", m+"/go.sum")
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Split(strings.TrimSpace(line), "\t")
		if len(fields) != 3 || !strings.HasPrefix(fields[0], "github.com/tracesampling/controlplane") {
			continue
		}
		dir, err := filepath.Rel(root, fields[1])
		if err != nil {
			t.Fatal(err)
		}
		for f := range strings.FieldsSeq(fields[2]) {
			needed = append(needed, filepath.ToSlash(filepath.Join(dir, f)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, f := range needed {
		if p := ignored(f); p != "" {
			t.Errorf(".dockerignore pattern %q leaves out %s, which the image needs", p, f)
		}
	}
	for _, f := range []string{"deploy/helm/controlplane/values.yaml", "docs/ARCHITECTURE.md", "internal/server/http_test.go"} {
		if ignored(f) == "" {
			t.Errorf(".dockerignore keeps %s, which the image does not need", f)
		}
	}
}

// dockerignore reads a .dockerignore and returns a function that tells which
// pattern leaves a path out (or ""): as Docker does, a pattern leaves out
// what it matches and everything below, * and ? do not cross a /, and **
// matches any number of directories. Exceptions (!) are not supported here.
func dockerignore(t *testing.T, file string) func(string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	type pattern struct {
		text string
		re   *regexp.Regexp
	}
	var patterns []pattern
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf("%s: this test does not handle exceptions like %q", file, line)
		}
		var re strings.Builder
		re.WriteString("^")
		p := path.Clean(strings.TrimPrefix(line, "/"))
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(?:.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("(?:/.*)?$")
		patterns = append(patterns, pattern{line, regexp.MustCompile(re.String())})
	}
	return func(name string) string {
		for _, p := range patterns {
			if p.re.MatchString(name) {
				return p.text
			}
		}
		return ""
	}
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string           `json:"uid"`
	Title      string           `json:"title"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type dashboardPanel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource *dashboardSource  `json:"datasource"`
	Panels     []dashboardPanel  `json:"panels"` // of a collapsed row
	Targets    []dashboardTarget `json:"targets"`
}

type dashboardTarget struct {
	Expr       string           `json:"expr"`
	Datasource *dashboardSource `json:"datasource"`
}

type dashboardSource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardMetrics returns, for every metric the dashboard queries, where it
// is queried.
func dashboardMetrics(t *testing.T, file string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: no uid or title", file)
	}
	uses := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, src := range []*dashboardSource{p.Datasource} {
				if src == nil || src.Type != "prometheus" || src.UID != "${datasource}" {
					t.Errorf("panel %q: data source %+v, want the ${datasource} variable", p.Title, src)
				}
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: query data source %+v, want the ${datasource} variable", p.Title, tg.Datasource)
				}
				names := promMetrics(tg.Expr)
				if len(names) == 0 {
					t.Errorf("panel %q: query %q reads no metric", p.Title, tg.Expr)
				}
				for _, n := range names {
					uses[n] = append(uses[n], p.Title)
				}
			}
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		var obj struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
			q = obj.Query
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q)
			continue
		}
		for _, n := range promMetrics(m[1]) {
			uses[n] = append(uses[n], "variable "+v.Name)
		}
	}
	if len(uses) == 0 {
		t.Fatalf("%s queries no metric", file)
	}
	return uses
}

var (
	promVariable = regexp.MustCompile(`\$(?:\{\w+(?::\w+)?\}|\w+)`)
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promToken    = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*|\S`)
	promIdent    = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	// Words that are not metrics: operators, and those followed by a label list.
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// promMetrics returns the metric names a PromQL expression reads: the
// identifiers left once strings, label matchers, ranges, function calls,
// keywords and grouping label lists are taken out.
func promMetrics(expr string) []string {
	s := promVariable.ReplaceAllString(expr, "1")
	s = promString.ReplaceAllString(s, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	toks := promToken.FindAllString(s, -1)
	var names []string
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		switch {
		case promGrouping[strings.ToLower(tok)]:
			if next == "(" {
				for i++; i < len(toks) && toks[i] != ")"; i++ {
				}
			}
		case !promIdent.MatchString(tok), promKeywords[strings.ToLower(tok)], next == "(",
			next == "by" || next == "without": // a function, or an aggregation: sum by (…) (…)
		default:
			if !slices.Contains(names, tok) {
				names = append(names, tok)
			}
		}
	}
	return names
}

func TestPromMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (method) (rate(controlplane_grpc_requests_total{instance=~"$instance", code!="OK"}[$__rate_interval]))`, []string{"controlplane_grpc_requests_total"}},
		{`histogram_quantile(0.99, sum by (le, method) (rate(x_bucket{method!~".*/(A|B)"}[5m])))`, []string{"x_bucket"}},
		{`a / on(instance) group_left(job) b`, []string{"a", "b"}},
		{`min by (instance) (expiry{i="}{"}) - time()`, []string{"expiry"}},
		{`foo offset 5m and bar > bool 1e3`, []string{"foo", "bar"}},
		{`sum without (le) (foo) or vector(0)`, []string{"foo"}},
		{`max by(budget)(ratio{budget=~"${budget}"}) > 1 unless on() absent(up)`, []string{"ratio", "up"}},
		{`rate(foo:recorded[1h:5m])`, []string{"foo:recorded"}},
		{`7 * 86400`, nil},
	} {
		if diff := cmp.Diff(tc.want, promMetrics(tc.expr)); diff != "" {
			t.Errorf("promMetrics(%q) (-want +got):\n%s", tc.expr, diff)
		}
	}
}

// TestGrafanaDashboard checks that every metric the dashboard queries is one
// a real server exports: it builds the control plane, runs it with TLS,
// gives it a budget and a report that exhausts it, and scrapes /metrics
// until each metric has appeared (vectors appear once they have a value).
func TestGrafanaDashboard(t *testing.T) {
	uses := dashboardMetrics(t, "grafana/controlplane.json")
	pki := testpki.New(t)
	bin := buildControlplane(t)
	grpcAddr, httpAddr := startServer(t, bin, "--report-interval=1s", "--tls-cert="+pki.CertFile, "--tls-key="+pki.KeyFile)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.Pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A cap of 2,000 traces (1 cent at $5 per million), which one report of
	// 10,000 sampled requests exhausts: every budget figure gets a value
	// and the spend and exhausted alerts fire. Made with the CLI, as a user
	// would.
	create := exec.CommandContext(ctx, bin, "budgets", "create", "dashboard", "--amount", "0.01", "--server", grpcAddr, "--tls-ca", pki.CAFile)
	create.Env = envWithout("CONTROLPLANE_")
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("budgets create: %v\n%s", err, out)
	}
	sampling := pb.NewSamplingServiceClient(conn)
	report := func() {
		resp, err := sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
			ClientId: "dashboard-test", ServiceName: "shop",
			Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 10_000, SampledCount: 10_000}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetRejected()) > 0 {
			t.Fatalf("report rejected: %v", resp.GetRejected())
		}
	}

	var missing []string
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		// Report until the budget counts it: the server may learn of the
		// new budget after the first report.
		report()
		exported := scrapeMetrics(t, ctx, "http://"+httpAddr+"/metrics")
		missing = missing[:0]
		for name := range uses {
			if !exported[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			slices.Sort(missing)
			for _, name := range missing {
				t.Errorf("the dashboard queries %s (%s), which the server does not export", name, strings.Join(uses[name], "; "))
			}
			return
		case <-tick.C:
		}
	}
}

// scrapeMetrics returns the sample names on a /metrics page (histograms as
// their _bucket, _sum and _count series).
func scrapeMetrics(t *testing.T, ctx context.Context, url string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// buildControlplane builds the control plane's binary for this test.
func buildControlplane(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "controlplane")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/controlplane").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// envWithout is the environment without the variables of this prefix.
func envWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// startServer runs `serve` with the embedded store on loopback ports the
// kernel picks, with these extra flags; it returns the gRPC and HTTP
// addresses the server logs, and stops it when the test ends.
func startServer(t *testing.T, bin string, flags ...string) (grpcAddr, httpAddr string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--grpc-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0", "--jaeger-addr=", "--xray-addr=", "--log-format=json"}, flags...)...)
	cmd.Env = envWithout("CONTROLPLANE_")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		exited <- err
	}()
	addrs := make(chan [2]string, 1)
	var logs strings.Builder // written by the reader until done closes
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			var rec struct {
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.GRPCAddr != "" && rec.HTTPAddr != "" {
				select {
				case addrs <- [2]string{rec.GRPCAddr, rec.HTTPAddr}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		<-done
	}
	select {
	case a := <-addrs:
		t.Cleanup(stop)
		return a[0], a[1]
	case err := <-exited:
		<-done
		t.Fatalf("serve exited before listening: %v\n%s", err, logs.String())
	case <-time.After(time.Minute):
		stop()
		t.Fatalf("serve did not log its addresses within a minute:\n%s", logs.String())
	}
	return "", ""
}
