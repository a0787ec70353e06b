// Package config reads cpcancel's configuration from CPCANCEL_* environment variables and checks
// it once at start, so that a bad value stops the service with a message naming the variable.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/cpcancel/cpcancel/internal/cloudpartner"
)

// Prefix is the prefix of every environment variable cpcancel reads.
const Prefix = "CPCANCEL"

// Config is the whole configuration of the service. Field tags are the contract of docs/contract.md §5.
type Config struct {
	NATSURL         string        `envconfig:"CPCANCEL_NATS_URL" desc:"NATS server URL(s), comma-separated (NATS_URL is read too); empty starts an embedded JetStream server"`
	NATSCA          string        `envconfig:"CPCANCEL_NATS_CA" desc:"PEM file of the CA that signed the NATS server's certificate (TLS)"`
	NATSCert        string        `envconfig:"CPCANCEL_NATS_CERT" desc:"PEM client certificate for NATS TLS (with CPCANCEL_NATS_KEY)"`
	NATSKey         string        `envconfig:"CPCANCEL_NATS_KEY" desc:"PEM private key of CPCANCEL_NATS_CERT"`
	NATSCreds       string        `envconfig:"CPCANCEL_NATS_CREDS" desc:"NATS credentials file (user JWT and NKey seed)"`
	NATSNKey        string        `envconfig:"CPCANCEL_NATS_NKEY" desc:"file holding a NATS user NKey seed (SU...)"`
	Replicas        int           `envconfig:"CPCANCEL_REPLICAS" default:"1" desc:"replicas of the streams and the idempotency bucket it provisions (3 on a JetStream cluster)"`
	EmbeddedListen  string        `envconfig:"CPCANCEL_EMBEDDED_LISTEN" default:"127.0.0.1:4222" desc:"host:port the embedded NATS server listens on when NATS_URL is empty"`
	DataDir         string        `envconfig:"CPCANCEL_DATA_DIR" default:"cpcancel-data" desc:"directory of the embedded server's JetStream file store"`
	Provision       bool          `envconfig:"CPCANCEL_PROVISION" default:"true" desc:"create or update the streams and the consumer at start; false binds to existing ones (e.g. managed by NACK)"`
	RequestSubject  string        `envconfig:"CPCANCEL_REQUEST_SUBJECT" default:"cloudpartner.cancel.requests" desc:"subject cancel requests are published on"`
	RequestStream   string        `envconfig:"CPCANCEL_REQUEST_STREAM" default:"CPCANCEL_REQUESTS" desc:"stream holding cancel requests"`
	Consumer        string        `envconfig:"CPCANCEL_CONSUMER" default:"cpcancel" desc:"durable pull consumer on the request stream"`
	ResultSubject   string        `envconfig:"CPCANCEL_RESULT_SUBJECT_PREFIX" default:"cloudpartner.cancel.results" desc:"results go to <prefix>.cancelled|cancelling|failed"`
	ResultStream    string        `envconfig:"CPCANCEL_RESULT_STREAM" default:"CPCANCEL_RESULTS" desc:"stream holding result events (<prefix>.>)"`
	DeadLetter      string        `envconfig:"CPCANCEL_DEADLETTER_SUBJECT" default:"cloudpartner.cancel.deadletter" desc:"subject for messages that are not cancel requests"`
	DeadLetterStrm  string        `envconfig:"CPCANCEL_DEADLETTER_STREAM" default:"CPCANCEL_DEADLETTER" desc:"stream holding dead letters"`
	Follow          bool          `envconfig:"CPCANCEL_FOLLOW" default:"false" desc:"after a 202, poll the operation until it ends and publish a second, final result"`
	FollowInterval  time.Duration `envconfig:"CPCANCEL_FOLLOW_INTERVAL" default:"1m" desc:"time between two polls of one operation"`
	FollowTimeout   time.Duration `envconfig:"CPCANCEL_FOLLOW_TIMEOUT" default:"2h" desc:"an operation still running after this is reported failed (follow_timeout)"`
	FollowFirstPoll time.Duration `envconfig:"CPCANCEL_FOLLOW_FIRST_POLL" default:"10s" desc:"delay before the first poll of an operation after a 202"`
	FollowSubject   string        `envconfig:"CPCANCEL_FOLLOW_SUBJECT" default:"cloudpartner.cancel.follow" desc:"subject of the follow tasks (with CPCANCEL_FOLLOW)"`
	FollowStream    string        `envconfig:"CPCANCEL_FOLLOW_STREAM" default:"CPCANCEL_FOLLOW" desc:"stream holding the follow tasks"`
	FollowConsumer  string        `envconfig:"CPCANCEL_FOLLOW_CONSUMER" default:"cpcancel-follow" desc:"durable pull consumer of the follow tasks"`
	BaseURL         string        `envconfig:"CPCANCEL_CLOUDPARTNER_BASE_URL" default:"https://cloudpartner.azure.com" desc:"Cloud Partner Portal API base URL; http:// only for a loopback host"`
	APIVersion      string        `envconfig:"CPCANCEL_CLOUDPARTNER_API_VERSION" default:"2017-10-31" desc:"api-version query parameter"`
	Token           string        `envconfig:"CPCANCEL_CLOUDPARTNER_TOKEN" desc:"bearer token for the API (never logged)"`
	TokenFile       string        `envconfig:"CPCANCEL_CLOUDPARTNER_TOKEN_FILE" desc:"file holding the bearer token, re-read when it changes (e.g. a mounted secret); with neither, Azure credentials (AZURE_*, workload or managed identity)"`
	Scope           string        `envconfig:"CPCANCEL_CLOUDPARTNER_SCOPE" default:"https://cloudpartner.azure.com/.default" desc:"OAuth scope of the tokens obtained with Azure credentials"`
	IdempotencyTTL  time.Duration `envconfig:"CPCANCEL_IDEMPOTENCY_TTL" default:"24h" desc:"how long a request's result is remembered: a re-sent request within it is answered without calling the API"`
	IdempotencyKV   string        `envconfig:"CPCANCEL_IDEMPOTENCY_BUCKET" default:"CPCANCEL_IDEMPOTENCY" desc:"KeyValue bucket of the idempotency records"`
	HTTPTimeout     time.Duration `envconfig:"CPCANCEL_HTTP_TIMEOUT" default:"30s" desc:"timeout of one API call"`
	APIRateLimit    float64       `envconfig:"CPCANCEL_API_RATE_LIMIT" default:"0" desc:"most API calls per second (token bucket, burst 1); 0 for no limit"`
	APIConcurrency  int           `envconfig:"CPCANCEL_API_CONCURRENCY" default:"0" desc:"most API calls in flight at once; 0 for no cap beyond CPCANCEL_CONCURRENCY"`
	MaxAttempts     int           `envconfig:"CPCANCEL_MAX_ATTEMPTS" default:"5" desc:"deliveries of a request before a transient failure becomes a failed result"`
	Concurrency     int           `envconfig:"CPCANCEL_CONCURRENCY" default:"32" desc:"requests processed at once"`
	MaxRequestBytes int           `envconfig:"CPCANCEL_MAX_REQUEST_BYTES" default:"65536" desc:"largest request message accepted; larger ones are dead-lettered"`
	ResultMode      string        `envconfig:"CPCANCEL_RESULT_MODE" default:"binary" desc:"CloudEvents content mode of results: binary or structured"`
	Source          string        `envconfig:"CPCANCEL_SOURCE" default:"/cpcancel" desc:"CloudEvents source of result events"`
	HTTPAddr        string        `envconfig:"CPCANCEL_HTTP_ADDR" default:":8080" desc:"listen address of /metrics, /healthz and /readyz"`
	ShutdownTimeout time.Duration `envconfig:"CPCANCEL_SHUTDOWN_TIMEOUT" default:"45s" desc:"grace period for in-flight requests on SIGTERM; at least CPCANCEL_HTTP_TIMEOUT + 10s"`
	LogLevel        string        `envconfig:"CPCANCEL_LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       string        `envconfig:"CPCANCEL_LOG_FORMAT" default:"text" desc:"text or json"`

	// Storage limits, in bytes. Every stream and the bucket is bounded, so that one of them filling
	// up never fills the JetStream store the others need.
	RequestMaxBytes     int64 `envconfig:"CPCANCEL_REQUEST_STREAM_MAX_BYTES" default:"1073741824" desc:"most bytes the request stream holds (1 GiB); when full, publishing a request fails"`
	ResultMaxBytes      int64 `envconfig:"CPCANCEL_RESULT_STREAM_MAX_BYTES" default:"4294967296" desc:"most bytes the result stream holds (4 GiB); when full, the oldest results are dropped"`
	DeadLetterMaxBytes  int64 `envconfig:"CPCANCEL_DEADLETTER_STREAM_MAX_BYTES" default:"1073741824" desc:"most bytes the dead-letter stream holds (1 GiB); when full, the oldest dead letters are dropped"`
	FollowMaxBytes      int64 `envconfig:"CPCANCEL_FOLLOW_STREAM_MAX_BYTES" default:"268435456" desc:"most bytes the follow stream holds (256 MiB); when full, scheduling a follow task fails"`
	IdempotencyMaxBytes int64 `envconfig:"CPCANCEL_IDEMPOTENCY_MAX_BYTES" default:"1073741824" desc:"most bytes the idempotency bucket holds (1 GiB)"`
}

// PublishTimeout bounds one publish of a result, or one write of a request's state, waiting for
// JetStream's acknowledgement.
const PublishTimeout = 5 * time.Second

// Lease is how long one worker may hold a request: the API call, its one retry after a 401, the
// state writes and the result publish, plus 10s of margin. After a crash, the request waits this
// long at most before another worker may call the API for it.
func (c Config) Lease() time.Duration {
	return 2*c.HTTPTimeout + 2*PublishTimeout + 10*time.Second
}

// Load reads the environment and validates the result. Every error names the variable at fault.
func Load() (Config, error) {
	c, err := Read()
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Read reads the environment without validating, for callers that adjust the result first.
// Tags hold full variable names and no prefix is given to envconfig: with a prefix it would fall
// back to the bare tag (LOG_LEVEL for CPCANCEL_LOG_LEVEL) and read other programs' settings.
// NATS_URL is the one shared variable docs/contract.md §5 asks for.
func Read() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		var perr *envconfig.ParseError
		if errors.As(err, &perr) {
			return Config{}, fmt.Errorf("%s: invalid value %q: want %s", perr.KeyName, perr.Value, perr.TypeName)
		}
		return Config{}, err
	}
	if _, set := os.LookupEnv(Prefix + "_NATS_URL"); !set {
		c.NATSURL = os.Getenv("NATS_URL")
	}
	return c, nil
}

// Validate reports every invalid setting at once, each naming its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s_%s: %s", Prefix, name, fmt.Sprintf(format, args...)))
	}
	if c.NATSURL == "" {
		if _, _, err := net.SplitHostPort(c.EmbeddedListen); err != nil {
			bad("EMBEDDED_LISTEN", "want host:port: %v", err)
		}
		if c.DataDir == "" {
			bad("DATA_DIR", "must not be empty when NATS_URL is empty")
		}
	}
	for _, f := range []struct{ name, file string }{
		{"NATS_CA", c.NATSCA}, {"NATS_CERT", c.NATSCert}, {"NATS_KEY", c.NATSKey}, {"NATS_CREDS", c.NATSCreds}, {"NATS_NKEY", c.NATSNKey},
	} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			bad(f.name, "%v", err)
		}
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		bad("NATS_CERT", "set it together with CPCANCEL_NATS_KEY")
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		bad("NATS_CREDS", "set either it or CPCANCEL_NATS_NKEY, not both")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("REPLICAS", "must be 1 to 5, got %d", c.Replicas)
	}
	if _, err := cloudpartner.ParseBaseURL(c.BaseURL); err != nil {
		bad("CLOUDPARTNER_BASE_URL", "%v", err)
	}
	if c.Scope == "" {
		bad("CLOUDPARTNER_SCOPE", "must not be empty")
	}
	if c.APIVersion == "" {
		bad("CLOUDPARTNER_API_VERSION", "must not be empty")
	}
	switch {
	case c.Token != "" && c.TokenFile != "":
		bad("CLOUDPARTNER_TOKEN", "set either it or CPCANCEL_CLOUDPARTNER_TOKEN_FILE, not both")
	case strings.ContainsAny(c.Token, " \t\r\n"):
		bad("CLOUDPARTNER_TOKEN", "must not contain white space")
	}
	if c.TokenFile != "" && c.Token == "" {
		if _, err := os.Stat(c.TokenFile); err != nil {
			bad("CLOUDPARTNER_TOKEN_FILE", "%v", err)
		}
	}
	for _, v := range []struct {
		name  string
		value int
	}{{"MAX_ATTEMPTS", c.MaxAttempts}, {"CONCURRENCY", c.Concurrency}, {"MAX_REQUEST_BYTES", c.MaxRequestBytes}} {
		if v.value < 1 {
			bad(v.name, "must be at least 1, got %d", v.value)
		}
	}
	if c.Concurrency > 4096 {
		bad("CONCURRENCY", "must be at most 4096, got %d", c.Concurrency)
	}
	if c.MaxAttempts > 100 {
		bad("MAX_ATTEMPTS", "must be at most 100, got %d", c.MaxAttempts)
	}
	if c.HTTPTimeout <= 0 {
		bad("HTTP_TIMEOUT", "must be positive, got %s", c.HTTPTimeout)
	}
	if c.APIRateLimit < 0 {
		bad("API_RATE_LIMIT", "must not be negative, got %g", c.APIRateLimit)
	}
	if c.APIConcurrency < 0 {
		bad("API_CONCURRENCY", "must not be negative, got %d", c.APIConcurrency)
	}
	if c.FollowInterval <= 0 {
		bad("FOLLOW_INTERVAL", "must be positive, got %s", c.FollowInterval)
	}
	if c.FollowTimeout <= 0 {
		bad("FOLLOW_TIMEOUT", "must be positive, got %s", c.FollowTimeout)
	}
	switch {
	case c.FollowFirstPoll <= 0:
		bad("FOLLOW_FIRST_POLL", "must be positive, got %s", c.FollowFirstPoll)
	case c.FollowTimeout > 0 && c.FollowFirstPoll > c.FollowTimeout:
		bad("FOLLOW_FIRST_POLL", "%s is longer than CPCANCEL_FOLLOW_TIMEOUT %s: the first poll would come after the operation's deadline", c.FollowFirstPoll, c.FollowTimeout)
	}
	if c.FollowInterval > 0 && c.FollowTimeout > 0 && c.FollowInterval > c.FollowTimeout {
		bad("FOLLOW_INTERVAL", "%s is longer than CPCANCEL_FOLLOW_TIMEOUT %s: an operation would be polled at most once", c.FollowInterval, c.FollowTimeout)
	}
	switch {
	case c.IdempotencyTTL < time.Minute:
		bad("IDEMPOTENCY_TTL", "must be at least 1m, got %s", c.IdempotencyTTL)
	case c.HTTPTimeout > 0 && c.IdempotencyTTL < c.Lease()+time.Minute:
		bad("IDEMPOTENCY_TTL", "%s does not outlive one worker's hold on a request (%s with CPCANCEL_HTTP_TIMEOUT %s) by 1m: want at least %s",
			c.IdempotencyTTL, c.Lease(), c.HTTPTimeout, c.Lease()+time.Minute)
	case c.Follow && c.FollowTimeout > 0 && c.FollowInterval > 0 && c.IdempotencyTTL < c.FollowTimeout+c.FollowInterval+time.Hour:
		bad("IDEMPOTENCY_TTL", "%s does not outlive following an operation (CPCANCEL_FOLLOW_TIMEOUT %s + CPCANCEL_FOLLOW_INTERVAL %s) by 1h: want at least %s",
			c.IdempotencyTTL, c.FollowTimeout, c.FollowInterval, c.FollowTimeout+c.FollowInterval+time.Hour)
	}
	switch {
	case c.ShutdownTimeout <= 0:
		bad("SHUTDOWN_TIMEOUT", "must be positive, got %s", c.ShutdownTimeout)
	case c.HTTPTimeout > 0 && c.ShutdownTimeout < c.HTTPTimeout+2*PublishTimeout:
		bad("SHUTDOWN_TIMEOUT", "%s does not cover one API call (CPCANCEL_HTTP_TIMEOUT %s) plus storing its result (%s): want at least %s",
			c.ShutdownTimeout, c.HTTPTimeout, 2*PublishTimeout, c.HTTPTimeout+2*PublishTimeout)
	}
	for _, v := range []struct {
		name  string
		value int64
	}{
		{"REQUEST_STREAM_MAX_BYTES", c.RequestMaxBytes}, {"RESULT_STREAM_MAX_BYTES", c.ResultMaxBytes},
		{"DEADLETTER_STREAM_MAX_BYTES", c.DeadLetterMaxBytes}, {"FOLLOW_STREAM_MAX_BYTES", c.FollowMaxBytes},
		{"IDEMPOTENCY_MAX_BYTES", c.IdempotencyMaxBytes},
	} {
		if v.value <= 0 {
			bad(v.name, "must be positive, got %d: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream", v.value)
		}
	}
	if c.ResultMode != "binary" && c.ResultMode != "structured" {
		bad("RESULT_MODE", "want binary or structured, got %q", c.ResultMode)
	}
	if c.Source == "" {
		bad("SOURCE", "must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("HTTP_ADDR", "want [host]:port: %v", err)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("LOG_FORMAT", "want text or json, got %q", c.LogFormat)
	}
	names := map[string]string{
		"REQUEST_SUBJECT": c.RequestSubject, "RESULT_SUBJECT_PREFIX": c.ResultSubject, "DEADLETTER_SUBJECT": c.DeadLetter,
		"REQUEST_STREAM": c.RequestStream, "RESULT_STREAM": c.ResultStream, "DEADLETTER_STREAM": c.DeadLetterStrm, "CONSUMER": c.Consumer,
		"IDEMPOTENCY_BUCKET": c.IdempotencyKV, "FOLLOW_SUBJECT": c.FollowSubject, "FOLLOW_STREAM": c.FollowStream,
		"FOLLOW_CONSUMER": c.FollowConsumer,
	}
	for _, name := range []string{"REQUEST_SUBJECT", "RESULT_SUBJECT_PREFIX", "DEADLETTER_SUBJECT", "FOLLOW_SUBJECT"} {
		if !validSubject(names[name]) {
			bad(name, "not a literal NATS subject: %q", names[name])
		}
	}
	for _, name := range []string{"REQUEST_STREAM", "RESULT_STREAM", "DEADLETTER_STREAM", "CONSUMER", "IDEMPOTENCY_BUCKET", "FOLLOW_STREAM", "FOLLOW_CONSUMER"} {
		if !validName(names[name]) {
			bad(name, "not a valid JetStream name: %q", names[name])
		}
	}
	return errors.Join(errs...)
}

// validSubject accepts literal subjects: dot-separated non-empty tokens without wildcards or spaces.
func validSubject(s string) bool {
	if s == "" {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// validName accepts stream and consumer names JetStream allows.
func validName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, ".*> \t\r\n/\\")
}

// Usage writes every variable with its default and description, for `consumer -h`.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	const format = "VARIABLE\tDEFAULT\tDESCRIPTION\n" +
		`{{range .}}{{usage_key .}}{{"\t"}}{{usage_default .}}{{"\t"}}{{usage_description .}}{{"\n"}}{{end}}`
	if err := envconfig.Usagef("", &Config{}, tw, format); err != nil {
		return err
	}
	return tw.Flush()
}
