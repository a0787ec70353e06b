// Package broker is cpcancel's NATS side: the connection, the embedded server of dev mode and
// single-binary installs, and the JetStream topology it needs (topology.go: streams, consumers and
// the bucket of request state, created, or checked when someone else manages them).
package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect dials NATS and keeps reconnecting for ever, logging connection changes.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler((&errorLog{log: log}).handle),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	var bad *neturl.Error
	if errors.As(err, &bad) {
		// It quotes the URL, password and all: say what is wrong without it.
		return nil, fmt.Errorf("connect to NATS: the server URL does not parse (CPCANCEL_NATS_URL or NATS_URL): %v", bad.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %s: %w", connectHint(err), err)
	}
	return nc, nil
}

// errorLog logs the errors NATS reports asynchronously, at most one line a second, each saying
// how many came since the last: a permissions violation comes once per message published, and a
// line for each would bury everything else.
type errorLog struct {
	log        *slog.Logger
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (e *errorLog) handle(_ *nats.Conn, sub *nats.Subscription, err error) {
	e.mu.Lock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < time.Second {
		e.suppressed++
		e.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed = now, 0
	e.mu.Unlock()
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	e.log.Error("NATS error", "subject", subject, "err", err, "more_since_last_logged", suppressed)
}

// connectHint says which settings to look at for a failed connect.
func connectHint(err error) string {
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.As(err, &verify):
		return "server certificate not trusted (CPCANCEL_NATS_CA names the CA that signed it)"
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert the server sent
		return "server refused the TLS handshake (CPCANCEL_NATS_CERT and CPCANCEL_NATS_KEY: a client certificate signed by a CA it trusts)"
	case errors.Is(err, nats.ErrTLS):
		// The server hung up right after the handshake: with TLS 1.3 that is how a refused client
		// certificate may look, when its alert arrives after our first write failed.
		return "server closed the connection after the TLS handshake (usually: CPCANCEL_NATS_CERT and CPCANCEL_NATS_KEY: a client certificate signed by a CA it trusts)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "server does not offer TLS (CPCANCEL_NATS_CA is set; check CPCANCEL_NATS_URL)"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return "server refused the credentials (CPCANCEL_NATS_CREDS or CPCANCEL_NATS_NKEY)"
	}
	return "check CPCANCEL_NATS_URL, and CPCANCEL_NATS_CA/CERT/KEY/CREDS/NKEY when set"
}
