package config_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/config"
)

// secret is the token every test sets; no error message may contain any part of it.
const secret = "s3cret-token-value"

// envVars returns the variable of every Config field without its prefix, e.g. "MAX_ATTEMPTS".
func envVars(t *testing.T) []string {
	t.Helper()
	var names []string
	for f := range reflect.TypeFor[config.Config]().Fields() {
		name, ok := strings.CutPrefix(f.Tag.Get("envconfig"), config.Prefix+"_")
		if !ok {
			t.Fatalf("field %s has no CPCANCEL_ envconfig tag", f.Name)
		}
		names = append(names, name)
	}
	return names
}

// setEnv gives the test an environment in which no variable Config could read is set (neither
// CPCANCEL_X nor bare X), then sets kv, given as name/value pairs.
func setEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, name := range envVars(t) {
		for _, key := range []string{config.Prefix + "_" + name, name} {
			t.Setenv(key, "") // restores the original value when the test ends
			os.Unsetenv(key)
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

// defaults is the configuration SPEC §5 and the field tags promise when nothing but the token is set.
var defaults = config.Config{
	Replicas:        1,
	EmbeddedListen:  "127.0.0.1:4222",
	DataDir:         "cpcancel-data",
	Provision:       true,
	RequestSubject:  "cloudpartner.cancel.requests",
	RequestStream:   "CPCANCEL_REQUESTS",
	Consumer:        "cpcancel",
	ResultSubject:   "cloudpartner.cancel.results",
	ResultStream:    "CPCANCEL_RESULTS",
	DeadLetter:      "cloudpartner.cancel.deadletter",
	DeadLetterStrm:  "CPCANCEL_DEADLETTER",
	FollowInterval:  time.Minute,
	FollowTimeout:   2 * time.Hour,
	FollowSubject:   "cloudpartner.cancel.follow",
	FollowStream:    "CPCANCEL_FOLLOW",
	FollowConsumer:  "cpcancel-follow",
	BaseURL:         "https://cloudpartner.azure.com",
	Scope:           "https://cloudpartner.azure.com/.default",
	APIVersion:      "2017-10-31",
	Token:           secret,
	HTTPTimeout:     30 * time.Second,
	MaxAttempts:     5,
	Concurrency:     32,
	MaxRequestBytes: 65536,
	IdempotencyTTL:  24 * time.Hour,
	IdempotencyKV:   "CPCANCEL_IDEMPOTENCY",
	ResultMode:      "binary",
	Source:          "/cpcancel",
	HTTPAddr:        ":8080",
	ShutdownTimeout: 25 * time.Second,
	LogLevel:        "info",
	LogFormat:       "text",
}

func TestLoadDefaults(t *testing.T) {
	setEnv(t, "CPCANCEL_CLOUDPARTNER_TOKEN", secret)
	got, err := config.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got != defaults {
		t.Errorf("Load with only the token set:\n got %+v\nwant %+v", got, defaults)
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
			setEnv(t, append(tt.env, "CPCANCEL_CLOUDPARTNER_TOKEN", secret)...)
			c, err := config.Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.NATSURL != tt.want {
				t.Errorf("NATSURL = %q, want %q", c.NATSURL, tt.want)
			}
		})
	}
}

// Only NATS_URL is shared with other programs (SPEC §5); a LOG_LEVEL or SOURCE meant for
// something else in the same environment must not change, or stop, cpcancel.
func TestLoadIgnoresUnprefixedVariables(t *testing.T) {
	setEnv(t, "CPCANCEL_CLOUDPARTNER_TOKEN", secret,
		"LOG_LEVEL", "trace", "LOG_FORMAT", "logfmt", "SOURCE", "/elsewhere", "CONSUMER", "other",
		"CONCURRENCY", "7", "HTTP_ADDR", "8080", "DATA_DIR", "/var/lib/other", "CLOUDPARTNER_TOKEN_FILE", "/tmp/x")
	got, err := config.Load()
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
			setEnv(t, "CPCANCEL_CLOUDPARTNER_TOKEN", secret, tc.name, tc.value)
			_, err := config.Load()
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
	setEnv(t) // neither CPCANCEL_CLOUDPARTNER_TOKEN nor CPCANCEL_CLOUDPARTNER_TOKEN_FILE
	c, err := config.Load()
	if err != nil || c.Token != "" || c.TokenFile != "" {
		t.Errorf("Load without a token: %+v, %v; want Azure credentials to be used", c, err)
	}
}

// A value that is invalid in one setting is fine in another; Validate must not be stricter than SPEC.
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
			func(c *config.Config) { c.BaseURL = "http://127.0.0.1:8081" }},
		{"http on localhost", []string{"CPCANCEL_CLOUDPARTNER_BASE_URL", "http://localhost:8081"},
			func(c *config.Config) { c.BaseURL = "http://localhost:8081" }},
		{"http on ::1", []string{"CPCANCEL_CLOUDPARTNER_BASE_URL", "http://[::1]:8081"},
			func(c *config.Config) { c.BaseURL = "http://[::1]:8081" }},
		{"token file instead of token", []string{"CPCANCEL_CLOUDPARTNER_TOKEN", "", "CPCANCEL_CLOUDPARTNER_TOKEN_FILE", tokenFile},
			func(c *config.Config) { c.Token, c.TokenFile = "", tokenFile }},
		{"embedded settings unused with NATS_URL", []string{"NATS_URL", "nats://nats:4222", "CPCANCEL_DATA_DIR", "", "CPCANCEL_EMBEDDED_LISTEN", "nohost"},
			func(c *config.Config) { c.NATSURL, c.DataDir, c.EmbeddedListen = "nats://nats:4222", "", "nohost" }},
		{"upper bounds", []string{"CPCANCEL_MAX_ATTEMPTS", "100", "CPCANCEL_CONCURRENCY", "4096"},
			func(c *config.Config) { c.MaxAttempts, c.Concurrency = 100, 4096 }},
		{"lower bounds", []string{"CPCANCEL_MAX_ATTEMPTS", "1", "CPCANCEL_CONCURRENCY", "1", "CPCANCEL_MAX_REQUEST_BYTES", "1"},
			func(c *config.Config) { c.MaxAttempts, c.Concurrency, c.MaxRequestBytes = 1, 1, 1 }},
		{"structured json debug", []string{"CPCANCEL_RESULT_MODE", "structured", "CPCANCEL_LOG_FORMAT", "json", "CPCANCEL_LOG_LEVEL", "debug"},
			func(c *config.Config) { c.ResultMode, c.LogFormat, c.LogLevel = "structured", "json", "debug" }},
		{"bind to existing streams", []string{"CPCANCEL_PROVISION", "false"},
			func(c *config.Config) { c.Provision = false }},
		{"timeouts", []string{"CPCANCEL_HTTP_TIMEOUT", "1m30s", "CPCANCEL_SHUTDOWN_TIMEOUT", "500ms"},
			func(c *config.Config) { c.HTTPTimeout, c.ShutdownTimeout = 90*time.Second, 500*time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, append([]string{"CPCANCEL_CLOUDPARTNER_TOKEN", secret}, tt.env...)...)
			got, err := config.Load()
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
	setEnv(t, "CPCANCEL_CLOUDPARTNER_TOKEN", secret+" x", "CPCANCEL_CONCURRENCY", "0", "CPCANCEL_LOG_FORMAT", "xml")
	_, err := config.Load()
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
	for f := range reflect.TypeFor[config.Config]().Fields() {
		key := f.Tag.Get("envconfig")
		l := line(key)
		if l == "" {
			t.Errorf("Usage does not list %s:\n%s", key, buf.String())
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(l, " "+def+" ") {
			t.Errorf("Usage row of %s does not show its default %q: %q", key, def, l)
		}
		if desc := f.Tag.Get("desc"); desc == "" || !strings.Contains(l, desc) {
			t.Errorf("Usage row of %s does not describe it (desc %q): %q", key, desc, l)
		}
	}
	// The defaults SPEC §5 names, independently of the tags.
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
	setEnv(t, "CPCANCEL_CLOUDPARTNER_TOKEN_FILE", "/nonexistent/token")
	_, err := config.Load()
	if err == nil || !strings.HasPrefix(err.Error(), "CPCANCEL_CLOUDPARTNER_TOKEN_FILE: ") {
		t.Errorf("Load with a missing token file: %v, want an error naming CPCANCEL_CLOUDPARTNER_TOKEN_FILE", err)
	}
}
