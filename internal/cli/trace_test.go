package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cli"
)

func TestTraceNeedsDev(t *testing.T) {
	if _, _, err := run(t, "-trace"); err == nil || !strings.Contains(err.Error(), "-dev") {
		t.Errorf("-trace alone: err %v, want one naming -dev", err)
	}
}

func TestTraceRefusesGRPC(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("CPCANCEL_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("CPCANCEL_EMBEDDED_LISTEN", "127.0.0.1:0")
	if _, _, err := run(t, "-dev", "-trace"); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("err %v, want one naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
}

// TestDevTrace: -dev -trace prints the samples' spans beside their results.
func TestDevTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs -dev for a few seconds")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("CPCANCEL_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("CPCANCEL_EMBEDDED_LISTEN", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := cli.Run(ctx, []string{"-dev", "-trace"}, build, &out, &errOut); err != nil {
		t.Fatalf("-dev -trace: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{`"process cloudpartner.cancel.requests" consumer`, `"POST" client`,
		`"publish cloudpartner.cancel.results.cancelled" producer`, `event="settle" cpcancel.settle="ack"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "trace_id=") {
		t.Errorf("no log line with a trace_id:\n%s", errOut.String())
	}
}
