// Package config reads cpcancel's configuration from CPCANCEL_* environment variables and checks
// it once at start, so that a bad value stops the service with a message naming the variable.
//
// The variables come in groups, one struct per part of cpcancel. A field's tags are all there is
// to know about its variable: `envconfig` its full name, `default` its default and `desc` what it
// means. Read and Default, Usage (consumer -h) and the reference in docs/configuration.md all
// come from these tags, so that a default is written once.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"time"
)

// Prefix is the prefix of every environment variable cpcancel reads.
const Prefix = "CPCANCEL"

// Config is the whole configuration of the service, by group; docs/contract.md §5 is its contract.
// A field's name is its variable's name without CPCANCEL_ and without the group's name where the
// variable starts with it: Follow.Interval is CPCANCEL_FOLLOW_INTERVAL, Streams.ResultStream is
// CPCANCEL_RESULT_STREAM. A group's desc introduces it in docs/configuration.md.
type Config struct {
	NATS         NATS         `desc:"Where NATS is and how cpcancel proves itself to it; without a URL, cpcancel starts an embedded JetStream server."`
	Streams      Streams      `desc:"What cpcancel keeps in JetStream for requests, results and dead letters. Every stream and the bucket has a byte limit (the variables ending in _MAX_BYTES, plain byte counts, all positive), so that none can fill the store the others need."`
	Idempotency  Idempotency  `desc:"The bucket of request state, which answers a re-sent request without calling the API again."`
	CloudPartner CloudPartner `desc:"The Cloud Partner Portal API: where it is, the credentials for it, and how hard cpcancel may call it."`
	Processing   Processing   `desc:"How requests are worked on: how many at once, how often, how large, the result events, and the grace period at shutdown."`
	Follow       Follow       `desc:"Following an accepted (202) cancellation to its end, to publish a second, final result."`
	HTTP         HTTP         `desc:"The operations HTTP server."`
	Log          Log          `desc:"The service log, on standard error."`
}

// NATS is how cpcancel reaches NATS: a server's URL and the credentials cpcancel presents, or,
// without a URL, the embedded server it starts. broker.SecurityOptions turns it into connection
// options.
type NATS struct {
	URL            string `envconfig:"CPCANCEL_NATS_URL" desc:"NATS server URL(s), comma-separated (NATS_URL is read too); empty starts an embedded JetStream server"`
	CA             string `envconfig:"CPCANCEL_NATS_CA" desc:"PEM file of the CA that signed the NATS server's certificate (TLS)"`
	Cert           string `envconfig:"CPCANCEL_NATS_CERT" desc:"PEM client certificate for NATS TLS (with CPCANCEL_NATS_KEY)"`
	Key            string `envconfig:"CPCANCEL_NATS_KEY" desc:"PEM private key of CPCANCEL_NATS_CERT"`
	Creds          string `envconfig:"CPCANCEL_NATS_CREDS" desc:"NATS credentials file (user JWT and NKey seed)"`
	NKey           string `envconfig:"CPCANCEL_NATS_NKEY" desc:"file holding a NATS user NKey seed (SU...)"`
	EmbeddedListen string `envconfig:"CPCANCEL_EMBEDDED_LISTEN" default:"127.0.0.1:4222" desc:"host:port the embedded NATS server listens on when NATS_URL is empty"`
	DataDir        string `envconfig:"CPCANCEL_DATA_DIR" default:"cpcancel-data" desc:"directory of the embedded server's JetStream file store"`
}

// Streams names the subjects, streams and consumer of requests, results and dead letters, with
// the streams' byte limits, and says whether cpcancel creates them.
type Streams struct {
	Provision                bool   `envconfig:"CPCANCEL_PROVISION" default:"true" desc:"create or update the streams, consumers and bucket at start, and again when one is gone while running; false binds to existing ones (e.g. managed by NACK), checks the settings cpcancel relies on and fails naming everything missing or different"`
	Replicas                 int    `envconfig:"CPCANCEL_REPLICAS" default:"1" desc:"replicas of the streams and the idempotency bucket it provisions (3 on a JetStream cluster)"`
	RequestSubject           string `envconfig:"CPCANCEL_REQUEST_SUBJECT" default:"cloudpartner.cancel.requests" desc:"subject cancel requests are published on"`
	RequestStream            string `envconfig:"CPCANCEL_REQUEST_STREAM" default:"CPCANCEL_REQUESTS" desc:"stream holding cancel requests (a work queue, keeping a request CPCANCEL_IDEMPOTENCY_TTL at most)"`
	RequestStreamMaxBytes    int64  `envconfig:"CPCANCEL_REQUEST_STREAM_MAX_BYTES" default:"1073741824" desc:"most bytes the request stream holds (1 GiB); when full, publishing a request fails and no stored request is dropped"`
	Consumer                 string `envconfig:"CPCANCEL_CONSUMER" default:"cpcancel" desc:"durable pull consumer on the request stream"`
	ResultSubjectPrefix      string `envconfig:"CPCANCEL_RESULT_SUBJECT_PREFIX" default:"cloudpartner.cancel.results" desc:"results go to <prefix>.cancelled|cancelling|failed"`
	ResultStream             string `envconfig:"CPCANCEL_RESULT_STREAM" default:"CPCANCEL_RESULTS" desc:"stream holding result events (<prefix>.>) for 7 days"`
	ResultStreamMaxBytes     int64  `envconfig:"CPCANCEL_RESULT_STREAM_MAX_BYTES" default:"4294967296" desc:"most bytes the result stream holds (4 GiB); when full, the oldest results are dropped"`
	DeadLetterSubject        string `envconfig:"CPCANCEL_DEADLETTER_SUBJECT" default:"cloudpartner.cancel.deadletter" desc:"subject for messages that are not cancel requests"`
	DeadLetterStream         string `envconfig:"CPCANCEL_DEADLETTER_STREAM" default:"CPCANCEL_DEADLETTER" desc:"stream holding dead letters for 30 days"`
	DeadLetterStreamMaxBytes int64  `envconfig:"CPCANCEL_DEADLETTER_STREAM_MAX_BYTES" default:"1073741824" desc:"most bytes the dead-letter stream holds (1 GiB); when full, the oldest dead letters are dropped"`
}

// Idempotency is the KeyValue bucket holding each request's state and result.
type Idempotency struct {
	TTL      time.Duration `envconfig:"CPCANCEL_IDEMPOTENCY_TTL" default:"24h" desc:"how long a request's result is remembered: a re-sent request within it is answered without calling the API; at least 2 × CPCANCEL_HTTP_TIMEOUT + 1m20s, and with CPCANCEL_FOLLOW at least CPCANCEL_FOLLOW_TIMEOUT + CPCANCEL_FOLLOW_INTERVAL + 1h"`
	Bucket   string        `envconfig:"CPCANCEL_IDEMPOTENCY_BUCKET" default:"CPCANCEL_IDEMPOTENCY" desc:"KeyValue bucket of the idempotency records"`
	MaxBytes int64         `envconfig:"CPCANCEL_IDEMPOTENCY_MAX_BYTES" default:"1073741824" desc:"most bytes the idempotency bucket holds (1 GiB)"`
}

// CloudPartner is the Cloud Partner Portal API and the limits on calling it.
type CloudPartner struct {
	BaseURL        string        `envconfig:"CPCANCEL_CLOUDPARTNER_BASE_URL" default:"https://cloudpartner.azure.com" desc:"Cloud Partner Portal API base URL, at most 2,048 bytes; http:// only for a loopback host"`
	APIVersion     string        `envconfig:"CPCANCEL_CLOUDPARTNER_API_VERSION" default:"2017-10-31" desc:"api-version query parameter"`
	Token          string        `envconfig:"CPCANCEL_CLOUDPARTNER_TOKEN" desc:"bearer token for the API (never logged; sent only to the base URL's host, redirects are not followed)"`
	TokenFile      string        `envconfig:"CPCANCEL_CLOUDPARTNER_TOKEN_FILE" desc:"file holding the bearer token, re-read when it changes (e.g. a mounted secret) and after a 401; with neither, Azure credentials (AZURE_*, workload or managed identity)"`
	Scope          string        `envconfig:"CPCANCEL_CLOUDPARTNER_SCOPE" default:"https://cloudpartner.azure.com/.default" desc:"OAuth scope of the tokens obtained with Azure credentials"`
	HTTPTimeout    time.Duration `envconfig:"CPCANCEL_HTTP_TIMEOUT" default:"30s" desc:"timeout of one API call"`
	APIRateLimit   float64       `envconfig:"CPCANCEL_API_RATE_LIMIT" default:"0" desc:"most API calls per second (token bucket, burst 1); 0 for no limit"`
	APIConcurrency int           `envconfig:"CPCANCEL_API_CONCURRENCY" default:"0" desc:"most API calls in flight at once; 0 for no cap beyond CPCANCEL_CONCURRENCY"`
}

// Processing is how requests are worked on.
type Processing struct {
	Concurrency     int           `envconfig:"CPCANCEL_CONCURRENCY" default:"2048" desc:"most requests processed at once: the ceiling of the adaptive limit, which follows the API's latency and pushback (docs/performance.md)"`
	ConcurrencyMin  int           `envconfig:"CPCANCEL_CONCURRENCY_MIN" default:"8" desc:"floor of the adaptive limit, where it starts; equal to CPCANCEL_CONCURRENCY (or above) for a fixed limit"`
	MaxAttempts     int           `envconfig:"CPCANCEL_MAX_ATTEMPTS" default:"5" desc:"API calls made for a request (timeouts and transport errors included) before a transient failure becomes a failed result"`
	MaxRequestBytes int           `envconfig:"CPCANCEL_MAX_REQUEST_BYTES" default:"65536" desc:"largest request message accepted; larger ones are dead-lettered"`
	ResultMode      string        `envconfig:"CPCANCEL_RESULT_MODE" default:"binary" desc:"CloudEvents content mode of results: binary or structured"`
	Source          string        `envconfig:"CPCANCEL_SOURCE" default:"/cpcancel" desc:"CloudEvents source of result events"`
	ShutdownTimeout time.Duration `envconfig:"CPCANCEL_SHUTDOWN_TIMEOUT" default:"45s" desc:"grace period for in-flight requests on SIGTERM; at least CPCANCEL_HTTP_TIMEOUT + 10s (one API call and storing its result)"`
}

// Follow is following accepted operations to their end (CPCANCEL_FOLLOW) and where the follow
// tasks wait.
type Follow struct {
	Enabled        bool          `envconfig:"CPCANCEL_FOLLOW" default:"false" desc:"after a 202, poll the operation until it ends and publish a second, final result"`
	FirstPoll      time.Duration `envconfig:"CPCANCEL_FOLLOW_FIRST_POLL" default:"10s" desc:"delay before the first poll of an operation after a 202; at most CPCANCEL_FOLLOW_TIMEOUT"`
	Interval       time.Duration `envconfig:"CPCANCEL_FOLLOW_INTERVAL" default:"1m" desc:"time between two polls of one operation; at most CPCANCEL_FOLLOW_TIMEOUT"`
	Timeout        time.Duration `envconfig:"CPCANCEL_FOLLOW_TIMEOUT" default:"2h" desc:"an operation still running after this is reported failed (follow_timeout)"`
	Subject        string        `envconfig:"CPCANCEL_FOLLOW_SUBJECT" default:"cloudpartner.cancel.follow" desc:"subject of the follow tasks (with CPCANCEL_FOLLOW)"`
	Stream         string        `envconfig:"CPCANCEL_FOLLOW_STREAM" default:"CPCANCEL_FOLLOW" desc:"stream holding the follow tasks (a work queue, keeping a task CPCANCEL_FOLLOW_TIMEOUT + 24h at most)"`
	Consumer       string        `envconfig:"CPCANCEL_FOLLOW_CONSUMER" default:"cpcancel-follow" desc:"durable pull consumer of the follow tasks"`
	StreamMaxBytes int64         `envconfig:"CPCANCEL_FOLLOW_STREAM_MAX_BYTES" default:"268435456" desc:"most bytes the follow stream holds (256 MiB); when full, scheduling a follow task fails"`
}

// HTTP is the server of /metrics, /healthz and /readyz.
type HTTP struct {
	Addr string `envconfig:"CPCANCEL_HTTP_ADDR" default:":8080" desc:"listen address of /metrics, /healthz and /readyz"`
}

// Log is the service log; Logger builds it.
type Log struct {
	Level  string `envconfig:"CPCANCEL_LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	Format string `envconfig:"CPCANCEL_LOG_FORMAT" default:"text" desc:"text or json"`
}

// PublishTimeout bounds one publish cpcancel waits on: of a result, of a request's state, of a
// follow task, or of a request by consumer publish, waiting for JetStream's acknowledgement.
const PublishTimeout = 5 * time.Second

// Lease is how long one worker may hold a request: the API call, its one retry after a 401, the
// state writes and the result publish, plus 10s of margin. After a crash, the request waits this
// long at most before another worker may call the API for it.
func (c Config) Lease() time.Duration {
	return 2*c.CloudPartner.HTTPTimeout + 2*PublishTimeout + 10*time.Second
}

// Load reads the configuration through lookup (os.LookupEnv in the service) and validates it.
// Every error names the variable at fault.
func Load(lookup func(string) (string, bool)) (Config, error) {
	c, err := Read(lookup)
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate reports every invalid setting at once, each naming its variable: each group's
// problems in the order of the groups, then those of the rules that tie groups together. The
// order is the same run after run.
func (c Config) Validate() error {
	var p problems
	for _, err := range []error{
		c.NATS.Validate(), c.Streams.Validate(), c.Idempotency.Validate(), c.CloudPartner.Validate(),
		c.Processing.Validate(), c.Follow.Validate(), c.HTTP.Validate(), c.Log.Validate(),
	} {
		p.merge(err)
	}
	httpTimeout, ttl := c.CloudPartner.HTTPTimeout, c.Idempotency.TTL
	if ttl >= minTTL { // shorter is reported by Idempotency.Validate
		f := c.Follow
		switch {
		case httpTimeout > 0 && ttl < c.Lease()+time.Minute:
			p.add("CPCANCEL_IDEMPOTENCY_TTL", "%s does not outlive one worker's hold on a request (%s with CPCANCEL_HTTP_TIMEOUT %s) by 1m: want at least %s",
				ttl, c.Lease(), httpTimeout, c.Lease()+time.Minute)
		case f.Enabled && f.Timeout > 0 && f.Interval > 0 && ttl < f.Timeout+f.Interval+time.Hour:
			p.add("CPCANCEL_IDEMPOTENCY_TTL", "%s does not outlive following an operation (CPCANCEL_FOLLOW_TIMEOUT %s + CPCANCEL_FOLLOW_INTERVAL %s) by 1h: want at least %s",
				ttl, f.Timeout, f.Interval, f.Timeout+f.Interval+time.Hour)
		}
	}
	if shutdown := c.Processing.ShutdownTimeout; shutdown > 0 && httpTimeout > 0 && shutdown < httpTimeout+2*PublishTimeout {
		p.add("CPCANCEL_SHUTDOWN_TIMEOUT", "%s does not cover one API call (CPCANCEL_HTTP_TIMEOUT %s) plus storing its result (%s): want at least %s",
			shutdown, httpTimeout, 2*PublishTimeout, httpTimeout+2*PublishTimeout)
	}
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable.
func (n NATS) Validate() error {
	var p problems
	if n.URL == "" {
		if _, _, err := net.SplitHostPort(n.EmbeddedListen); err != nil {
			p.add("CPCANCEL_EMBEDDED_LISTEN", "want host:port: %v", err)
		}
		if n.DataDir == "" {
			p.add("CPCANCEL_DATA_DIR", "must not be empty when NATS_URL is empty")
		}
	}
	p.file("CPCANCEL_NATS_CA", n.CA)
	p.file("CPCANCEL_NATS_CERT", n.Cert)
	p.file("CPCANCEL_NATS_KEY", n.Key)
	p.file("CPCANCEL_NATS_CREDS", n.Creds)
	p.file("CPCANCEL_NATS_NKEY", n.NKey)
	if (n.Cert == "") != (n.Key == "") {
		p.add("CPCANCEL_NATS_CERT", "set it together with CPCANCEL_NATS_KEY")
	}
	if n.Creds != "" && n.NKey != "" {
		p.add("CPCANCEL_NATS_CREDS", "set either it or CPCANCEL_NATS_NKEY, not both")
	}
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable.
func (s Streams) Validate() error {
	var p problems
	if s.Replicas < 1 || s.Replicas > 5 {
		p.add("CPCANCEL_REPLICAS", "must be 1 to 5, got %d", s.Replicas)
	}
	p.subject("CPCANCEL_REQUEST_SUBJECT", s.RequestSubject)
	p.name("CPCANCEL_REQUEST_STREAM", s.RequestStream)
	p.maxBytes("CPCANCEL_REQUEST_STREAM_MAX_BYTES", s.RequestStreamMaxBytes)
	p.name("CPCANCEL_CONSUMER", s.Consumer)
	p.subject("CPCANCEL_RESULT_SUBJECT_PREFIX", s.ResultSubjectPrefix)
	p.name("CPCANCEL_RESULT_STREAM", s.ResultStream)
	p.maxBytes("CPCANCEL_RESULT_STREAM_MAX_BYTES", s.ResultStreamMaxBytes)
	p.subject("CPCANCEL_DEADLETTER_SUBJECT", s.DeadLetterSubject)
	p.name("CPCANCEL_DEADLETTER_STREAM", s.DeadLetterStream)
	p.maxBytes("CPCANCEL_DEADLETTER_STREAM_MAX_BYTES", s.DeadLetterStreamMaxBytes)
	return p.err()
}

// minTTL is the shortest CPCANCEL_IDEMPOTENCY_TTL, whatever the other settings.
const minTTL = time.Minute

// Validate reports the group's invalid settings, each naming its variable. Whether the TTL
// outlives a request's processing depends on other groups: Config.Validate checks that.
func (i Idempotency) Validate() error {
	var p problems
	if i.TTL < minTTL {
		p.add("CPCANCEL_IDEMPOTENCY_TTL", "must be at least 1m, got %s", i.TTL)
	}
	p.name("CPCANCEL_IDEMPOTENCY_BUCKET", i.Bucket)
	p.maxBytes("CPCANCEL_IDEMPOTENCY_MAX_BYTES", i.MaxBytes)
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable; never the token.
func (a CloudPartner) Validate() error {
	var p problems
	if _, err := ParseBaseURL(a.BaseURL); err != nil {
		p.add("CPCANCEL_CLOUDPARTNER_BASE_URL", "%v", err)
	}
	if a.APIVersion == "" {
		p.add("CPCANCEL_CLOUDPARTNER_API_VERSION", "must not be empty")
	}
	switch {
	case a.Token != "" && a.TokenFile != "":
		p.add("CPCANCEL_CLOUDPARTNER_TOKEN", "set either it or CPCANCEL_CLOUDPARTNER_TOKEN_FILE, not both")
	case strings.ContainsFunc(a.Token, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		// As the client would refuse to send it, every request would wait for another token.
		p.add("CPCANCEL_CLOUDPARTNER_TOKEN", "must be printable ASCII without white space, as an HTTP header needs")
	}
	if a.TokenFile != "" && a.Token == "" {
		p.file("CPCANCEL_CLOUDPARTNER_TOKEN_FILE", a.TokenFile)
	}
	if a.Scope == "" {
		p.add("CPCANCEL_CLOUDPARTNER_SCOPE", "must not be empty")
	}
	if a.HTTPTimeout <= 0 {
		p.add("CPCANCEL_HTTP_TIMEOUT", "must be positive, got %s", a.HTTPTimeout)
	}
	if a.APIRateLimit < 0 || math.IsNaN(a.APIRateLimit) || math.IsInf(a.APIRateLimit, 0) {
		p.add("CPCANCEL_API_RATE_LIMIT", "must be a finite number, not negative, got %g", a.APIRateLimit)
	}
	if a.APIConcurrency < 0 {
		p.add("CPCANCEL_API_CONCURRENCY", "must not be negative, got %d", a.APIConcurrency)
	}
	return p.err()
}

// maxConcurrency bounds CPCANCEL_CONCURRENCY: each request in flight costs 50–100 KiB, so the
// most in flight stays within 1.6 GiB.
const maxConcurrency = 16384

// Validate reports the group's invalid settings, each naming its variable. Whether the shutdown
// grace period covers an API call depends on CPCANCEL_HTTP_TIMEOUT: Config.Validate checks that.
func (r Processing) Validate() error {
	var p problems
	p.between("CPCANCEL_CONCURRENCY", r.Concurrency, 1, maxConcurrency)
	p.between("CPCANCEL_CONCURRENCY_MIN", r.ConcurrencyMin, 1, maxConcurrency)
	p.between("CPCANCEL_MAX_ATTEMPTS", r.MaxAttempts, 1, 100)
	if r.MaxRequestBytes < 1 {
		p.add("CPCANCEL_MAX_REQUEST_BYTES", "must be at least 1, got %d", r.MaxRequestBytes)
	}
	if r.ResultMode != "binary" && r.ResultMode != "structured" {
		p.add("CPCANCEL_RESULT_MODE", "want binary or structured, got %q", r.ResultMode)
	}
	if r.Source == "" {
		p.add("CPCANCEL_SOURCE", "must not be empty")
	}
	if r.ShutdownTimeout <= 0 {
		p.add("CPCANCEL_SHUTDOWN_TIMEOUT", "must be positive, got %s", r.ShutdownTimeout)
	}
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable. The names and limits
// of the follow tasks are checked when following is off too: turning it on must not fail.
func (f Follow) Validate() error {
	var p problems
	switch {
	case f.FirstPoll <= 0:
		p.add("CPCANCEL_FOLLOW_FIRST_POLL", "must be positive, got %s", f.FirstPoll)
	case f.Timeout > 0 && f.FirstPoll > f.Timeout:
		p.add("CPCANCEL_FOLLOW_FIRST_POLL", "%s is longer than CPCANCEL_FOLLOW_TIMEOUT %s: the first poll would come after the operation's deadline", f.FirstPoll, f.Timeout)
	}
	switch {
	case f.Interval <= 0:
		p.add("CPCANCEL_FOLLOW_INTERVAL", "must be positive, got %s", f.Interval)
	case f.Timeout > 0 && f.Interval > f.Timeout:
		p.add("CPCANCEL_FOLLOW_INTERVAL", "%s is longer than CPCANCEL_FOLLOW_TIMEOUT %s: an operation would be polled at most once", f.Interval, f.Timeout)
	}
	if f.Timeout <= 0 {
		p.add("CPCANCEL_FOLLOW_TIMEOUT", "must be positive, got %s", f.Timeout)
	}
	p.subject("CPCANCEL_FOLLOW_SUBJECT", f.Subject)
	p.name("CPCANCEL_FOLLOW_STREAM", f.Stream)
	p.name("CPCANCEL_FOLLOW_CONSUMER", f.Consumer)
	p.maxBytes("CPCANCEL_FOLLOW_STREAM_MAX_BYTES", f.StreamMaxBytes)
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable.
func (h HTTP) Validate() error {
	var p problems
	if _, _, err := net.SplitHostPort(h.Addr); err != nil {
		p.add("CPCANCEL_HTTP_ADDR", "want [host]:port: %v", err)
	}
	return p.err()
}

// Validate reports the group's invalid settings, each naming its variable.
func (l Log) Validate() error {
	var p problems
	if _, err := ParseLogLevel(l.Level); err != nil {
		p.add("CPCANCEL_LOG_LEVEL", "%v", err)
	}
	if l.Format != "text" && l.Format != "json" {
		p.add("CPCANCEL_LOG_FORMAT", "want text or json, got %q", l.Format)
	}
	return p.err()
}

// problems gathers validation errors in the order they are found, each naming its variable.
type problems []error

func (p *problems) add(variable, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", variable, fmt.Sprintf(format, args...)))
}

// merge adds the errors of a group's Validate, one by one.
func (p *problems) merge(err error) {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		*p = append(*p, joined.Unwrap()...)
	} else if err != nil {
		*p = append(*p, err)
	}
}

func (p problems) err() error { return errors.Join(p...) }

// file checks that a file named by a variable exists, when it is set.
func (p *problems) file(variable, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		p.add(variable, "%v", err)
	}
}

func (p *problems) between(variable string, v, least, most int) {
	switch {
	case v < least:
		p.add(variable, "must be at least %d, got %d", least, v)
	case v > most:
		p.add(variable, "must be at most %d, got %d", most, v)
	}
}

// maxBytes checks a stream's or the bucket's byte limit.
func (p *problems) maxBytes(variable string, v int64) {
	if v <= 0 {
		p.add(variable, "must be positive, got %d: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream", v)
	}
}

// subject accepts literal subjects: dot-separated non-empty tokens without wildcards or spaces.
func (p *problems) subject(variable, s string) {
	valid := s != ""
	for tok := range strings.SplitSeq(s, ".") {
		valid = valid && tok != "" && !strings.ContainsAny(tok, "*> \t\r\n")
	}
	if !valid {
		p.add(variable, "not a literal NATS subject: %q", s)
	}
}

// name accepts the stream, consumer and bucket names JetStream allows.
func (p *problems) name(variable, s string) {
	if s == "" || len(s) > 255 || strings.ContainsAny(s, ".*> \t\r\n/\\") {
		p.add(variable, "not a valid JetStream name: %q", s)
	}
}
