// Package testpki makes a throwaway certificate authority for tests of TLS
// between real clients and servers on loopback.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a private CA with a server certificate for 127.0.0.1 and a client
// certificate, the first two written as PEM files.
type PKI struct {
	CAFile, CertFile, KeyFile string          // PEM files: the CA, the server's certificate and key
	ServerCert                tls.Certificate // what CertFile and KeyFile hold, Leaf parsed
	ClientCert                tls.Certificate // signed by the CA, for client authentication
	ClientCertFile            string          // ClientCert's certificate and key as PEM files
	ClientKeyFile             string
	Pool                      *x509.CertPool // holds the CA
}

// New makes one in a temporary directory of t.
func New(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	p := &PKI{CAFile: write("ca.pem", "CERTIFICATE", caDER), Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	serverDER, serverKey := issue(2, x509.ExtKeyUsageServerAuth)
	p.CertFile = write("server.pem", "CERTIFICATE", serverDER)
	p.KeyFile = write("server-key.pem", "EC PRIVATE KEY", keyDER(serverKey))
	leaf, err := x509.ParseCertificate(serverDER)
	if err != nil {
		t.Fatal(err)
	}
	p.ServerCert = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey, Leaf: leaf}
	clientDER, clientKey := issue(3, x509.ExtKeyUsageClientAuth)
	p.ClientCert = tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey}
	p.ClientCertFile = write("client.pem", "CERTIFICATE", clientDER)
	p.ClientKeyFile = write("client-key.pem", "EC PRIVATE KEY", keyDER(clientKey))
	return p
}
