package broker_test

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// TestSecurityOptions checks the settings SecurityOptions rejects before any connection, each
// error naming the variable at fault.
func TestSecurityOptions(t *testing.T) {
	seed, _ := natstest.NKeyUser(t)
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed, err := akp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	accountSeedFile := filepath.Join(t.TempDir(), "account.nk")
	if err := os.WriteFile(accountSeedFile, accountSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	notASeed := filepath.Join(t.TempDir(), "empty.nk")
	if err := os.WriteFile(notASeed, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name     string
		settings config.NATS
		want     []string // settings the error names; none: no error
	}{
		{name: "nothing set", settings: config.NATS{}},
		{name: "NKey user seed", settings: config.NATS{NKey: seed}},
		{name: "credentials and NKey", settings: config.NATS{Creds: seed, NKey: seed},
			want: []string{"CPCANCEL_NATS_CREDS", "CPCANCEL_NATS_NKEY"}},
		{name: "NKey file without a seed", settings: config.NATS{NKey: notASeed},
			want: []string{"CPCANCEL_NATS_NKEY"}},
		{name: "account seed instead of a user seed", settings: config.NATS{NKey: accountSeedFile},
			want: []string{"CPCANCEL_NATS_NKEY"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := broker.SecurityOptions(c.settings)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Options: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Options accepted it")
			}
			for _, v := range c.want {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("error does not name %s: %v", v, err)
				}
			}
		})
	}
}

// TestConnectSecurityErrors checks that a refused connection keeps its cause for errors.Is and
// errors.As beneath the hint naming the settings.
func TestConnectSecurityErrors(t *testing.T) {
	pki, otherPKI := natstest.NewPKI(t), natstest.NewPKI(t)
	_, nkeyPub := natstest.NKeyUser(t)
	wrongSeed, _ := natstest.NKeyUser(t)
	tlsOpts := &server.Options{}
	pki.RequireTLS(t, tlsOpts, false)
	tlsServer := natstest.StartWith(t, tlsOpts)
	nkeyServer := natstest.StartWith(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	for _, c := range []struct {
		name     string
		url      string
		settings config.NATS
		cause    func(error) bool
		want     string
	}{{
		name: "untrusted server certificate", url: tlsServer.ClientURL(),
		settings: config.NATS{CA: otherPKI.CA},
		cause: func(err error) bool {
			var verify *tls.CertificateVerificationError
			return errors.As(err, &verify)
		},
		want: "CPCANCEL_NATS_CA",
	}, {
		name: "wrong NKey", url: nkeyServer.ClientURL(),
		settings: config.NATS{NKey: wrongSeed},
		cause:    func(err error) bool { return errors.Is(err, nats.ErrAuthorization) },
		want:     "CPCANCEL_NATS_NKEY",
	}} {
		t.Run(c.name, func(t *testing.T) {
			opts, err := broker.SecurityOptions(c.settings)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := broker.Connect(c.url, "security-test", log, opts...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !c.cause(err) {
				t.Errorf("cause lost in %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not name %s: %v", c.want, err)
			}
		})
	}
}
