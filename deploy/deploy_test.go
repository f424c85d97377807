// Package deploy holds deployment files; its test keeps them valid, since no
// Docker engine or Prometheus runs where the tests do.
package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestComposeFile(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image       string                               `yaml:"image"`
			Build       struct{ Context, Dockerfile string } `yaml:"build"`
			Environment map[string]string                    `yaml:"environment"`
			DependsOn   map[string]any                       `yaml:"depends_on"`
		} `yaml:"services"`
	}
	readYAML(t, "compose.yaml", &compose)
	if len(compose.Services) < 3 {
		t.Fatalf("compose has %d services, want redis and two replicas", len(compose.Services))
	}
	flags := serveFlags(t)
	replicas := 0
	for name, svc := range compose.Services {
		if svc.Build.Dockerfile != "" {
			replicas++
			if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
				t.Errorf("service %s builds from a missing Dockerfile: %v", name, err)
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
		for dep := range svc.DependsOn {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
	}
	if replicas < 2 {
		t.Errorf("%d control plane replicas in compose, want 2", replicas)
	}
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
	for _, want := range []string{"./cmd/controlplane", `"serve"`, "EXPOSE 7070 7071"} {
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
	b, err := os.ReadFile("../cmd/controlplane/serve.go")
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`fs\.\w+Var\(&c\.\w+, "([a-z-]+)"`).FindAllStringSubmatch(string(b), -1) {
		flags[m[1]] = true
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
