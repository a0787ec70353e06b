// Package service wires cpcancel together and runs it: NATS (embedded or remote), the streams
// and consumer, the API client, the handler, the worker pool and the operations HTTP server, with
// one shutdown order.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

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
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	// ackWait is how long JetStream waits for news of a delivery before redelivering it. Workers
	// report progress every heartbeat, so it bounds how soon a crashed worker's message is
	// redelivered, not how long one request may take.
	ackWait   = 30 * time.Second
	heartbeat = ackWait / 3
	// followConcurrency bounds polls in flight; a poll is one short GET.
	followConcurrency = 4
	// skewMargin is added to the lease time a worker must have left to call the API: the
	// replicas' clocks may disagree by that much.
	skewMargin = 5 * time.Second
)

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

// Run serves until ctx is done, then shuts down in this order: stop taking messages (the pools
// hand back what they took and did not start), let in-flight requests finish (each waits for its
// state writes and its result's publish ack) within CPCANCEL_SHUTDOWN_TIMEOUT, drain the NATS
// connection, stop the HTTP server, stop the embedded NATS server.
func (s *Service) Run(ctx context.Context) (err error) {
	cfg := s.cfg
	mode, err := cenats.ParseMode(cfg.Processing.ResultMode)
	if err != nil {
		return fmt.Errorf("CPCANCEL_RESULT_MODE: %w", err)
	}
	outcomes := make([]string, len(cancelevent.Outcomes))
	for i, o := range cancelevent.Outcomes {
		outcomes[i] = string(o)
	}
	m := metrics.New(s.registry, s.build, outcomes...)

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
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

	url := cfg.NATS.URL
	if url == "" {
		embedded, err := broker.StartEmbedded(cfg.NATS.EmbeddedListen, cfg.NATS.DataDir)
		if err != nil {
			return err
		}
		url = embedded.ClientURL()
		s.log.Info("embedded NATS server started", "url", url, "data_dir", cfg.NATS.DataDir)
		defer func() {
			embedded.Shutdown()
			embedded.WaitForShutdown()
		}()
	}
	security, err := broker.SecurityOptions(cfg.NATS)
	if err != nil {
		return err
	}
	nc, err := s.connect(ctx, url, security)
	if err != nil {
		return err
	}
	defer nc.Close()
	s.natsURL = nc.ConnectedUrlRedacted()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	topo := Topology(cfg)
	bind := broker.Bind
	if cfg.Streams.Provision {
		bind = broker.Provision
	}
	bound, err := bind(setupCtx, js, topo)
	if err != nil {
		return err
	}
	metrics.RegisterStorage(s.registry, streamUsage(js, storageStreams(cfg)))

	tokens, tokenDesc, err := tokenSource(cfg.CloudPartner)
	if err != nil {
		return err
	}
	s.log.Info("Cloud Partner API credentials", "source", tokenDesc)
	api, err := cloudpartner.New(cloudpartner.Config{
		BaseURL: cfg.CloudPartner.BaseURL, APIVersion: cfg.CloudPartner.APIVersion, Tokens: tokens,
		Timeout: cfg.CloudPartner.HTTPTimeout, Observer: m, MaxIdleConns: cfg.Processing.Concurrency,
		Limits: cloudpartner.Limits{Rate: cfg.CloudPartner.APIRateLimit, Burst: 1, Concurrency: cfg.CloudPartner.APIConcurrency},
	})
	if err != nil {
		return fmt.Errorf("CPCANCEL_CLOUDPARTNER_BASE_URL: %w", err)
	}
	store := state.New(js, bound.Bucket, config.PublishTimeout)
	out := results.New(results.Config{SubjectPrefix: cfg.Streams.ResultSubjectPrefix, DeadLetterSubject: cfg.Streams.DeadLetterSubject,
		Mode: mode, Timeout: config.PublishTimeout, Logger: s.log}, js, m)
	hcfg := handler.Config{
		Source: cfg.Processing.Source, MaxAttempts: cfg.Processing.MaxAttempts, MaxRequestBytes: cfg.Processing.MaxRequestBytes,
		Holder: holderName(), Lease: cfg.Lease(), CallBudget: cfg.CloudPartner.HTTPTimeout + config.PublishTimeout + skewMargin,
		Renew:           cfg.Lease() / 3,
		FollowFirstPoll: cfg.Follow.FirstPoll, FollowTimeout: cfg.Follow.Timeout, Logger: s.log,
	}
	pools := []*pool{{name: "requests", consumer: bound.Requests, concurrency: cfg.Processing.Concurrency}}
	if cfg.Follow.Enabled {
		follower := follow.New(follow.Config{
			Subject: cfg.Follow.Subject, Source: cfg.Processing.Source, Interval: cfg.Follow.Interval, Timeout: cfg.Follow.Timeout,
			PublishTimeout: config.PublishTimeout, Logger: s.log,
		}, api, store, js, out)
		hcfg.Follow = follower
		pools = append(pools, &pool{name: "follow", consumer: bound.Follow, concurrency: followConcurrency, decide: follower.Decide})
	}
	pools[0].decide = handler.New(hcfg, api, store, out, m).Decide
	for _, p := range pools {
		p.Pool = worker.New(p.consumer, worker.Config{Concurrency: p.concurrency, Grace: cfg.Processing.ShutdownTimeout,
			Heartbeat: heartbeat, Logger: s.log, Name: p.name})
	}

	consuming := func() bool {
		for _, p := range pools {
			if !p.Consuming() {
				return false
			}
		}
		return true
	}
	srv := &http.Server{Handler: s.routes(nc, consuming), ReadHeaderTimeout: 5 * time.Second}
	httpErr := make(chan error, 1)
	serving = true
	go func() { httpErr <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Shutdown(sctx))
	}()

	s.log.Info("cpcancel consuming", "nats", s.natsURL, "stream", cfg.Streams.RequestStream, "consumer", cfg.Streams.Consumer,
		"concurrency", cfg.Processing.Concurrency, "api", cfg.CloudPartner.BaseURL, "http", s.httpURL, "result_mode", mode, "follow", cfg.Follow.Enabled)
	close(s.ready)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", err)
			stopRun()
		}
	}()
	// The pools run whole or not at all: one stopping stops the others.
	errs := make(chan error, len(pools))
	for _, p := range pools {
		go func() {
			err := p.Run(runCtx, p.decide)
			stopRun()
			errs <- err
		}()
	}
	var runErr error
	for range pools {
		runErr = errors.Join(runErr, <-errs)
	}
	s.log.Info("stopped taking messages, in-flight work done; draining NATS connection")
	if err := drain(nc, 10*time.Second); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return runErr
}

// startWait is how long a starting instance keeps trying a NATS server that is not there: long
// enough to ride out a NATS restart or a deploy of both at once, where exiting would put a
// supervisor's growing restart backoff on top.
const startWait = 2 * time.Minute

// connect dials NATS, trying again with backoff for up to startWait while no server answers.
// Other failures (TLS, credentials) end it at once: they will not heal by waiting.
func (s *Service) connect(ctx context.Context, url string, security []nats.Option) (*nats.Conn, error) {
	deadline := time.Now().Add(startWait)
	for delay := 250 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		nc, err := broker.Connect(url, "cpcancel", s.log, security...)
		if err == nil || !errors.Is(err, nats.ErrNoServers) || time.Now().Add(delay).After(deadline) {
			return nc, err
		}
		s.log.Warn("no NATS server answers yet; trying again", "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
	}
}

// pool is one consumer's worker pool and what decides its messages.
type pool struct {
	*worker.Pool
	name        string
	consumer    jetstream.Consumer
	concurrency int
	decide      worker.DecideFunc
}

// holderName names this process in the leases it holds, for operators reading the bucket.
func holderName() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}

// tokenSource is the static token, else the token file, else Azure credentials from the
// environment; it also says which, for the start-up log (never the secret).
func tokenSource(cfg config.CloudPartner) (cloudpartner.TokenSource, string, error) {
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
