package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// StartWith runs a JetStream server with opts, for servers that require TLS or authentication.
// Whatever opts leaves unset is filled in as Start does: 127.0.0.1, a random port, a store under
// t.TempDir(), no logs, no signal handlers.
func StartWith(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.JetStream, opts.NoLog, opts.NoSigs = true, true, true
	s := &Server{opts: opts}
	s.start(t)
	t.Cleanup(func() { s.Server.Shutdown(); s.Server.WaitForShutdown() })
	return s
}

// ConnectWith is Connect with client options, such as the TLS and credentials the server requires.
func (s *Server) ConnectWith(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, s.ClientURL(), opts...)
}

// PKI is a throwaway certificate authority, generated for one test and written as PEM files
// under its t.TempDir(): a server certificate for 127.0.0.1 and localhost, and a client
// certificate for mutual TLS. No key material outlives the test.
type PKI struct {
	CA                    string // CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// NewPKI generates a CA (ECDSA P-256) and the certificates it signs.
func NewPKI(t testing.TB) PKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "cpcancel test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := PKI{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)

	issue := func(name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: serial(t),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.ServerCert, p.ServerKey = issue("server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = issue("client", x509.ExtKeyUsageClientAuth)
	return p
}

// RequireTLS makes opts serve TLS with p's server certificate; with verifyClients, clients must
// also present a certificate signed by p's CA (mutual TLS).
func (p PKI) RequireTLS(t testing.TB, opts *server.Options, verifyClients bool) {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: verifyClients,
	})
	if err != nil {
		t.Fatal(err)
	}
	opts.TLS, opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = true, tc, verifyClients, 2
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// NKeyUser generates a user NKey and writes its seed to a file under t.TempDir(); it returns the
// file and the public key a server lists in Options.Nkeys.
func NKeyUser(t testing.TB) (seedFile, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return seedFile, public
}

// Operator is an operator-mode (JWT) trust chain held in memory: an operator, its system account
// and one application account with JetStream enabled. Trust makes a server accept it; Creds
// issues users of the application account. Users of another Operator belong to an account the
// server does not know.
type Operator struct {
	claims   *jwt.OperatorClaims
	system   string
	account  nkeys.KeyPair
	accPub   string
	resolver *server.MemAccResolver
}

// NewOperator generates the operator, the system account and the application account.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opub, err := okp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	o := &Operator{resolver: &server.MemAccResolver{}}
	account := func(name string, jetStream bool) (nkeys.KeyPair, string) {
		akp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		apub, err := akp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		if jetStream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
				MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit,
			}
		}
		token, err := ac.Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.resolver.Store(apub, token); err != nil {
			t.Fatal(err)
		}
		return akp, apub
	}
	_, o.system = account("SYS", false)
	o.account, o.accPub = account("CPCANCEL", true)

	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "cpcancel-test"
	oc.SystemAccount = o.system
	token, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	if o.claims, err = jwt.DecodeOperatorClaims(token); err != nil {
		t.Fatal(err)
	}
	return o
}

// Trust makes opts run in operator mode with o as the only trusted operator.
func (o *Operator) Trust(opts *server.Options) {
	opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
	opts.AccountResolver = o.resolver
	opts.SystemAccount = o.system
}

// Account is the public key of the application account, as server monitoring names it.
func (o *Operator) Account() string { return o.accPub }

// Creds issues a new user of the application account and writes its credentials file (user JWT
// and NKey seed) under t.TempDir().
func (o *Operator) Creds(t testing.TB, name string) string {
	t.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, err := ukp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	useed, err := ukp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	token, err := uc.Encode(o.account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, useed)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// ClientTLS is the client side of p: its CA, and with mutual, its client certificate.
func (p PKI) ClientTLS(mutual bool) []nats.Option {
	opts := []nats.Option{nats.RootCAs(p.CA)}
	if mutual {
		opts = append(opts, nats.ClientCert(p.ClientCert, p.ClientKey))
	}
	return opts
}
