package tracing_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cpcancel/cpcancel/internal/tracing"
)

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestNewOffWithoutEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"nothing set", nil},
		{"empty endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": " "}},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tracing.New(context.Background(), lookup(tc.env), tracing.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Tracer() != nil {
				t.Error("tracing on, want off")
			}
			if err := p.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNewRefusesGRPC(t *testing.T) {
	_, err := tracing.New(context.Background(), lookup(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), tracing.Options{})
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("err %v, want one naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
}

// TestOTLPExport exports over real OTLP/HTTP to a loopback receiver and decodes what arrives: the
// span, its parent from a W3C traceparent, and the resource from OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES.
func TestOTLPExport(t *testing.T) {
	var mu sync.Mutex
	var got []*collectortrace.ExportTraceServiceRequest
	var paths []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		req := &collectortrace.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			t.Errorf("not an ExportTraceServiceRequest (%s): %v", r.Header.Get("Content-Type"), err)
		}
		mu.Lock()
		got, paths = append(got, req), append(paths, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(recv.Close)
	// The SDK reads the service name and resource attributes from the process environment.
	t.Setenv("OTEL_SERVICE_NAME", "cpcancel-test")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	p, err := tracing.New(context.Background(), lookup(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}), tracing.Options{Version: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	parent := tracing.Remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	_, span := p.Tracer().Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "process req",
		trace.WithSpanKind(trace.SpanKindConsumer))
	span.End()
	if err := p.Shutdown(context.Background()); err != nil { // exports what the batch holds
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || paths[0] != "POST /v1/traces application/x-protobuf" {
		t.Fatalf("%d exports (%v), want one POST of protobuf to /v1/traces", len(got), paths)
	}
	rs := got[0].GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("export %v, want one span", got[0])
	}
	res := map[string]string{}
	for _, kv := range rs[0].GetResource().GetAttributes() {
		res[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if res["service.name"] != "cpcancel-test" || res["service.version"] != "v9" || res["deployment.environment.name"] != "test" ||
		res["telemetry.sdk.language"] != "go" {
		t.Errorf("resource %v", res)
	}
	if s := rs[0].GetScopeSpans()[0].GetScope().GetName(); s != tracing.InstrumentationName {
		t.Errorf("scope %q", s)
	}
	s := rs[0].GetScopeSpans()[0].GetSpans()[0]
	if s.GetName() != "process req" || s.GetKind().String() != "SPAN_KIND_CONSUMER" {
		t.Errorf("span %q kind %v", s.GetName(), s.GetKind())
	}
	tid := parent.TraceID()
	sid := parent.SpanID()
	if !bytes.Equal(s.GetTraceId(), tid[:]) || !bytes.Equal(s.GetParentSpanId(), sid[:]) {
		t.Errorf("trace %x parent %x, want the traceparent's", s.GetTraceId(), s.GetParentSpanId())
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewTextHandler(&buf, nil))).With("k", "v")
	sc := tracing.Remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "traced")
	log.InfoContext(context.Background(), "untraced")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "k=v trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7") ||
		strings.Contains(lines[1], "trace_id") {
		t.Errorf("log:\n%s", buf.String())
	}
}

func TestProducer(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name   string
		header map[string][]string
		valid  bool
	}{
		{"plain header", map[string][]string{"traceparent": {tp}}, true},
		{"malformed", map[string][]string{"traceparent": {"00-zz"}}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if sc := tracing.Producer(nil, tc.header); sc.IsValid() != tc.valid {
				t.Errorf("valid %v, want %v", sc.IsValid(), tc.valid)
			}
		})
	}
}

func TestPrinter(t *testing.T) {
	var buf bytes.Buffer
	p := tracing.NewWithProcessor(sdktrace.NewSimpleSpanProcessor(tracing.NewPrinter(&buf)))
	ctx, parent := p.Tracer().Start(context.Background(), "process req", trace.WithSpanKind(trace.SpanKindConsumer))
	_, child := p.Tracer().Start(ctx, "POST", trace.WithSpanKind(trace.SpanKindClient))
	child.End()
	parent.AddEvent("settle")
	parent.End()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	tid := parent.SpanContext().TraceID().String()
	if len(lines) != 2 || !strings.Contains(lines[0], "trace="+tid) || !strings.Contains(lines[0], `"POST" client`) ||
		!strings.Contains(lines[0], "parent="+parent.SpanContext().SpanID().String()) ||
		!strings.Contains(lines[1], `"process req" consumer`) || !strings.Contains(lines[1], `event="settle"`) {
		t.Errorf("printed:\n%s", buf.String())
	}
}
