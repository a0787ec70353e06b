package service_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/servicetest"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

// startTraced runs the service in this process with tracing into the returned exporter, its log
// lines into the returned buffer; it stops when the test ends.
func startTraced(t *testing.T, env map[string]string) (*service.Service, *tracetest.InMemoryExporter, *natstest.Buffer) {
	t.Helper()
	cfg, err := config.Load(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	logs := &natstest.Buffer{}
	svc := service.New(cfg, metrics.Build{Version: "test"}, slog.New(slog.NewTextHandler(logs, nil))).
		WithTracing(tracing.NewWithProcessor(sdktrace.NewSimpleSpanProcessor(exp)))
	servicetest.Start(t, svc)
	return svc, exp, logs
}

// TestTraceEndToEnd runs every outcome through the service with following on, against the
// emulator, and checks the trace each request leaves: a process span under the producer's
// context, HTTP client spans under it, a publish span, the result's traceparent continuing from
// the process span, the follow polls and the final result in the same trace, log lines and
// exemplars carrying the trace id, and the token nowhere in a span.
func TestTraceEndToEnd(t *testing.T) {
	st := newStack(t, emulator.Options{OperationDuration: 300 * time.Millisecond})
	env := st.env(map[string]string{"CPCANCEL_FOLLOW": "true", "CPCANCEL_FOLLOW_INTERVAL": "100ms",
		"CPCANCEL_FOLLOW_TIMEOUT": "20s", "CPCANCEL_FOLLOW_FIRST_POLL": "100ms"})
	svc, exp, logs := startTraced(t, env)

	type req struct{ id, offer, outcome string }
	reqs := []req{{"sync", "sync-offer", "cancelled"}, {"follow", "contoso-offer", "cancelling"},
		{"unknown", "unknown-offer", "failed"}, {"invalid", "../etc", "failed"}}
	traceOf := map[string]string{} // request id -> its producer's trace id
	for i, mode := range []natsce.Mode{natsce.Binary, natsce.Structured} {
		for j, r := range reqs {
			id := fmt.Sprintf("%s-%s", r.id, mode)
			traceID := fmt.Sprintf("%030x%d%d", 0xabc, i, j)
			traceOf[id] = traceID
			// An offer of its own per request: two requests for one operation share its polls.
			ev := request(t, "/test", id, "contoso", r.offer+"-"+mode.String())
			ev.SetExtension("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
			st.publish(t, mode, ev)
		}
	}
	st.publishRaw(t, nats.Header{"traceparent": {"00-0000000000000000000000000000dead-00f067aa0ba902b7-01"}}, []byte("not a CloudEvent"))
	// 8 first results and 2 final ones.
	results := st.waitStream(t, "CPCANCEL_RESULTS", 10, 30*time.Second)
	st.waitStream(t, "CPCANCEL_DEADLETTER", 1, 10*time.Second)

	spans := map[trace.SpanID]tracetest.SpanStub{}
	waitFor(t, func() bool {
		for _, s := range exp.GetSpans() {
			spans[s.SpanContext.SpanID()] = s
		}
		// every result's process span has ended
		for _, r := range results {
			if _, ok := spans[tracing.Event(r.ev).SpanID()]; !ok {
				return false
			}
		}
		return true
	})

	finals := 0
	for _, r := range results {
		id := r.data.RequestID
		sc := tracing.Event(r.ev)
		if sc.TraceID().String() != traceOf[id] {
			t.Errorf("result %s of %s in trace %s, want the producer's %s", r.subject, id, sc.TraceID(), traceOf[id])
			continue
		}
		process := spans[sc.SpanID()]
		if process.SpanKind != trace.SpanKindConsumer {
			t.Errorf("result of %s: its traceparent names %q (%v), want a process span", id, process.Name, process.SpanKind)
			continue
		}
		if r.data.OperationStatus == "" { // a first result: under the producer's span
			if process.Name != "process cloudpartner.cancel.requests" || process.Parent.SpanID().String() != "00f067aa0ba902b7" {
				t.Errorf("%s: process span %q with parent %v", id, process.Name, process.Parent.SpanID())
			}
		} else { // the final result: a follow task's span, under the span that answered
			finals++
			answering := spans[process.Parent.SpanID()]
			if process.Name != "process cloudpartner.cancel.follow" || answering.Name != "process cloudpartner.cancel.requests" {
				t.Errorf("%s: final result from %q under %q", id, process.Name, answering.Name)
			}
		}
		var kinds []string
		for _, s := range spans {
			if s.Parent.SpanID() == process.SpanContext.SpanID() {
				kinds = append(kinds, s.SpanKind.String()+" "+s.Name)
			}
		}
		want := []string{"producer publish " + r.subject}
		if r.data.OperationStatus == "" && !strings.HasPrefix(id, "invalid") {
			want = append(want, "client POST")
		}
		for _, w := range want {
			if !slices.Contains(kinds, w) {
				t.Errorf("%s (%s): children %v, want %q among them", id, r.subject, kinds, w)
			}
		}
		if r.data.OperationStatus != "" && !pollTraced(spans, sc.TraceID()) {
			t.Errorf("%s: no GET of the operation in its trace", id)
		}
	}
	if finals != 2 {
		t.Errorf("%d final results traced, want 2", finals)
	}
	deadLetters := 0
	for _, s := range spans {
		for _, kv := range append(append([]attribute.KeyValue{}, s.Attributes...), eventAttrs(s)...) {
			if strings.Contains(kv.Value.Emit(), testToken) {
				t.Errorf("span %q attribute %s holds the token", s.Name, kv.Key)
			}
		}
		if s.Parent.TraceID().String() == "0000000000000000000000000000dead" && s.Status.Description != "" {
			deadLetters++
		}
	}
	if deadLetters != 1 {
		t.Errorf("%d dead-letter process spans under the plain traceparent header, want 1", deadLetters)
	}

	// Log lines of a traced request carry its trace id.
	if out := logs.String(); !strings.Contains(out, "trace_id="+traceOf["sync-binary"]) {
		t.Errorf("no log line with trace_id=%s:\n%s", traceOf["sync-binary"], out)
	}
	// Exemplars, in the OpenMetrics exposition.
	hreq, _ := http.NewRequest("GET", svc.HTTPURL()+"/metrics", nil)
	hreq.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"cpcancel_api_request_duration_seconds_bucket", "cpcancel_processing_duration_seconds_bucket"} {
		found := false
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name) && strings.Contains(line, `# {trace_id="`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no exemplar with a trace_id on %s", name)
		}
	}
}

func eventAttrs(s tracetest.SpanStub) []attribute.KeyValue {
	var out []attribute.KeyValue
	for _, e := range s.Events {
		out = append(out, e.Attributes...)
	}
	return out
}

// pollTraced reports whether a GET client span under a follow task's span is in the trace.
func pollTraced(spans map[trace.SpanID]tracetest.SpanStub, id trace.TraceID) bool {
	for _, s := range spans {
		if s.SpanContext.TraceID() == id && s.Name == "GET" && s.SpanKind == trace.SpanKindClient &&
			spans[s.Parent.SpanID()].Name == "process cloudpartner.cancel.follow" {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met within 10s")
		}
	}
}
