package config_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/cpcancel/cpcancel/internal/config"
)

// secret is the token every test sets; no error message may contain any part of it.
const secret = "s3cret-token-value"

// env is an environment for Load, given as name/value pairs; nothing else is set in it.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// defaults is the configuration docs/contract.md §5 and the field tags promise when nothing but the token is set.
var defaults = config.Config{
	NATS: config.NATS{
		EmbeddedListen: "127.0.0.1:4222",
		DataDir:        "cpcancel-data",
	},
	Streams: config.Streams{
		Provision:                true,
		Replicas:                 1,
		RequestSubject:           "cloudpartner.cancel.requests",
		RequestStream:            "CPCANCEL_REQUESTS",
		RequestStreamMaxBytes:    1 << 30,
		Consumer:                 "cpcancel",
		ResultSubjectPrefix:      "cloudpartner.cancel.results",
		ResultStream:             "CPCANCEL_RESULTS",
		ResultStreamMaxBytes:     4 << 30,
		DeadLetterSubject:        "cloudpartner.cancel.deadletter",
		DeadLetterStream:         "CPCANCEL_DEADLETTER",
		DeadLetterStreamMaxBytes: 1 << 30,
	},
	Idempotency: config.Idempotency{
		TTL:      24 * time.Hour,
		Bucket:   "CPCANCEL_IDEMPOTENCY",
		MaxBytes: 1 << 30,
	},
	CloudPartner: config.CloudPartner{
		BaseURL:     "https://cloudpartner.azure.com",
		APIVersion:  "2017-10-31",
		Token:       secret,
		Scope:       "https://cloudpartner.azure.com/.default",
		HTTPTimeout: 30 * time.Second,
	},
	Processing: config.Processing{
		Concurrency:     2048,
		ConcurrencyMin:  8,
		MaxAttempts:     5,
		MaxRequestBytes: 65536,
		ResultMode:      "binary",
		Source:          "/cpcancel",
		ShutdownTimeout: 45 * time.Second,
	},
	Follow: config.Follow{
		FirstPoll:      10 * time.Second,
		Interval:       time.Minute,
		Timeout:        2 * time.Hour,
		Subject:        "cloudpartner.cancel.follow",
		Stream:         "CPCANCEL_FOLLOW",
		Consumer:       "cpcancel-follow",
		StreamMaxBytes: 256 << 20,
	},
	HTTP: config.HTTP{Addr: ":8080"},
	Log:  config.Log{Level: "info", Format: "text"},
}

func TestLoadDefaults(t *testing.T) {
	got, err := config.Load(env("CPCANCEL_CLOUDPARTNER_TOKEN", secret))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got != defaults {
		t.Errorf("Load with only the token set:\n got %+v\nwant %+v", got, defaults)
	}
}

// Default is what the other packages take cpcancel's default names from.
func TestDefault(t *testing.T) {
	want := defaults
	want.CloudPartner.Token = ""
	if got := config.Default(); got != want {
		t.Errorf("Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadNATSURL(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"NATS_URL alone", []string{"NATS_URL", "nats://a:4222"}, "nats://a:4222"},
		{"CPCANCEL_NATS_URL alone", []string{"CPCANCEL_NATS_URL", "nats://b:4222"}, "nats://b:4222"},
		{"CPCANCEL_NATS_URL wins", []string{"NATS_URL", "nats://a:4222", "CPCANCEL_NATS_URL", "nats://b:4222"}, "nats://b:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(env(append(tt.env, "CPCANCEL_CLOUDPARTNER_TOKEN", secret)...))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.NATS.URL != tt.want {
				t.Errorf("NATS.URL = %q, want %q", c.NATS.URL, tt.want)
			}
		})
	}
}

// Only NATS_URL is shared with other programs (docs/contract.md §5); a LOG_LEVEL or SOURCE meant for
// something else in the same environment must not change, or stop, cpcancel.
func TestLoadIgnoresUnprefixedVariables(t *testing.T) {
	got, err := config.Load(env("CPCANCEL_CLOUDPARTNER_TOKEN", secret,
		"LOG_LEVEL", "trace", "LOG_FORMAT", "logfmt", "SOURCE", "/elsewhere", "CONSUMER", "other",
		"CONCURRENCY", "7", "HTTP_ADDR", "8080", "DATA_DIR", "/var/lib/other", "CLOUDPARTNER_TOKEN_FILE", "/tmp/x",
		// What envconfig would look for first, were the groups' names prefixes.
		"NATS_CPCANCEL_NATS_URL", "nats://other:4222", "LOG_CPCANCEL_LOG_LEVEL", "trace"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got != defaults {
		t.Errorf("Load read unprefixed variables:\n got %+v\nwant %+v", got, defaults)
	}
}

// invalidCase is one line of testdata/invalid.txt.
type invalidCase struct {
	line        int
	name, value string
	want        string
}

func readInvalidCases(t *testing.T) []invalidCase {
	t.Helper()
	f, err := os.Open("testdata/invalid.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []invalidCase
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		assignment, want, ok1 := strings.Cut(line, " -> ")
		name, value, ok2 := strings.Cut(assignment, "=")
		if !ok1 || !ok2 || want == "" {
			t.Fatalf("testdata/invalid.txt:%d: want VAR=value -> error, got %q", n, line)
		}
		cases = append(cases, invalidCase{line: n, name: name, value: value, want: want})
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestLoadInvalid(t *testing.T) {
	cases := readInvalidCases(t)
	if len(cases) < 30 {
		t.Fatalf("read only %d cases from testdata/invalid.txt", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			_, err := config.Load(env("CPCANCEL_CLOUDPARTNER_TOKEN", secret, tc.name, tc.value))
			if err == nil {
				t.Fatalf("testdata/invalid.txt:%d: Load succeeded, want %q", tc.line, tc.want)
			}
			msg := err.Error()
			// Exactly one complaint, about the variable that was set.
			if lines := strings.Split(msg, "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("testdata/invalid.txt:%d: Load error:\n%s\nwant one line starting with %q", tc.line, msg, tc.want)
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("error shows the token: %s", msg)
			}
		})
	}
}

// Without a token or a token file, cpcancel uses Azure credentials: that is not an error.
func TestLoadWithoutToken(t *testing.T) {
	c, err := config.Load(env()) // neither CPCANCEL_CLOUDPARTNER_TOKEN nor CPCANCEL_CLOUDPARTNER_TOKEN_FILE
	if err != nil || c.CloudPartner.Token != "" || c.CloudPartner.TokenFile != "" {
		t.Errorf("Load without a token: %+v, %v; want Azure credentials to be used", c, err)
	}
}

// A value that is invalid in one setting is fine in another; Validate must not be stricter than the contract.
func TestLoadValid(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		want func(*config.Config) // applied to a copy of defaults
	}{
		{"http on 127.0.0.1", []string{"CPCANCEL_CLOUDPARTNER_BASE_URL", "http://127.0.0.1:8081"},
			func(c *config.Config) { c.CloudPartner.BaseURL = "http://127.0.0.1:8081" }},
		{"http on localhost", []string{"CPCANCEL_CLOUDPARTNER_BASE_URL", "http://localhost:8081"},
			func(c *config.Config) { c.CloudPartner.BaseURL = "http://localhost:8081" }},
		{"http on ::1", []string{"CPCANCEL_CLOUDPARTNER_BASE_URL", "http://[::1]:8081"},
			func(c *config.Config) { c.CloudPartner.BaseURL = "http://[::1]:8081" }},
		{"token file instead of token", []string{"CPCANCEL_CLOUDPARTNER_TOKEN", "", "CPCANCEL_CLOUDPARTNER_TOKEN_FILE", tokenFile},
			func(c *config.Config) { c.CloudPartner.Token, c.CloudPartner.TokenFile = "", tokenFile }},
		{"embedded settings unused with NATS_URL", []string{"NATS_URL", "nats://nats:4222", "CPCANCEL_DATA_DIR", "", "CPCANCEL_EMBEDDED_LISTEN", "nohost"},
			func(c *config.Config) {
				c.NATS.URL, c.NATS.DataDir, c.NATS.EmbeddedListen = "nats://nats:4222", "", "nohost"
			}},
		{"upper bounds", []string{"CPCANCEL_MAX_ATTEMPTS", "100", "CPCANCEL_CONCURRENCY", "16384", "CPCANCEL_CONCURRENCY_MIN", "16384"},
			func(c *config.Config) {
				c.Processing.MaxAttempts, c.Processing.Concurrency, c.Processing.ConcurrencyMin = 100, 16384, 16384
			}},
		{"lower bounds", []string{"CPCANCEL_MAX_ATTEMPTS", "1", "CPCANCEL_CONCURRENCY", "1", "CPCANCEL_CONCURRENCY_MIN", "1", "CPCANCEL_MAX_REQUEST_BYTES", "1"},
			func(c *config.Config) {
				c.Processing.MaxAttempts, c.Processing.Concurrency, c.Processing.ConcurrencyMin, c.Processing.MaxRequestBytes = 1, 1, 1, 1
			}},
		{"floor above the ceiling: a fixed limit", []string{"CPCANCEL_CONCURRENCY", "64", "CPCANCEL_CONCURRENCY_MIN", "100"},
			func(c *config.Config) { c.Processing.Concurrency, c.Processing.ConcurrencyMin = 64, 100 }},
		{"structured json debug", []string{"CPCANCEL_RESULT_MODE", "structured", "CPCANCEL_LOG_FORMAT", "json", "CPCANCEL_LOG_LEVEL", "debug"},
			func(c *config.Config) {
				c.Processing.ResultMode, c.Log.Format, c.Log.Level = "structured", "json", "debug"
			}},
		{"bind to existing streams", []string{"CPCANCEL_PROVISION", "false"},
			func(c *config.Config) { c.Streams.Provision = false }},
		{"timeouts", []string{"CPCANCEL_HTTP_TIMEOUT", "1m30s", "CPCANCEL_SHUTDOWN_TIMEOUT", "1m40s"},
			func(c *config.Config) {
				c.CloudPartner.HTTPTimeout, c.Processing.ShutdownTimeout = 90*time.Second, 100*time.Second
			}},
		// The least values each cross-variable rule allows.
		{"shortest shutdown timeout", []string{"CPCANCEL_HTTP_TIMEOUT", "1s", "CPCANCEL_SHUTDOWN_TIMEOUT", "11s"},
			func(c *config.Config) {
				c.CloudPartner.HTTPTimeout, c.Processing.ShutdownTimeout = time.Second, 11*time.Second
			}},
		{"shortest idempotency TTL", []string{"CPCANCEL_IDEMPOTENCY_TTL", "2m20s"},
			func(c *config.Config) { c.Idempotency.TTL = 140 * time.Second }},
		{"shortest idempotency TTL when following", []string{"CPCANCEL_FOLLOW", "true", "CPCANCEL_IDEMPOTENCY_TTL", "3h1m"},
			func(c *config.Config) { c.Follow.Enabled, c.Idempotency.TTL = true, 3*time.Hour+time.Minute }},
		{"follow settings at the timeout", []string{"CPCANCEL_FOLLOW_TIMEOUT", "1m", "CPCANCEL_FOLLOW_INTERVAL", "1m", "CPCANCEL_FOLLOW_FIRST_POLL", "1m"},
			func(c *config.Config) {
				c.Follow.Timeout, c.Follow.Interval, c.Follow.FirstPoll = time.Minute, time.Minute, time.Minute
			}},
		{"a follow timeout past the TTL is fine while not following", []string{"CPCANCEL_FOLLOW_TIMEOUT", "30h"},
			func(c *config.Config) { c.Follow.Timeout = 30 * time.Hour }},
		{"storage limits", []string{"CPCANCEL_REQUEST_STREAM_MAX_BYTES", "1", "CPCANCEL_RESULT_STREAM_MAX_BYTES", "1099511627776",
			"CPCANCEL_DEADLETTER_STREAM_MAX_BYTES", "1048576", "CPCANCEL_FOLLOW_STREAM_MAX_BYTES", "2", "CPCANCEL_IDEMPOTENCY_MAX_BYTES", "3"},
			func(c *config.Config) {
				c.Streams.RequestStreamMaxBytes, c.Streams.ResultStreamMaxBytes, c.Streams.DeadLetterStreamMaxBytes = 1, 1<<40, 1<<20
				c.Follow.StreamMaxBytes, c.Idempotency.MaxBytes = 2, 3
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Load(env(append([]string{"CPCANCEL_CLOUDPARTNER_TOKEN", secret}, tt.env...)...))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := defaults
			tt.want(&want)
			if got != want {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	_, err := config.Load(env("CPCANCEL_CLOUDPARTNER_TOKEN", secret+" x", "CPCANCEL_CONCURRENCY", "0", "CPCANCEL_LOG_FORMAT", "xml"))
	if err == nil {
		t.Fatal("Load succeeded with three bad variables")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Errorf("Load error %q: want three joined errors", err)
	}
	for _, name := range []string{"CPCANCEL_CLOUDPARTNER_TOKEN", "CPCANCEL_CONCURRENCY", "CPCANCEL_LOG_FORMAT"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("Load error does not name %s:\n%v", name, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the token: %v", err)
	}
}

// TestValidateRules checks the rules that tie variables together: each case sets a few variables
// and wants exactly these errors, whole and in this order.
func TestValidateRules(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{"shutdown shorter than an API call and its result", []string{"CPCANCEL_SHUTDOWN_TIMEOUT", "25s"}, []string{
			"CPCANCEL_SHUTDOWN_TIMEOUT: 25s does not cover one API call (CPCANCEL_HTTP_TIMEOUT 30s) plus storing its result (10s): want at least 40s",
		}},
		{"longer API calls need a longer shutdown", []string{"CPCANCEL_HTTP_TIMEOUT", "1m"}, []string{
			"CPCANCEL_SHUTDOWN_TIMEOUT: 45s does not cover one API call (CPCANCEL_HTTP_TIMEOUT 1m0s) plus storing its result (10s): want at least 1m10s",
		}},
		{"idempotency TTL within a lease", []string{"CPCANCEL_IDEMPOTENCY_TTL", "2m19s"}, []string{
			"CPCANCEL_IDEMPOTENCY_TTL: 2m19s does not outlive one worker's hold on a request (1m20s with CPCANCEL_HTTP_TIMEOUT 30s) by 1m: want at least 2m20s",
		}},
		{"idempotency TTL within a long API call's lease", []string{"CPCANCEL_HTTP_TIMEOUT", "10m", "CPCANCEL_SHUTDOWN_TIMEOUT", "11m", "CPCANCEL_IDEMPOTENCY_TTL", "20m"}, []string{
			"CPCANCEL_IDEMPOTENCY_TTL: 20m0s does not outlive one worker's hold on a request (20m20s with CPCANCEL_HTTP_TIMEOUT 10m0s) by 1m: want at least 21m20s",
		}},
		{"idempotency TTL within following", []string{"CPCANCEL_FOLLOW", "true", "CPCANCEL_IDEMPOTENCY_TTL", "3h"}, []string{
			"CPCANCEL_IDEMPOTENCY_TTL: 3h0m0s does not outlive following an operation (CPCANCEL_FOLLOW_TIMEOUT 2h0m0s + CPCANCEL_FOLLOW_INTERVAL 1m0s) by 1h: want at least 3h1m0s",
		}},
		{"long follow timeout", []string{"CPCANCEL_FOLLOW", "true", "CPCANCEL_FOLLOW_TIMEOUT", "23h30m"}, []string{
			"CPCANCEL_IDEMPOTENCY_TTL: 24h0m0s does not outlive following an operation (CPCANCEL_FOLLOW_TIMEOUT 23h30m0s + CPCANCEL_FOLLOW_INTERVAL 1m0s) by 1h: want at least 24h31m0s",
		}},
		{"first poll after the deadline", []string{"CPCANCEL_FOLLOW_FIRST_POLL", "2h1m"}, []string{
			"CPCANCEL_FOLLOW_FIRST_POLL: 2h1m0s is longer than CPCANCEL_FOLLOW_TIMEOUT 2h0m0s: the first poll would come after the operation's deadline",
		}},
		{"interval past the deadline", []string{"CPCANCEL_FOLLOW_INTERVAL", "3h"}, []string{
			"CPCANCEL_FOLLOW_INTERVAL: 3h0m0s is longer than CPCANCEL_FOLLOW_TIMEOUT 2h0m0s: an operation would be polled at most once",
		}},
		{"short follow timeout", []string{"CPCANCEL_FOLLOW_TIMEOUT", "5s"}, []string{
			"CPCANCEL_FOLLOW_FIRST_POLL: 10s is longer than CPCANCEL_FOLLOW_TIMEOUT 5s: the first poll would come after the operation's deadline",
			"CPCANCEL_FOLLOW_INTERVAL: 1m0s is longer than CPCANCEL_FOLLOW_TIMEOUT 5s: an operation would be polled at most once",
		}},
		// A variable that is wrong by itself is reported alone, not again by every rule it is part of.
		{"invalid HTTP timeout", []string{"CPCANCEL_HTTP_TIMEOUT", "0s", "CPCANCEL_IDEMPOTENCY_TTL", "1m"}, []string{
			"CPCANCEL_HTTP_TIMEOUT: must be positive, got 0s",
		}},
		{"invalid follow timeout", []string{"CPCANCEL_FOLLOW", "true", "CPCANCEL_FOLLOW_TIMEOUT", "0s", "CPCANCEL_IDEMPOTENCY_TTL", "1h"}, []string{
			"CPCANCEL_FOLLOW_TIMEOUT: must be positive, got 0s",
		}},
		{"no storage limits", []string{"CPCANCEL_REQUEST_STREAM_MAX_BYTES", "0", "CPCANCEL_RESULT_STREAM_MAX_BYTES", "-1",
			"CPCANCEL_DEADLETTER_STREAM_MAX_BYTES", "0", "CPCANCEL_FOLLOW_STREAM_MAX_BYTES", "-1", "CPCANCEL_IDEMPOTENCY_MAX_BYTES", "0"}, []string{
			"CPCANCEL_REQUEST_STREAM_MAX_BYTES: must be positive, got 0: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream",
			"CPCANCEL_RESULT_STREAM_MAX_BYTES: must be positive, got -1: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream",
			"CPCANCEL_DEADLETTER_STREAM_MAX_BYTES: must be positive, got 0: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream",
			"CPCANCEL_IDEMPOTENCY_MAX_BYTES: must be positive, got 0: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream",
			"CPCANCEL_FOLLOW_STREAM_MAX_BYTES: must be positive, got -1: JetStream reads 0 and -1 as unlimited, and a store without a limit can fill the disk and stop every stream",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(env(append([]string{"CPCANCEL_CLOUDPARTNER_TOKEN", secret}, tt.env...)...))
			if err == nil {
				t.Fatalf("Load succeeded, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("Load error:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestValidateOrder checks that errors come in one order, run after run: the groups in the order
// of Config, the variables of a group in the order of its fields, then the rules that tie groups
// together.
func TestValidateOrder(t *testing.T) {
	lookup := env("CPCANCEL_CLOUDPARTNER_TOKEN", secret,
		"CPCANCEL_NATS_CA", "/nonexistent/ca.pem", "CPCANCEL_NATS_CERT", "/nonexistent/cert.pem", "CPCANCEL_NATS_KEY", "/nonexistent/key.pem",
		"CPCANCEL_NATS_CREDS", "/nonexistent/user.creds", "CPCANCEL_NATS_NKEY", "/nonexistent/user.nk",
		"CPCANCEL_MAX_ATTEMPTS", "0", "CPCANCEL_CONCURRENCY", "0", "CPCANCEL_MAX_REQUEST_BYTES", "0",
		"CPCANCEL_SHUTDOWN_TIMEOUT", "1s", "CPCANCEL_IDEMPOTENCY_TTL", "2m", "CPCANCEL_FOLLOW_FIRST_POLL", "0s",
		"CPCANCEL_REQUEST_SUBJECT", "a.*", "CPCANCEL_FOLLOW_SUBJECT", "b.>", "CPCANCEL_REQUEST_STREAM", "a.b", "CPCANCEL_FOLLOW_CONSUMER", "c d",
		"CPCANCEL_RESULT_STREAM_MAX_BYTES", "0", "CPCANCEL_IDEMPOTENCY_MAX_BYTES", "0")
	var want []string
	for _, name := range []string{
		"NATS_CA", "NATS_CERT", "NATS_KEY", "NATS_CREDS", "NATS_NKEY", "NATS_CREDS", // NATS
		"REQUEST_SUBJECT", "REQUEST_STREAM", "RESULT_STREAM_MAX_BYTES", // Streams
		"IDEMPOTENCY_MAX_BYTES",                            // Idempotency
		"CONCURRENCY", "MAX_ATTEMPTS", "MAX_REQUEST_BYTES", // Processing
		"FOLLOW_FIRST_POLL", "FOLLOW_SUBJECT", "FOLLOW_CONSUMER", // Follow
		"IDEMPOTENCY_TTL", "SHUTDOWN_TIMEOUT", // across groups
	} {
		want = append(want, config.Prefix+"_"+name)
	}
	var first string
	for i := range 20 {
		_, err := config.Load(lookup)
		if err == nil {
			t.Fatal("Load succeeded")
		}
		if i == 0 {
			first = err.Error()
			var got []string
			for _, line := range strings.Split(first, "\n") {
				name, _, _ := strings.Cut(line, ":")
				got = append(got, name)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Load reports the variables in the order\n%s\nwant\n%s\nerror:\n%s", strings.Join(got, " "), strings.Join(want, " "), first)
			}
		} else if err.Error() != first {
			t.Fatalf("Load %d reports other errors, or in another order:\n%s\nfirst:\n%s", i+1, err, first)
		}
	}
}

func TestLease(t *testing.T) {
	for _, tt := range []struct{ http, want time.Duration }{
		{30 * time.Second, 80 * time.Second}, // 2 × 30s + 2 × 5s + 10s
		{time.Second, 22 * time.Second},
	} {
		if got := (config.Config{CloudPartner: config.CloudPartner{HTTPTimeout: tt.http}}).Lease(); got != tt.want {
			t.Errorf("Lease with CPCANCEL_HTTP_TIMEOUT %s = %s, want %s", tt.http, got, tt.want)
		}
	}
	if config.PublishTimeout != 5*time.Second {
		t.Errorf("PublishTimeout = %s, want 5s", config.PublishTimeout)
	}
}

func TestUsage(t *testing.T) {
	var buf bytes.Buffer
	if err := config.Usage(&buf); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	// line finds the row of one variable; CPCANCEL_CLOUDPARTNER_TOKEN must not match its _FILE sibling.
	line := func(key string) string {
		for l := range strings.Lines(buf.String()) {
			if rest, ok := strings.CutPrefix(l, key); ok && strings.HasPrefix(rest, " ") {
				return l
			}
		}
		return ""
	}
	vars := config.Variables()
	if rows := strings.Count(buf.String(), "\n") - 1; rows != len(vars) {
		t.Errorf("Usage lists %d variables, want %d:\n%s", rows, len(vars), buf.String())
	}
	for _, v := range vars {
		l := line(v.Name)
		if l == "" {
			t.Errorf("Usage does not list %s:\n%s", v.Name, buf.String())
			continue
		}
		if v.Default != "" && !strings.Contains(l, " "+v.Default+" ") {
			t.Errorf("Usage row of %s does not show its default %q: %q", v.Name, v.Default, l)
		}
		if v.Description == "" || !strings.Contains(l, v.Description) {
			t.Errorf("Usage row of %s does not describe it (desc %q): %q", v.Name, v.Description, l)
		}
	}
	// The defaults docs/contract.md §5 names, independently of the tags.
	for key, def := range map[string]string{
		"CPCANCEL_CLOUDPARTNER_API_VERSION": "2017-10-31",
		"CPCANCEL_EMBEDDED_LISTEN":          "127.0.0.1:4222",
		"CPCANCEL_SOURCE":                   "/cpcancel",
		"CPCANCEL_HTTP_ADDR":                ":8080",
		"CPCANCEL_PROVISION":                "true",
	} {
		if l := line(key); !strings.Contains(l, " "+def+" ") {
			t.Errorf("Usage row of %s = %q, want default %s", key, l, def)
		}
	}
}

func TestLoadMissingTokenFile(t *testing.T) {
	_, err := config.Load(env("CPCANCEL_CLOUDPARTNER_TOKEN_FILE", "/nonexistent/token"))
	if err == nil || !strings.HasPrefix(err.Error(), "CPCANCEL_CLOUDPARTNER_TOKEN_FILE: ") {
		t.Errorf("Load with a missing token file: %v, want an error naming CPCANCEL_CLOUDPARTNER_TOKEN_FILE", err)
	}
}

// TestFieldNames checks the rule Config's doc states: a field's name is its variable's name
// without CPCANCEL_, and without the group's name where the variable starts with it.
func TestFieldNames(t *testing.T) {
	squash := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "_", "")) }
	for g := range reflect.TypeFor[config.Config]().Fields() {
		if g.Type.Kind() != reflect.Struct {
			t.Errorf("Config.%s is not a group", g.Name)
			continue
		}
		for f := range g.Type.Fields() {
			name := f.Tag.Get("envconfig")
			if name == "CPCANCEL_FOLLOW" && g.Name+"."+f.Name == "Follow.Enabled" {
				continue // the group's own switch
			}
			v := squash(strings.TrimPrefix(name, config.Prefix+"_"))
			if v != squash(f.Name) && v != squash(g.Name+f.Name) {
				t.Errorf("%s.%s holds %s: want the field named after its variable", g.Name, f.Name, name)
			}
		}
	}
}

// TestReadAsEnvconfig checks that Read parses values as envconfig.Process would, errors
// included, for each kind of field: Read walks the tags itself only to read through a function.
func TestReadAsEnvconfig(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"CPCANCEL_SOURCE", ""}, {"CPCANCEL_SOURCE", " /x "},
		{"CPCANCEL_CONCURRENCY", "7"}, {"CPCANCEL_CONCURRENCY", "0x10"}, {"CPCANCEL_CONCURRENCY", ""}, {"CPCANCEL_CONCURRENCY", "1.5"},
		{"CPCANCEL_RESULT_STREAM_MAX_BYTES", "99999999999999999999"}, {"CPCANCEL_RESULT_STREAM_MAX_BYTES", "-1"},
		{"CPCANCEL_FOLLOW", "1"}, {"CPCANCEL_FOLLOW", "T"}, {"CPCANCEL_FOLLOW", "yes"}, {"CPCANCEL_FOLLOW", ""},
		{"CPCANCEL_HTTP_TIMEOUT", "1m30s"}, {"CPCANCEL_HTTP_TIMEOUT", "90"}, {"CPCANCEL_HTTP_TIMEOUT", "-1s"},
		{"CPCANCEL_API_RATE_LIMIT", "2.5"}, {"CPCANCEL_API_RATE_LIMIT", "1e3"}, {"CPCANCEL_API_RATE_LIMIT", "fast"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			for _, v := range config.Variables() {
				t.Setenv(v.Name, "") // restored when the test ends
				os.Unsetenv(v.Name)
			}
			t.Setenv(tc.name, tc.value)
			var want config.Config
			wantErr := envconfig.Process("", &want)
			got, err := config.Read(os.LookupEnv)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("Read error %v, envconfig.Process error %v", err, wantErr)
			}
			if err == nil && got != want {
				t.Errorf("Read:\n got %+v\nenvconfig.Process:\n     %+v", got, want)
			}
		})
	}
}
