package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tracesampling/controlplane/internal/testpki"
)

func TestServeTLS(t *testing.T) {
	pki := testpki.New(t)
	c := testServeConfig(t)
	c.tlsCert, c.tlsKey = pki.CertFile, pki.KeyFile
	s := startServe(t, c)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"trusting the CA", []string{"--tls-ca", pki.CAFile}, 0, "Default"},
		{"plaintext to a TLS server", nil, exitUnavailable, "the server speaks TLS: add --tls, or --tls-ca FILE"},
		{"TLS trusting only the system's roots", []string{"--tls"}, exitUnavailable, "certificate signed by unknown authority"},
		{"a CA file without certificates", []string{"--tls-ca", pki.KeyFile}, exitUsage, "--tls-ca"},
		{"a client certificate without its key", []string{"--tls-ca", pki.CAFile, "--tls-cert", pki.CertFile}, exitUsage, "--tls-cert and --tls-key go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"rules", "list", "--server", s.grpcAddr, "--timeout", "5s"}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr+fmt.Sprint(r.err), tt.want) {
				t.Errorf("exit %d, want %d and %q in the output\nstdout: %s\nstderr: %s\nerr: %v", r.code, tt.code, tt.want, r.stdout, r.stderr, r.err)
			}
		})
	}
	// Budgets commands dial the same way.
	runCLI(t, "", "budgets", "list", "--server", s.grpcAddr, "--tls-ca", pki.CAFile).mustOK(t)
}

func TestServeMutualTLS(t *testing.T) {
	pki := testpki.New(t)
	c := testServeConfig(t)
	c.tlsCert, c.tlsKey, c.tlsClientCA = pki.CertFile, pki.KeyFile, pki.CAFile
	s := startServe(t, c)
	check := func(certs []tls.Certificate) error { return healthOverTLS(t, s.grpcAddr, pki.Pool, certs) }
	if err := check([]tls.Certificate{pki.ClientCert}); err != nil {
		t.Errorf("with a client certificate: %v", err)
	}
	if err := check(nil); err == nil {
		t.Error("without a client certificate: the call went through")
	}
	// The CLI, with and without its certificate.
	args := []string{"rules", "list", "--server", s.grpcAddr, "--tls-ca", pki.CAFile, "--timeout", "5s"}
	runCLI(t, "", append(args, "--tls-cert", pki.ClientCertFile, "--tls-key", pki.ClientKeyFile)...).mustOK(t)
	if r := runCLI(t, "", args...); r.code != exitUnavailable {
		t.Errorf("the CLI without a client certificate: exit %d, want %d; %v", r.code, exitUnavailable, r.err)
	}
	if r := runCLI(t, "", append(args, "--tls-cert", pki.ClientCertFile)...); r.code != exitUsage {
		t.Errorf("--tls-cert without --tls-key: exit %d, want %d; %v", r.code, exitUsage, r.err)
	}
}

func TestServeTLSFlagErrors(t *testing.T) {
	pki, other := testpki.New(t), testpki.New(t)
	tests := []struct {
		name          string
		cert, key, ca string
		want          string
		usage         bool // a bad command line (exit 2), not a bad file
	}{
		{name: "cert without key", cert: pki.CertFile, want: "--tls-cert and --tls-key go together", usage: true},
		{name: "client CA without a certificate", ca: pki.CAFile, want: "--tls-client-ca needs --tls-cert and --tls-key", usage: true},
		{name: "key of another certificate", cert: pki.CertFile, key: other.KeyFile, want: "--tls-cert, --tls-key"},
		{name: "no key in the key file", cert: pki.CertFile, key: pki.CAFile, want: "--tls-cert, --tls-key"},
		{name: "missing file", cert: pki.CertFile + ".missing", key: pki.KeyFile, want: "--tls-cert"},
		{name: "missing client CA file", cert: pki.CertFile, key: pki.KeyFile, ca: pki.CAFile + ".missing", want: "--tls-client-ca"},
		{name: "client CA file without certificates", cert: pki.CertFile, key: pki.KeyFile, ca: pki.KeyFile, want: "--tls-client-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testServeConfig(t)
			c.tlsCert, c.tlsKey, c.tlsClientCA = tt.cert, tt.key, tt.ca
			_, _, err := c.serverCredentials(slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if got := exitCode(err) == exitUsage; got != tt.usage {
				t.Errorf("exit code %d for %v", exitCode(err), err)
			}
		})
	}
}

// healthOverTLS makes a health check on a new TLS connection that trusts
// roots and presents certs.
func healthOverTLS(t *testing.T, addr string, roots *x509.CertPool, certs []tls.Certificate) error {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestServeTLSReloadsRenewedFiles: new connections get a renewed certificate
// and client CAs without a restart; a renewal half written (a certificate
// beside a key it does not belong to) is logged once and keeps the previous
// files in use.
func TestServeTLSReloadsRenewedFiles(t *testing.T) {
	oldPKI, newPKI := testpki.New(t), testpki.New(t)
	dir := t.TempDir()
	cert, key, ca := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	// As cert-manager and Kubernetes do: the new file is written aside and
	// renamed over the old.
	install := func(dst, src string) {
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
	install(cert, oldPKI.CertFile)
	install(key, oldPKI.KeyFile)
	install(ca, oldPKI.CAFile)
	c := testServeConfig(t)
	c.tlsCert, c.tlsKey, c.tlsClientCA, c.tlsPoll = cert, key, ca, 10*time.Millisecond
	s := startServe(t, c)
	// call trusts roots' CA and presents client's certificate.
	call := func(roots, client *testpki.PKI) error {
		return healthOverTLS(t, s.grpcAddr, roots.Pool, []tls.Certificate{client.ClientCert})
	}
	if err := call(oldPKI, oldPKI); err != nil {
		t.Fatalf("as started: %v", err)
	}

	// Half a renewal: logged once, after a second look, and the old files
	// stay in use.
	install(cert, newPKI.CertFile)
	pollUntil(t, "the half renewal logged", func() bool { return strings.Contains(s.logs.String(), "cannot be used") })
	if err := call(oldPKI, oldPKI); err != nil {
		t.Errorf("half way through a renewal: %v", err)
	}
	time.Sleep(5 * c.tlsPoll) // more polls of the same files
	if n := strings.Count(s.logs.String(), "cannot be used"); n != 1 {
		t.Errorf("the half renewal logged %d times, want once", n)
	}

	// The rest: the new certificate and client CAs serve new connections.
	install(key, newPKI.KeyFile)
	install(ca, newPKI.CAFile)
	pollUntil(t, "the new certificate served", func() bool { return call(newPKI, newPKI) == nil })
	if err := call(oldPKI, oldPKI); err == nil {
		t.Error("a client trusting only the old CA still connects")
	}
	if err := call(newPKI, oldPKI); err == nil {
		t.Error("a client certificate of the replaced CA is still accepted")
	}
	want := fmt.Sprintf("controlplane_tls_certificate_expiry_timestamp_seconds %g", float64(newPKI.ServerCert.Leaf.NotAfter.Unix()))
	if _, body := s.get(t, "/metrics"); !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// TestNoTLSHintForAServerThatHangsUp: a server that closes connections
// before the HTTP/2 preface is not said to speak TLS unless it does.
func TestNoTLSHintForAServerThatHangsUp(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	defer func() { lis.Close(); <-done }()
	r := runCLI(t, "", "rules", "list", "--server", lis.Addr().String(), "--timeout", "5s")
	if r.code != exitUnavailable || strings.Contains(fmt.Sprint(r.err), "speaks TLS") {
		t.Errorf("exit %d, %v; want %d without a TLS hint", r.code, r.err, exitUnavailable)
	}
}
