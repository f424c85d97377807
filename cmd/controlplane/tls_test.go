package main

import (
	"context"
	"crypto/tls"
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
		{"plaintext to a TLS server", nil, exitUnavailable, "cannot reach"},
		{"TLS trusting only the system's roots", []string{"--tls"}, exitUnavailable, "cannot reach"},
		{"a CA file without certificates", []string{"--tls-ca", pki.KeyFile}, exitUsage, "--tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"rules", "list", "--server", s.grpcAddr, "--timeout", "5s"}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr+errText(r.err), tt.want) {
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
	check := func(certs []tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{RootCAs: pki.Pool, Certificates: certs, MinVersion: tls.VersionTLS12})
		conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
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
		{name: "missing file", cert: pki.CertFile + ".missing", key: pki.KeyFile, want: "--tls-cert, --tls-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testServeConfig(t)
			c.tlsCert, c.tlsKey, c.tlsClientCA = tt.cert, tt.key, tt.ca
			_, err := c.serverCredentials()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if got := exitCode(err) == exitUsage; got != tt.usage {
				t.Errorf("exit code %d for %v", exitCode(err), err)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
