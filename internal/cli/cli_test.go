package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

var build = metrics.Build{Version: "v1.2.3", Revision: "0123abc"}

// run runs the command line with a deadline, so that a command that unexpectedly starts serving
// fails the test instead of hanging it.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = cli.Run(ctx, args, build, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestHelp(t *testing.T) {
	out, _, err := run(t, "-h")
	if err != nil {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"Usage:", "publish", "emulator", "-dev", "-version",
		"CPCANCEL_CLOUDPARTNER_TOKEN", "CPCANCEL_CLOUDPARTNER_TOKEN_FILE", "CPCANCEL_NATS_URL", "2017-10-31"} {
		if !strings.Contains(out, want) {
			t.Errorf("-h output lacks %q:\n%s", want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "-version")
	if err != nil {
		t.Fatalf("-version: %v", err)
	}
	if !strings.Contains(out, build.Version) || !strings.Contains(out, build.Revision) {
		t.Errorf("-version printed %q, want version %s and revision %s", out, build.Version, build.Revision)
	}
}

func TestSubcommandHelp(t *testing.T) {
	tests := []struct {
		args []string
		flag string // a flag the help must describe
	}{
		{[]string{"publish", "-h"}, "-publisher"},
		{[]string{"emulator", "-h"}, "-listen"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, err := run(t, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			if !strings.Contains(out+errOut, tt.flag) {
				t.Errorf("%v printed no help for %s:\nstdout: %s\nstderr: %s", tt.args, tt.flag, out, errOut)
			}
		})
	}
}

func TestBadCommandLines(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"unknown subcommand", []string{"frobnicate"}, `"frobnicate"`},
		{"unknown flag", []string{"-frobnicate"}, "-frobnicate"},
		{"publish without -publisher", []string{"publish", "-offer", "o"}, "-publisher"},
		{"publish without -offer", []string{"publish", "-publisher", "p"}, "-offer"},
		{"publish bad -mode", []string{"publish", "-publisher", "p", "-offer", "o", "-mode", "xml"}, "-mode"},
		{"emulator unknown flag", []string{"emulator", "-frobnicate"}, "-frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Nothing listens here: a command that got as far as connecting fails fast too.
			t.Setenv("NATS_URL", "nats://127.0.0.1:1")
			t.Setenv("CPCANCEL_NATS_URL", "")
			_, _, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: error %v, want one mentioning %s", tt.args, err, tt.want)
			}
		})
	}
}

func TestServiceRefusesBadConfiguration(t *testing.T) {
	// Were the configuration accepted, nothing may be left behind or collide with other tests.
	t.Setenv("NATS_URL", "")
	t.Setenv("CPCANCEL_NATS_URL", "")
	t.Setenv("CPCANCEL_DATA_DIR", t.TempDir())
	t.Setenv("CPCANCEL_EMBEDDED_LISTEN", "127.0.0.1:0")
	t.Setenv("CPCANCEL_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("CPCANCEL_CLOUDPARTNER_TOKEN", "s3cret-token-value")
	t.Setenv("CPCANCEL_MAX_ATTEMPTS", "abc")

	out, errOut, err := run(t)
	if err == nil || !strings.Contains(err.Error(), "CPCANCEL_MAX_ATTEMPTS") {
		t.Fatalf("Run with CPCANCEL_MAX_ATTEMPTS=abc: %v, want an error naming CPCANCEL_MAX_ATTEMPTS", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the token: %v", err)
	}
	// The service logs "starting cpcancel" before it starts anything; nothing may be printed.
	if out != "" || errOut != "" {
		t.Errorf("Run printed output before failing:\nstdout: %s\nstderr: %s", out, errOut)
	}
}
