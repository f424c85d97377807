package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// tlsFiles gives every TLS handshake the server certificate and the client
// CAs from their files, and parses them again whenever a file's content has
// changed, so that a renewed certificate (cert-manager, certbot) serves new
// connections without a restart. Connections already open keep the old one
// until they reconnect, at the latest after --max-connection-age. Reading
// three small files costs far less than the handshake it serves.
type tlsFiles struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger

	mu  sync.Mutex
	raw [3]string // the files' content when cfg was made, or last tried
	cfg *tls.Config
}

// newTLSFiles reads the files once; at start-up an unusable file is an error.
func newTLSFiles(certFile, keyFile, caFile string, log *slog.Logger) (*tlsFiles, error) {
	f := &tlsFiles{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log}
	raw, err := f.read()
	if err != nil {
		return nil, err
	}
	if f.cfg, err = f.parse(raw); err != nil {
		return nil, err
	}
	f.raw = raw
	return f, nil
}

// serverConfig is what the gRPC server is given.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: f.config}
}

// config is tls.Config.GetConfigForClient. A change that does not parse (a
// renewal half written: a new certificate beside the old key) keeps the
// previous files in use; the other half's arrival is a change again.
func (f *tlsFiles) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	raw, err := f.read()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// Mid-rename, say: keep serving what was read before.
		f.log.Warn("TLS files unreadable; the previous ones stay in use", "err", err)
		return f.cfg, nil
	}
	if raw != f.raw {
		f.raw = raw
		if cfg, err := f.parse(raw); err != nil {
			f.log.Warn("TLS files changed but cannot be used; the previous ones stay in use", "err", err)
		} else {
			f.cfg = cfg
			f.log.Info("TLS files changed: new connections use them", "cert", f.certFile, "client_ca", f.caFile)
		}
	}
	return f.cfg, nil
}

func (f *tlsFiles) read() (raw [3]string, err error) {
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

func (f *tlsFiles) parse(raw [3]string) (*tls.Config, error) {
	cert, err := tls.X509KeyPair([]byte(raw[0]), []byte(raw[1]))
	if err != nil {
		return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	// The config a handshake gets replaces the server's whole config, so it
	// names HTTP/2 itself: gRPC clients insist on it by ALPN.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	if f.caFile != "" {
		pool, err := certPool(f.caFile, []byte(raw[2]))
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certPool makes a pool of the PEM certificates in data, read from file.
func certPool(file string, data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
