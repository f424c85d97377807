package cli

import (
	"strings"
	"testing"
	"time"
)

// TestExpiresFlag: --expires gives a rule an expiry that long from now (to
// the second), update --expires 0 removes it, and a negative one is a
// usage error.
func TestExpiresFlag(t *testing.T) {
	s := startCLIServer(t, nil)
	before := time.Now().Truncate(time.Second)
	s.cli(t, "", "create", "--name", "debug-checkout", "--priority", "1", "--fixed-rate", "1", "--url-path", "/checkout*", "--expires", "30m").mustOK(t)
	after := time.Now()
	got := s.get(t, "debug-checkout").GetExpireTime().AsTime()
	if got.Before(before.Add(30*time.Minute)) || got.After(after.Add(30*time.Minute)) {
		t.Errorf("expire_time %v, want 30 minutes after the command (%v to %v)", got, before, after)
	}
	if res := s.cli(t, "", "list", "-o", "wide").mustOK(t); !strings.Contains(res.stdout, got.UTC().Format(time.RFC3339)) {
		t.Errorf("list -o wide does not show the expiry %v:\n%s", got, res.stdout)
	}

	s.cli(t, "", "update", "debug-checkout", "--expires", "0").mustOK(t)
	if r := s.get(t, "debug-checkout"); r.GetExpireTime() != nil {
		t.Errorf("after update --expires 0: expire_time %v, want none", r.GetExpireTime())
	}
	if res := s.cli(t, "", "update", "debug-checkout", "--expires", "-5m"); res.code != exitUsage {
		t.Errorf("--expires -5m: exit %d (%v), want %d", res.code, res.err, exitUsage)
	}
}

// TestApplyExpiresIn: a rule with expires_in is created with an expiry
// that long from now, and applying the file again keeps it.
func TestApplyExpiresIn(t *testing.T) {
	s := startCLIServer(t, nil)
	file := "rules:\n  - {name: debug, priority: 1, fixed_rate: 1, url_path: /checkout*, expires_in: 1h}\n"
	before := time.Now().Truncate(time.Second)
	s.cli(t, file, "apply", "-f", "-").mustOK(t)
	first := s.get(t, "debug").GetExpireTime().AsTime()
	if first.Before(before.Add(time.Hour)) || first.After(time.Now().Add(time.Hour)) {
		t.Errorf("expire_time %v, want an hour after the apply", first)
	}
	res := s.cli(t, file, "apply", "-f", "-").mustOK(t)
	if want := "= 1 unchanged\n0 created, 0 updated, 0 deleted, 1 unchanged\n"; res.stdout != want {
		t.Errorf("applying again printed\n%s\nwant\n%s", res.stdout, want)
	}
	if again := s.get(t, "debug").GetExpireTime().AsTime(); !again.Equal(first) {
		t.Errorf("applying again moved the expiry from %v to %v", first, again)
	}
}

// TestServeDeletesExpiredRules: serve removes a rule once its expiry has
// passed, and the audit log says that it expired.
func TestServeDeletesExpiredRules(t *testing.T) {
	c := testServeConfig(t)
	c.interval = 100 * time.Millisecond
	s := startServe(t, c)
	s.cli(t, "create", "--name", "debug", "--priority", "1", "--fixed-rate", "1", "--expires", "1s").mustOK(t)
	pollUntil(t, "the expired rule deleted", func() bool {
		return strings.Join(stateNames(s.state(t)), " ") == "Default"
	})
	res := s.cli(t, "history", "debug").mustOK(t)
	if !strings.Contains(res.stdout, "system:expiry  delete  debug  the rule expired: its expire_time passed; priority 1") {
		t.Errorf("history of the expired rule:\n%s", res.stdout)
	}
}
