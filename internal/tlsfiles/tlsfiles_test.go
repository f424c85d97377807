package tlsfiles

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/internal/testpki"
)

// install copies src over dst by a rename, as cert-manager and Kubernetes
// replace files.
func install(t *testing.T, dst, src string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// TestPoll: a renewal is taken up; one caught half way keeps the previous
// files in use and is logged once, when a second look finds it again.
func TestPoll(t *testing.T) {
	oldPKI, newPKI := testpki.New(t), testpki.New(t)
	dir := t.TempDir()
	cert, key, ca := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	install(t, cert, oldPKI.CertFile)
	install(t, key, oldPKI.KeyFile)
	install(t, ca, oldPKI.CAFile)
	var logs bytes.Buffer
	f, err := New(cert, key, ca, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Expiry(), oldPKI.ServerCert.Leaf.NotAfter; !got.Equal(want) {
		t.Fatalf("Expiry = %v, want %v", got, want)
	}

	install(t, cert, newPKI.CertFile) // the key is still the old one
	f.poll()
	if strings.Contains(logs.String(), "cannot be used") {
		t.Errorf("logged at the first look:\n%s", logs.String())
	}
	f.poll()
	f.poll()
	if n := strings.Count(logs.String(), "cannot be used"); n != 1 {
		t.Errorf("the half renewal logged %d times, want once:\n%s", n, logs.String())
	}
	if !f.Expiry().Equal(oldPKI.ServerCert.Leaf.NotAfter) {
		t.Error("a half renewal replaced the certificate in use")
	}

	install(t, key, newPKI.KeyFile)
	install(t, ca, newPKI.CAFile)
	f.poll()
	if !f.Expiry().Equal(newPKI.ServerCert.Leaf.NotAfter) {
		t.Error("the renewal was not taken up")
	}
	cfg, err := f.ServerConfig().GetConfigForClient(nil)
	if err != nil || cfg.ClientCAs == nil || !cfg.ClientCAs.Equal(newPKI.Pool) {
		t.Errorf("the config in use does not trust the new client CAs: %v", err)
	}
}

func TestNewRefusesUnusableFiles(t *testing.T) {
	pki := testpki.New(t)
	for _, tc := range []struct {
		name            string
		cert, key, ca   string
		wantErrContains string
	}{
		{"missing certificate", filepath.Join(t.TempDir(), "nope"), pki.KeyFile, "", "--tls-cert"},
		{"key of another certificate", pki.CertFile, testpki.New(t).KeyFile, "", "--tls-cert, --tls-key"},
		{"client CAs without a certificate", pki.CertFile, pki.KeyFile, pki.KeyFile, "--tls-client-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cert, tc.key, tc.ca, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.wantErrContains) {
				t.Errorf("New = %v, want an error naming %s", err, tc.wantErrContains)
			}
		})
	}
}
