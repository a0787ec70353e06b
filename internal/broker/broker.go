// Package broker is cpcancel's NATS side: the connection, the embedded server of dev mode and
// single-binary installs, and the JetStream streams and consumer it needs (created, or bound to
// when someone else manages them).
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Topology names the streams, subjects and consumer of SPEC §2–3 and sizes the consumer.
type Topology struct {
	RequestStream, RequestSubject       string
	ResultStream, ResultSubjectPrefix   string
	DeadLetterStream, DeadLetterSubject string
	Consumer                            string
	// AckWait is how long a delivered request may stay unacknowledged before redelivery.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one request.
	MaxDeliver int
	// MaxAckPending bounds requests handed out and not yet settled.
	MaxAckPending int
	// Replicas of each stream (and so of the consumer); 1 on a single server, 3 on a cluster.
	Replicas int
	// FollowStream, FollowSubject and FollowConsumer carry the follow tasks (CPCANCEL_FOLLOW);
	// empty when following is off. FollowAckWait outlasts one poll of an operation.
	FollowStream, FollowSubject, FollowConsumer string
	FollowAckWait                               time.Duration
}

// Streams returns the configurations of the request, result and dead-letter streams.
func (t Topology) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{{
		Name:        t.RequestStream,
		Description: "cpcancel: cancel requests, removed once handled",
		Subjects:    []string{t.RequestSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
	}, {
		Name:        t.ResultStream,
		Description: "cpcancel: result events",
		Subjects:    []string{t.ResultSubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		MaxAge:      7 * 24 * time.Hour,
		// Results are published with Nats-Msg-Id = event id: a re-publish inside this window is dropped.
		Duplicates: 10 * time.Minute,
	}, {
		Name:        t.DeadLetterStream,
		Description: "cpcancel: messages that are not cancel requests",
		Subjects:    []string{t.DeadLetterSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  10 * time.Minute,
	}}
}

// FollowStreamConfig is the work queue of follow tasks.
func (t Topology) FollowStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.FollowStream,
		Description: "cpcancel: operations to poll until they end",
		Subjects:    []string{t.FollowSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		MaxAge:      7 * 24 * time.Hour,
		// A follow task is published with Nats-Msg-Id follow:<result id>: scheduled once.
		Duplicates: 10 * time.Minute,
	}
}

// FollowConsumerConfig is the durable pull consumer of follow tasks. Deliveries are not bounded:
// a task is polled until its operation ends or its deadline passes.
func (t Topology) FollowConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       t.FollowConsumer,
		Description:   "cpcancel operation followers",
		FilterSubject: t.FollowSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.FollowAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}
}

// ConsumerConfig is the durable pull consumer on the request stream.
func (t Topology) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       t.Consumer,
		Description:   "cpcancel workers",
		FilterSubject: t.RequestSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		MaxAckPending: t.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Provision creates or updates the three streams and the consumer, and returns the consumer.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	for _, sc := range t.Streams() {
		if err := createOrUpdateStream(ctx, js, sc); err != nil {
			return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, t.RequestStream, t.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s on %s: %w", t.Consumer, t.RequestStream, err)
	}
	return c, nil
}

// createOrUpdateStream creates the stream, or updates it when it exists with another
// configuration. It asks to create first, unlike jetstream's CreateOrUpdateStream: when replicas
// start together on a JetStream cluster, an update that reaches the meta leader while another
// replica's create of the same stream is still being proposed is never answered (nats-server
// 2.15), and the replica gives up at its deadline; a create of an equal stream is answered.
func createOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		_, err = js.UpdateStream(ctx, cfg)
	}
	return err
}

// ProvisionFollow creates or updates the follow stream and its consumer.
func ProvisionFollow(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	if err := createOrUpdateStream(ctx, js, t.FollowStreamConfig()); err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", t.FollowStream, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, t.FollowStream, t.FollowConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s on %s: %w", t.FollowConsumer, t.FollowStream, err)
	}
	return c, nil
}

// BindFollow looks up the follow consumer managed by someone else.
func BindFollow(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, t.FollowStream, t.FollowConsumer)
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("follow consumer %q on stream %q (CPCANCEL_FOLLOW_CONSUMER, CPCANCEL_FOLLOW_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true", t.FollowConsumer, t.FollowStream)
	}
	if err != nil {
		return nil, fmt.Errorf("look up follow consumer %s: %w", t.FollowConsumer, err)
	}
	return c, nil
}

// Bind looks up streams and a consumer managed by someone else, failing with a message that
// says which one is missing and which variable names it.
func Bind(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	for _, s := range []struct{ name, variable string }{
		{t.RequestStream, "CPCANCEL_REQUEST_STREAM"},
		{t.ResultStream, "CPCANCEL_RESULT_STREAM"},
		{t.DeadLetterStream, "CPCANCEL_DEADLETTER_STREAM"},
	} {
		if _, err := js.Stream(ctx, s.name); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("stream %q (%s) does not exist: create it or set CPCANCEL_PROVISION=true", s.name, s.variable)
			}
			return nil, fmt.Errorf("look up stream %s: %w", s.name, err)
		}
	}
	c, err := js.Consumer(ctx, t.RequestStream, t.Consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("consumer %q (CPCANCEL_CONSUMER) does not exist on stream %q: create it or set CPCANCEL_PROVISION=true", t.Consumer, t.RequestStream)
		}
		return nil, fmt.Errorf("look up consumer %s: %w", t.Consumer, err)
	}
	return c, nil
}

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
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS error", "subject", subject, "err", err)
		}),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %s: %w", connectHint(err), err)
	}
	return nc, nil
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
