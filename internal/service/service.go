// Package service wires cpcancel together and runs it: NATS (embedded or remote), the streams
// and consumer, the API client, the handler, the worker pool and the operations HTTP server, with
// one shutdown order.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cenats"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/follow"
	"github.com/cpcancel/cpcancel/internal/handler"
	"github.com/cpcancel/cpcancel/internal/idempotency"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	// publishTimeout bounds one result publish; a failed publish is retried by redelivery.
	publishTimeout = 5 * time.Second
	// ackWait is how long JetStream waits for news of a delivery before redelivering it. Workers
	// report progress every heartbeat, so it bounds how soon a crashed worker's message is
	// redelivered, not how long one request may take.
	ackWait   = 30 * time.Second
	heartbeat = ackWait / 3
	// followConcurrency bounds polls in flight; a poll is one short GET.
	followConcurrency = 4
)

// leaseTTL bounds how long one worker may hold a request: the longest legitimate processing of one
// delivery (an API call, its one retry after a 401, the record and the result publish) plus a
// margin. After a crash, the request waits this long at most before another worker may call the
// API for it.
func leaseTTL(cfg config.Config) time.Duration {
	return 2*cfg.HTTPTimeout + 2*publishTimeout + 5*time.Second
}

// Service is one cpcancel instance. Create it with New and call Run once.
type Service struct {
	cfg      config.Config
	build    metrics.Build
	log      *slog.Logger
	registry *prometheus.Registry

	ready   chan struct{}
	natsURL string // set before ready is closed
	httpURL string // set before ready is closed
}

// New returns a Service for a validated configuration.
func New(cfg config.Config, build metrics.Build, log *slog.Logger) *Service {
	return &Service{cfg: cfg, build: build, log: log, registry: prometheus.NewRegistry(), ready: make(chan struct{})}
}

// Ready is closed once the service is consuming requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// NATSURL is the URL of the NATS server in use; valid once Ready is closed.
func (s *Service) NATSURL() string { return s.natsURL }

// HTTPURL is the base URL of the operations server (/metrics, /healthz, /readyz); valid once Ready is closed.
func (s *Service) HTTPURL() string { return s.httpURL }

// Registry is the registry holding the service's metrics.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Run serves until ctx is done, then shuts down in order: stop pulling, let in-flight requests
// finish (each waits for its result's publish ack) within the grace period, drain the NATS
// connection, stop the HTTP server, stop the embedded NATS server.
func (s *Service) Run(ctx context.Context) (err error) {
	cfg := s.cfg
	mode, err := cenats.ParseMode(cfg.ResultMode)
	if err != nil {
		return fmt.Errorf("CPCANCEL_RESULT_MODE: %w", err)
	}
	outcomes := make([]string, len(cancelevent.Outcomes))
	for i, o := range cancelevent.Outcomes {
		outcomes[i] = string(o)
	}
	m := metrics.New(s.registry, s.build, outcomes...)

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("CPCANCEL_HTTP_ADDR: %w", err)
	}
	s.httpURL = httpURL(ln.Addr())
	serving := false
	defer func() {
		if !serving {
			ln.Close() // setup failed: the HTTP server never took the listener over
		}
	}()

	url := cfg.NATSURL
	var embedded *server.Server
	if url == "" {
		if embedded, err = broker.StartEmbedded(cfg.EmbeddedListen, cfg.DataDir); err != nil {
			return err
		}
		url = embedded.ClientURL()
		s.log.Info("embedded NATS server started", "url", url, "data_dir", cfg.DataDir)
		defer func() {
			embedded.Shutdown()
			embedded.WaitForShutdown()
		}()
	}
	security, err := broker.Security{CA: cfg.NATSCA, Cert: cfg.NATSCert, Key: cfg.NATSKey,
		Creds: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKey}.Options()
	if err != nil {
		return err
	}
	nc, err := broker.Connect(url, "cpcancel", s.log, security...)
	if err != nil {
		return err
	}
	defer nc.Close()
	s.natsURL = nc.ConnectedUrlRedacted()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	topo := Topology(cfg)
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	consumer, err := s.consumer(setupCtx, js, topo)
	if err != nil {
		return err
	}

	store, err := idempotency.Open(setupCtx, js, idempotency.Config{
		Bucket: cfg.IdempotencyKV, TTL: cfg.IdempotencyTTL, Lease: leaseTTL(cfg), Provision: cfg.Provision,
		Replicas: cfg.Replicas,
	})
	if err != nil {
		return err
	}
	tokens, tokenDesc, err := tokenSource(cfg)
	if err != nil {
		return err
	}
	s.log.Info("Cloud Partner API credentials", "source", tokenDesc)
	api, err := cloudpartner.New(cloudpartner.Config{
		BaseURL: cfg.BaseURL, APIVersion: cfg.APIVersion, Tokens: tokens,
		Timeout: cfg.HTTPTimeout, Observer: m, MaxIdleConns: cfg.Concurrency,
		Limits: cloudpartner.Limits{Rate: cfg.APIRateLimit, Burst: 1, Concurrency: cfg.APIConcurrency},
	})
	if err != nil {
		return fmt.Errorf("CPCANCEL_CLOUDPARTNER_BASE_URL: %w", err)
	}
	hcfg := handler.Config{
		Source: cfg.Source, ResultSubjectPrefix: cfg.ResultSubject, DeadLetterSubject: cfg.DeadLetter,
		Mode: mode, MaxAttempts: cfg.MaxAttempts, MaxRequestBytes: cfg.MaxRequestBytes,
		PublishTimeout: publishTimeout, Heartbeat: heartbeat, Logger: s.log,
	}
	var follower *follow.Follower
	var followPool *worker.Pool
	if cfg.Follow {
		follower = follow.New(follow.Config{
			Subject: cfg.FollowSubject, Source: cfg.Source, ResultSubjectPrefix: cfg.ResultSubject, Mode: mode,
			Interval: cfg.FollowInterval, Timeout: cfg.FollowTimeout, PublishTimeout: publishTimeout, Logger: s.log,
		}, api, js, m)
		hcfg.Follow = follower.Start
		fc, err := s.followConsumer(setupCtx, js, topo)
		if err != nil {
			return err
		}
		if followPool, err = worker.Start(fc, followConcurrency, cfg.ShutdownTimeout, s.log); err != nil {
			return err
		}
	}
	h := handler.New(hcfg, api, js, store, m)

	if err := s.watchExhausted(ctx, nc, js, h); err != nil {
		return err
	}
	pool, err := worker.Start(consumer, cfg.Concurrency, cfg.ShutdownTimeout, s.log)
	if err != nil {
		return err
	}
	consuming := func() bool { return pool.Consuming() && (followPool == nil || followPool.Consuming()) }
	srv := &http.Server{Handler: s.routes(nc, consuming), ReadHeaderTimeout: 5 * time.Second}
	httpErr := make(chan error, 1)
	serving = true
	go func() { httpErr <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Shutdown(sctx))
	}()

	s.log.Info("cpcancel consuming", "nats", s.natsURL, "stream", cfg.RequestStream, "consumer", cfg.Consumer,
		"concurrency", cfg.Concurrency, "api", cfg.BaseURL, "http", s.httpURL, "result_mode", mode, "follow", cfg.Follow)
	close(s.ready)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", err)
			stopRun()
		}
	}()
	followDone := make(chan error, 1)
	if followPool != nil {
		go func() {
			err := followPool.Run(runCtx, follower.Handle)
			stopRun() // the service runs whole or not at all
			followDone <- err
		}()
	} else {
		followDone <- nil
	}
	runErr := pool.Run(runCtx, h.Handle)
	stopRun()
	runErr = errors.Join(runErr, <-followDone)
	s.log.Info("stopped pulling; draining NATS connection")
	if err := drain(nc, 10*time.Second); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return runErr
}

func (s *Service) followConsumer(ctx context.Context, js jetstream.JetStream, topo broker.Topology) (jetstream.Consumer, error) {
	if s.cfg.Provision {
		return broker.ProvisionFollow(ctx, js, topo)
	}
	return broker.BindFollow(ctx, js, topo)
}

func (s *Service) consumer(ctx context.Context, js jetstream.JetStream, topo broker.Topology) (jetstream.Consumer, error) {
	if s.cfg.Provision {
		return broker.Provision(ctx, js, topo)
	}
	return broker.Bind(ctx, js, topo)
}

// watchExhausted subscribes to JetStream's max-deliveries advisory of the consumer, so that a
// request whose deliveries ran out without being settled (a worker crashing on it each time, a
// MaxDeliver set too low) still gets a failed result. Advisories are not stored: one sent while
// no replica runs is missed, and its request stays in the stream for an operator to see.
func (s *Service) watchExhausted(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, h *handler.Handler) error {
	cfg := s.cfg
	stream, err := js.Stream(ctx, cfg.RequestStream)
	if err != nil {
		return fmt.Errorf("request stream %s: %w", cfg.RequestStream, err)
	}
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", cfg.RequestStream, cfg.Consumer)
	_, err = nc.Subscribe(subject, func(m *nats.Msg) {
		var adv struct {
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
		}
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			s.log.Error("unreadable max-deliveries advisory", "err", err)
			return
		}
		s.log.Warn("request ran out of deliveries", "stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries)
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := h.Exhausted(actx, stream, cfg.RequestStream, adv.StreamSeq, adv.Deliveries); err != nil {
			s.log.Error("could not answer exhausted request", "stream_seq", adv.StreamSeq, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	return nil
}

// tokenSource is the static token, else the token file, else Azure credentials from the
// environment; it also says which, for the start-up log (never the secret).
func tokenSource(cfg config.Config) (cloudpartner.TokenSource, string, error) {
	switch {
	case cfg.Token != "":
		return cloudpartner.StaticToken(cfg.Token), "CPCANCEL_CLOUDPARTNER_TOKEN", nil
	case cfg.TokenFile != "":
		return cloudpartner.NewFileToken(cfg.TokenFile), "CPCANCEL_CLOUDPARTNER_TOKEN_FILE " + cfg.TokenFile, nil
	}
	cred, desc, err := cloudpartner.AzureCredential(os.Getenv, cloudpartner.AzureOptions{})
	if err != nil {
		return nil, "", err
	}
	return cloudpartner.NewAzureToken(cred, cfg.Scope), desc + ", scope " + cfg.Scope, nil
}

// drain flushes what the connection still has to send and closes it, waiting up to timeout.
func drain(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		return nil // already closed
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		return errors.New("NATS drain timed out")
	}
}

// httpURL names a listener the way a person on this machine reaches it.
func httpURL(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		return fmt.Sprintf("http://localhost:%d", tcp.Port)
	}
	return "http://" + a.String()
}
