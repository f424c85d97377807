// Package tlsfiles serves a TLS certificate, key and client CAs from their
// files and takes up a renewal without a restart.
package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PollEvery is how often Watch looks at its TLS files for a renewal.
const PollEvery = 30 * time.Second

// Files serves the TLS certificate and client CAs from their files and
// looks at them again every so often, so that a renewal (cert-manager,
// certbot, a Kubernetes secret) serves new connections without a restart.
// Handshakes only load the config in use: what a peer can trigger costs no
// file reads, and a slow disk holds up no handshake.
type Files struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger
	cfg                       atomic.Pointer[tls.Config]

	// Only poll touches these.
	raw     [3]string // the files' content in use
	lastErr string    // the last poll's failure, "" if it had none
	warned  string    // the failure last logged
}

// New reads the files once; at start-up an unusable file is an error.
func New(certFile, keyFile, caFile string, log *slog.Logger) (*Files, error) {
	f := &Files{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log}
	raw, err := f.read()
	if err != nil {
		return nil, err
	}
	cfg, err := f.parse(raw)
	if err != nil {
		return nil, err
	}
	f.use(raw, cfg)
	return f, nil
}

// ServerConfig is what the gRPC server is given.
func (f *Files) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.cfg.Load(), nil
		},
	}
}

// Register exports when the certificate in use expires, so that a renewal
// that never lands can be alerted on before clients start failing.
func (f *Files) Register(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "controlplane_tls_certificate_expiry_timestamp_seconds",
		Help: "When the gRPC server's TLS certificate in use expires, in unix seconds.",
	}, func() float64 { return float64(f.Expiry().Unix()) }))
}

// Expiry is when the certificate in use expires.
func (f *Files) Expiry() time.Time { return f.cfg.Load().Certificates[0].Leaf.NotAfter }

// Watch polls the files every interval until ctx ends.
func (f *Files) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.poll()
		}
	}
}

// poll takes up the files if they changed and can be used. A rotation
// replaces its files one by one, so a poll may catch them half way: a
// failure is logged only when the next poll finds it again, and once, while
// the previous files stay in use.
func (f *Files) poll() {
	raw, err := f.read()
	if err == nil && raw == f.raw {
		f.lastErr, f.warned = "", ""
		return
	}
	var cfg *tls.Config
	if err == nil {
		cfg, err = f.parse(raw)
	}
	if err != nil {
		if msg := err.Error(); msg == f.lastErr && msg != f.warned {
			f.log.Warn("TLS files changed but cannot be used; the previous ones stay in use", "err", err)
			f.warned = msg
		}
		f.lastErr = err.Error()
		return
	}
	f.use(raw, cfg)
	f.lastErr, f.warned = "", ""
	f.log.Info("TLS files changed: new connections use them", "cert", f.certFile, "client_ca", f.caFile,
		"expires", f.Expiry().UTC())
}

func (f *Files) use(raw [3]string, cfg *tls.Config) {
	f.raw = raw
	f.cfg.Store(cfg)
}

func (f *Files) read() (raw [3]string, err error) {
	for i, file := range []struct{ flag, name string }{{"--tls-cert", f.certFile}, {"--tls-key", f.keyFile}, {"--tls-client-ca", f.caFile}} {
		if file.name == "" {
			continue
		}
		b, err := os.ReadFile(file.name)
		if err != nil {
			return raw, fmt.Errorf("%s: %w", file.flag, err)
		}
		raw[i] = string(b)
	}
	return raw, nil
}

func (f *Files) parse(raw [3]string) (*tls.Config, error) {
	cert, err := tls.X509KeyPair([]byte(raw[0]), []byte(raw[1]))
	if err != nil {
		return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.caFile != "" {
		pool, err := CertPool(f.caFile, []byte(raw[2]))
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// CertPool makes a pool of the PEM certificates in data, read from file.
func CertPool(file string, data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
