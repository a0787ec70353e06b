package service_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// startSecureStack runs cpcancel with env against ns, a server that requires TLS or
// authentication; the test's own connection, which publishes requests and reads the streams,
// uses client.
func startSecureStack(t *testing.T, ns *natstest.Server, client []nats.Option, env map[string]string) *stack {
	t.Helper()
	_, js := ns.ConnectWith(t, client...)
	st := &stack{nats: ns, js: js}
	st.serveEmulator(t, emulator.Options{})
	st.svc = startService(t, st.env(env))
	return st
}

// serviceConn is what the server knows of cpcancel's connection (it connects as "cpcancel").
func serviceConn(t *testing.T, ns *natstest.Server) *server.ConnInfo {
	t.Helper()
	cz, err := ns.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.Name == "cpcancel" {
			return c
		}
	}
	t.Fatalf("no connection named cpcancel among %d", len(cz.Conns))
	return nil
}

// TestSecureNATS checks that cpcancel serves cancel requests through a NATS server that requires
// TLS, mutual TLS, an NKey or a credentials file, given by the CPCANCEL_NATS_* settings: it
// provisions its streams, becomes ready, and a published request gets its result. Each case
// also checks that the server really demands the setting and that cpcancel's connection used it.
func TestSecureNATS(t *testing.T) {
	pki := natstest.NewPKI(t)
	seed, nkeyPub := natstest.NKeyUser(t)
	op := natstest.NewOperator(t)
	creds := op.Creds(t, "cpcancel")
	testCreds := op.Creds(t, "test")

	cases := []struct {
		name string
		// server requires the security under test
		server func(*server.Options)
		// env gives cpcancel what the server requires; client does the same for the test's connection
		env    map[string]string
		client []nats.Option
		// refused lacks one thing the server requires: the server must turn it away. nil: not
		// checked (with TLS alone, check sees the connection is TLS instead)
		refused []nats.Option
		// check reads cpcancel's connection as the server saw it
		check func(t *testing.T, c *server.ConnInfo)
	}{{
		name:   "TLS with a private CA",
		server: func(o *server.Options) { pki.RequireTLS(t, o, false) },
		env:    map[string]string{"CPCANCEL_NATS_CA": pki.CA},
		client: pki.ClientTLS(false),
		check: func(t *testing.T, c *server.ConnInfo) {
			if c.TLSVersion == "" {
				t.Error("cpcancel's connection is not TLS")
			}
		},
	}, {
		name:   "mutual TLS",
		server: func(o *server.Options) { pki.RequireTLS(t, o, true) },
		env: map[string]string{
			"CPCANCEL_NATS_CA": pki.CA, "CPCANCEL_NATS_CERT": pki.ClientCert, "CPCANCEL_NATS_KEY": pki.ClientKey,
		},
		client:  pki.ClientTLS(true),
		refused: pki.ClientTLS(false),
		check: func(t *testing.T, c *server.ConnInfo) {
			if c.TLSVersion == "" || len(c.TLSPeerCerts) == 0 || c.TLSPeerCerts[0].Subject != "CN=client" {
				t.Errorf("cpcancel's connection: TLS %q, peer certificates %+v; want TLS with the client certificate",
					c.TLSVersion, c.TLSPeerCerts)
			}
		},
	}, {
		name:    "NKey",
		server:  func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}} },
		env:     map[string]string{"CPCANCEL_NATS_NKEY": seed},
		client:  []nats.Option{nkeyOption(t, seed)},
		refused: []nats.Option{},
		check: func(t *testing.T, c *server.ConnInfo) {
			if c.AuthorizedUser != nkeyPub {
				t.Errorf("cpcancel connected as %q, want the NKey user %s", c.AuthorizedUser, nkeyPub)
			}
		},
	}, {
		name:    "credentials file (operator mode)",
		server:  op.Trust,
		env:     map[string]string{"CPCANCEL_NATS_CREDS": creds},
		client:  []nats.Option{nats.UserCredentials(testCreds)},
		refused: []nats.Option{},
		check: func(t *testing.T, c *server.ConnInfo) {
			if c.Account != op.Account() {
				t.Errorf("cpcancel connected to account %q, want %s", c.Account, op.Account())
			}
		},
	}, {
		name:   "mutual TLS and credentials file",
		server: func(o *server.Options) { pki.RequireTLS(t, o, true); op.Trust(o) },
		env: map[string]string{
			"CPCANCEL_NATS_CA": pki.CA, "CPCANCEL_NATS_CERT": pki.ClientCert, "CPCANCEL_NATS_KEY": pki.ClientKey,
			"CPCANCEL_NATS_CREDS": creds,
		},
		client:  append(pki.ClientTLS(true), nats.UserCredentials(testCreds)),
		refused: pki.ClientTLS(true),
		check: func(t *testing.T, c *server.ConnInfo) {
			if c.TLSVersion == "" || len(c.TLSPeerCerts) == 0 || c.Account != op.Account() {
				t.Errorf("cpcancel's connection: TLS %q, %d peer certificates, account %q; want mutual TLS in %s",
					c.TLSVersion, len(c.TLSPeerCerts), c.Account, op.Account())
			}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := &server.Options{}
			c.server(opts)
			ns := natstest.StartWith(t, opts)
			if c.refused != nil {
				if nc, err := nats.Connect(ns.ClientURL(), c.refused...); err == nil {
					nc.Close()
					t.Fatal("the server accepts a client without the setting under test")
				}
			}

			env := map[string]string{"CPCANCEL_PROVISION": "true"}
			for k, v := range c.env {
				env[k] = v
			}
			st := startSecureStack(t, ns, c.client, env)
			c.check(t, serviceConn(t, ns))

			id := "secure-" + strings.ReplaceAll(c.name, " ", "-")
			st.publish(t, natsce.Binary, request(t, "/test", id, "contoso", "sync-offer"))
			r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]
			if r.ev == nil || r.ev.Type() != cancelevent.Cancelled.Type() || r.data.RequestID != id {
				t.Errorf("result on %s: %s", r.subject, r.body)
			}
		})
	}
}

func nkeyOption(t *testing.T, seedFile string) nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// TestSecureNATSMisconfigured checks that cpcancel, given wrong or missing CPCANCEL_NATS_*
// settings for a server that requires them, stops at once with an error naming the setting to
// fix, rather than retrying or hanging.
func TestSecureNATSMisconfigured(t *testing.T) {
	pki, otherPKI := natstest.NewPKI(t), natstest.NewPKI(t)
	seed, nkeyPub := natstest.NKeyUser(t)
	otherSeed, _ := natstest.NKeyUser(t)
	op := natstest.NewOperator(t)
	// A user of an account that op's server does not know: another operator issued it.
	strangerCreds := natstest.NewOperator(t).Creds(t, "stranger")

	tlsServer := &server.Options{}
	pki.RequireTLS(t, tlsServer, false)
	mtlsServer := &server.Options{}
	pki.RequireTLS(t, mtlsServer, true)
	nkeyServer := &server.Options{Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}}}
	plainServer := &server.Options{}
	opServer := &server.Options{}
	op.Trust(opServer)
	servers := map[*server.Options]*natstest.Server{}
	for _, o := range []*server.Options{tlsServer, mtlsServer, nkeyServer, plainServer, opServer} {
		servers[o] = natstest.StartWith(t, o)
	}

	cases := []struct {
		name   string
		server *server.Options
		env    map[string]string
		// want are the settings the error must name, cause a fragment of its underlying reason
		want  []string
		cause string
	}{{
		name:   "server certificate from another CA",
		server: tlsServer,
		env:    map[string]string{"CPCANCEL_NATS_CA": otherPKI.CA},
		want:   []string{"CPCANCEL_NATS_CA"},
		cause:  "certificate signed by unknown authority",
	}, {
		name:   "no CA for a server with a private CA",
		server: tlsServer,
		want:   []string{"CPCANCEL_NATS_CA"},
		cause:  "certificate signed by unknown authority",
	}, {
		name:   "no client certificate for a server requiring one",
		server: mtlsServer,
		env:    map[string]string{"CPCANCEL_NATS_CA": pki.CA},
		want:   []string{"CPCANCEL_NATS_CERT", "CPCANCEL_NATS_KEY"},
		cause:  "certificate required|closed by remote after TLS handshake", // TLS 1.3: alert or hang-up, by timing
	}, {
		name:   "client certificate from another CA",
		server: mtlsServer,
		env: map[string]string{
			"CPCANCEL_NATS_CA": pki.CA, "CPCANCEL_NATS_CERT": otherPKI.ClientCert, "CPCANCEL_NATS_KEY": otherPKI.ClientKey,
		},
		want:  []string{"CPCANCEL_NATS_CERT", "CPCANCEL_NATS_KEY"},
		cause: "unknown certificate authority|closed by remote after TLS handshake",
	}, {
		name:   "CA for a server without TLS",
		server: plainServer,
		env:    map[string]string{"CPCANCEL_NATS_CA": pki.CA},
		want:   []string{"CPCANCEL_NATS_CA", "CPCANCEL_NATS_URL"},
		cause:  "secure connection not available",
	}, {
		name:   "wrong NKey seed",
		server: nkeyServer,
		env:    map[string]string{"CPCANCEL_NATS_NKEY": otherSeed},
		want:   []string{"CPCANCEL_NATS_NKEY"},
		cause:  "Authorization Violation",
	}, {
		name:   "NKey file without a seed",
		server: nkeyServer,
		env:    map[string]string{"CPCANCEL_NATS_NKEY": pki.CA},
		want:   []string{"CPCANCEL_NATS_NKEY"},
		cause:  "no nkey seed found",
	}, {
		name:   "no NKey for a server requiring one",
		server: nkeyServer,
		want:   []string{"CPCANCEL_NATS_NKEY", "CPCANCEL_NATS_CREDS"},
		cause:  "Authorization Violation",
	}, {
		name:   "credentials of an unknown account",
		server: opServer,
		env:    map[string]string{"CPCANCEL_NATS_CREDS": strangerCreds},
		want:   []string{"CPCANCEL_NATS_CREDS"},
		cause:  "Authorization Violation",
	}, {
		name:   "NKey seed where the server wants a credentials file",
		server: opServer,
		env:    map[string]string{"CPCANCEL_NATS_NKEY": seed},
		want:   []string{"CPCANCEL_NATS_CREDS", "CPCANCEL_NATS_NKEY"},
		cause:  "Authorization Violation",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &stack{nats: servers[c.server], emuURL: "http://127.0.0.1:9"} // never reached
			env := map[string]string{"CPCANCEL_PROVISION": "true"}
			for k, v := range c.env {
				env[k] = v
			}
			start := time.Now()
			svc, done, cancel := runService(t, st.env(env))
			defer cancel()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("service stopped without an error")
				}
				t.Logf("error: %v", err)
				for _, v := range c.want {
					if !strings.Contains(err.Error(), v) {
						t.Errorf("error does not name %s: %v", v, err)
					}
				}
				if !regexp.MustCompile(c.cause).MatchString(err.Error()) {
					t.Errorf("error does not give the cause %q: %v", c.cause, err)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("failed after %s, want at once", took)
				}
			case <-svc.Ready():
				t.Fatal("service became ready with wrong NATS settings")
			case <-time.After(15 * time.Second):
				t.Fatal("service neither failed nor became ready within 15s")
			}
		})
	}
}
