// Package service wires cpcancel together and runs it: NATS (embedded or remote), the streams
// and consumer, the API client, the handler, the worker pool and the operations HTTP server, with
// one shutdown order.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpcancel/cpcancel/internal/adaptive"
	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/follow"
	"github.com/cpcancel/cpcancel/internal/handler"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/tracing"
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
	tracing  *tracing.Provider // nil: off

	ready   chan struct{}
	natsURL string // set before ready is closed
	httpURL string // set before ready is closed
}

// New returns a Service for a validated configuration.
func New(cfg config.Config, build metrics.Build, log *slog.Logger) *Service {
	return &Service{cfg: cfg, build: build, log: log, registry: prometheus.NewRegistry(), ready: make(chan struct{})}
}

// WithTracing has the service trace requests with p and shut p down, exporting the spans it
// still holds, as the last step of its shutdown; log lines of a traced request then carry its
// trace_id and span_id. Call it before Run; a Provider with tracing off changes nothing.
func (s *Service) WithTracing(p *tracing.Provider) *Service {
	s.tracing = p
	if p.Tracer() != nil {
		s.log = slog.New(tracing.LogHandler(s.log.Handler()))
	}
	return s
}

// Ready is closed once the service is consuming requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// NATSURL is the URL of the NATS server in use; valid once Ready is closed.
func (s *Service) NATSURL() string { return s.natsURL }

// HTTPURL is the base URL of the operations server (/metrics, /healthz, /readyz); valid once Ready is closed.
func (s *Service) HTTPURL() string { return s.httpURL }

// Registry is the registry holding the service's metrics.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Run serves until ctx is done or a part of the service fails for good, then shuts down in the
// order shutdown lists. Errors of the setup name the variable at fault; ctx done during the
// setup (a SIGTERM while waiting for NATS) is a clean stop, nil.
func (s *Service) Run(ctx context.Context) error {
	r, err := s.setup(ctx)
	if err != nil && ctx.Err() != nil {
		// Asked to stop during start-up (while waiting for NATS, say): a clean stop.
		s.log.Info("stopped during start-up", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("cpcancel consuming", "nats", s.natsURL, "stream", s.cfg.Streams.RequestStream, "consumer", s.cfg.Streams.Consumer,
		"concurrency", s.cfg.Processing.Concurrency, "api", s.cfg.CloudPartner.BaseURL, "http", s.httpURL,
		"result_mode", s.cfg.Processing.ResultMode, "follow", s.cfg.Follow.Enabled)
	close(s.ready)
	r.run(ctx)
	return r.shutdown(ctx)
}

// running is what setup started and shutdown stops. Its fields are set in the order setup starts
// them; setup stops what it started when a later step fails.
type running struct {
	log      *slog.Logger
	ln       net.Listener   // of the HTTP server, which Serves it from run on
	embedded *server.Server // nil with a NATS URL
	nc       *nats.Conn
	pools    []*pool
	srv      *http.Server
	tracing  *tracing.Provider

	stopPools context.CancelFunc // set by run
	poolErrs  chan error         // one per pool, when it stopped

	// watch looks for what of the topology has gone while run runs.
	watch topologyWatch
}

// setup starts everything up to the point of taking messages: the HTTP listener, the embedded NATS
// server, the connection, the streams and consumers, the API client and the worker pools.
func (s *Service) setup(ctx context.Context) (_ *running, err error) {
	cfg := s.cfg
	r := &running{log: s.log, tracing: s.tracing}
	defer func() {
		if err != nil {
			r.abandon()
		}
	}()
	mode, err := natsce.ParseMode(cfg.Processing.ResultMode)
	if err != nil {
		return nil, fmt.Errorf("CPCANCEL_RESULT_MODE: %w", err)
	}
	outcomes := make([]string, len(cancelevent.Outcomes))
	for i, o := range cancelevent.Outcomes {
		outcomes[i] = string(o)
	}
	m := metrics.New(s.registry, s.build, outcomes...)

	if r.ln, err = net.Listen("tcp", cfg.HTTP.Addr); err != nil {
		return nil, fmt.Errorf("CPCANCEL_HTTP_ADDR: %w", err)
	}
	s.httpURL = httpURL(r.ln.Addr())

	url := cfg.NATS.URL
	if url == "" {
		if r.embedded, err = broker.StartEmbedded(cfg.NATS.EmbeddedListen, cfg.NATS.DataDir); err != nil {
			return nil, err
		}
		url = r.embedded.ClientURL()
		s.log.Info("embedded NATS server started", "url", url, "data_dir", cfg.NATS.DataDir)
	}
	security, err := broker.SecurityOptions(cfg.NATS)
	if err != nil {
		return nil, err
	}
	if r.nc, err = s.connect(ctx, url, security); err != nil {
		return nil, err
	}
	s.natsURL = r.nc.ConnectedUrlRedacted()

	js, err := jetstream.New(r.nc,
		// An ack that never comes (a stream leader change, a bucket that stopped answering) is
		// given up after the publish timeout, as every waiter does, instead of holding a place in
		// the window of outstanding publishes for good.
		jetstream.WithPublishAsyncTimeout(config.PublishTimeout),
		jetstream.WithPublishAsyncMaxPending(asyncWindow(cfg.Processing.Concurrency)))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	bind := broker.Bind
	if cfg.Streams.Provision {
		bind = broker.Provision
	}
	bound, err := bind(setupCtx, js, Topology(cfg))
	if err != nil {
		return nil, err
	}
	metrics.RegisterStorage(s.registry, streamUsage(js, storageStreams(cfg)))

	r.watch = topologyWatch{js: js, topology: Topology(cfg), provision: cfg.Streams.Provision, log: s.log, every: topologyCheck}
	var recreate func(context.Context) error // for a pool whose consumer is gone
	if cfg.Streams.Provision {
		recreate = r.watch.restore
	}
	if r.pools, err = s.newPools(setupCtx, js, bound, m, mode, recreate); err != nil {
		return nil, err
	}
	r.srv = &http.Server{Handler: s.routes(r.nc, r.consuming), ReadHeaderTimeout: 5 * time.Second}
	return r, nil
}

// newPools builds what processes messages, the API client, the request state, the results and
// the handler (and the follower, when following), and a worker pool over each consumer; recreate,
// when set, creates a pool's consumer again when it is gone.
func (s *Service) newPools(ctx context.Context, js jetstream.JetStream, bound broker.Bound, m *metrics.Metrics, mode natsce.Mode,
	recreate func(context.Context) error) ([]*pool, error) {
	cfg := s.cfg
	tokens, tokenDesc, err := tokenSource(cfg.CloudPartner)
	if err != nil {
		return nil, err
	}
	s.log.Info("Cloud Partner API credentials", "source", tokenDesc)
	tracer := s.tracing.Tracer() // nil: off
	limit := newLimit(cfg.Processing)
	floor, ceiling := limitBounds(cfg.Processing)
	metrics.RegisterConcurrencyLimit(s.registry, limit.Limit, floor, ceiling)
	api, err := cloudpartner.New(cloudpartner.Config{
		Tracer:  tracer,
		BaseURL: cfg.CloudPartner.BaseURL, APIVersion: cfg.CloudPartner.APIVersion, Tokens: tokens,
		Timeout: cfg.CloudPartner.HTTPTimeout, Observer: limitObserver{m, limit}, MaxIdleConns: cfg.Processing.Concurrency,
		Limits: cloudpartner.Limits{Rate: cfg.CloudPartner.APIRateLimit, Burst: 1, Concurrency: cfg.CloudPartner.APIConcurrency},
	})
	if err != nil {
		return nil, fmt.Errorf("CPCANCEL_CLOUDPARTNER_BASE_URL: %w", err)
	}
	// Credentials that cannot give a token would leave the service ready and every request
	// waiting for one: found at start, they stop it, named.
	if err := api.CheckToken(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", tokenDesc, err)
	}
	store := state.New(js, bound.Bucket, config.PublishTimeout)
	out := results.New(results.Config{SubjectPrefix: cfg.Streams.ResultSubjectPrefix, DeadLetterSubject: cfg.Streams.DeadLetterSubject,
		Mode: mode, Timeout: config.PublishTimeout, Logger: s.log, Tracer: tracer}, js, m)
	hcfg := handler.Config{
		Source: cfg.Processing.Source, MaxAttempts: cfg.Processing.MaxAttempts, MaxRequestBytes: cfg.Processing.MaxRequestBytes,
		Holder: holderName(), Lease: cfg.Lease(), CallBudget: cfg.CloudPartner.HTTPTimeout + config.PublishTimeout + skewMargin,
		Renew:           cfg.Lease() / 3,
		FollowFirstPoll: cfg.Follow.FirstPoll, FollowTimeout: cfg.Follow.Timeout, Logger: s.log, Tracer: tracer,
	}
	pools := []*pool{{name: "requests", consumer: bound.Requests, concurrency: cfg.Processing.Concurrency, limit: limit}}
	if cfg.Follow.Enabled {
		follower := follow.New(follow.Config{
			Subject: cfg.Follow.Subject, Source: cfg.Processing.Source, Interval: cfg.Follow.Interval, Timeout: cfg.Follow.Timeout,
			PublishTimeout: config.PublishTimeout, Logger: s.log, Tracer: tracer,
		}, api, store, js, out)
		hcfg.Follow = follower
		pools = append(pools, &pool{name: "follow", consumer: bound.Follow, concurrency: followConcurrency, decide: follower.Decide})
	}
	pools[0].decide = handler.New(hcfg, api, store, out, m).Decide
	for _, p := range pools {
		cfg := worker.Config{Concurrency: p.concurrency, Grace: cfg.Processing.ShutdownTimeout,
			Heartbeat: heartbeat, Logger: s.log, Name: p.name}
		if p.limit != nil {
			cfg.Limit = p.limit
		}
		cfg.Recreate = recreate
		p.Pool = worker.New(p.consumer, cfg)
	}
	return pools, nil
}

// abandon stops what a failed setup had started, the other way round.
func (r *running) abandon() {
	if r.nc != nil {
		r.nc.Close()
	}
	if r.embedded != nil {
		r.embedded.Shutdown()
		r.embedded.WaitForShutdown()
	}
	if r.ln != nil {
		r.ln.Close()
	}
}

// consuming reports whether every pool is taking messages, for /readyz.
func (r *running) consuming() bool {
	for _, p := range r.pools {
		if !p.Consuming() {
			return false
		}
	}
	return true
}

// run serves HTTP and has the pools take messages until ctx is done, a pool stops, or the HTTP
// server fails: the parts run whole or not at all.
func (r *running) run(ctx context.Context) {
	ctx, r.stopPools = context.WithCancel(ctx)
	go func() {
		if err := r.srv.Serve(r.ln); !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("HTTP server failed", "err", err)
			r.stopPools()
		}
	}()
	go r.watch.run(ctx)
	r.poolErrs = make(chan error, len(r.pools))
	for _, p := range r.pools {
		go func() {
			err := p.Run(ctx, p.decide)
			r.stopPools()
			r.poolErrs <- err
		}()
	}
	<-ctx.Done()
}

// Time the last steps of a shutdown may take.
const (
	drainTimeout        = 10 * time.Second
	httpShutdownTimeout = 5 * time.Second
	traceFlushTimeout   = 5 * time.Second
)

// shutdown stops the service in this order, each step once the one before has ended:
//
//  1. stop taking messages: the pools hand back (Nak) what they took and did not start;
//  2. let in-flight work finish within CPCANCEL_SHUTDOWN_TIMEOUT;
//  3. with it, the publish acks: a request is finished once JetStream acknowledged its state
//     writes and its result, and confirmed its Ack;
//  4. drain the NATS connection, which flushes what it still has to send, and close it;
//  5. stop the HTTP server (/readyz answers 503 from step 1 on);
//  6. stop the embedded NATS server, when there is one;
//  7. export the spans still held, when tracing.
//
// It returns the errors of the pools and of the steps.
func (r *running) shutdown(ctx context.Context) error {
	r.stopPools() // 1; already done when ctx is done
	var err error
	for range r.pools { // 2, 3: Pool.Run returns once its in-flight messages are settled
		err = errors.Join(err, <-r.poolErrs)
	}
	r.log.Info("stopped taking messages, in-flight work done; draining NATS connection")
	err = errors.Join(err, drain(r.nc, drainTimeout)) // 4
	r.nc.Close()                                      // when the drain timed out
	httpCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	err = errors.Join(err, r.srv.Shutdown(httpCtx)) // 5
	if r.embedded != nil {                          // 6
		r.embedded.Shutdown()
		r.embedded.WaitForShutdown()
	}
	traceCtx, cancelTrace := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
	defer cancelTrace()
	return errors.Join(err, r.tracing.Shutdown(traceCtx)) // 7
}

// asyncWindow is how many publishes may wait for their acks at once. Every worker waits on at
// most two (a state write or a result, and a lease renewal), so a window of twice the workers
// never stalls one: nats.go's default of 4,000 did at 4,096 requests in flight, and every
// publish then failed.
func asyncWindow(concurrency int) int {
	return 2*(concurrency+followConcurrency) + 64
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
	limit       *adaptive.Limiter // nil: concurrency is the limit
	decide      worker.DecideFunc
}

// holderName names this process in the leases it holds, for operators reading the bucket. A
// holder recognises its own claims by name, and a container restarted in its pod has the same
// host name and pid (often 1) as the one that died, with claims numbered from 1 again: the
// random part tells the two apart.
func holderName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32())
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
