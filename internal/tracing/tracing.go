// Package tracing sets up OpenTelemetry tracing from the standard OTEL_* variables and carries a
// request's trace context between CloudEvents, NATS headers and the request's durable record.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set,
// or a development printer is asked for: then New returns a Provider whose Tracer is nil, and the
// code on a request's path skips every tracing step, so that it costs nothing per request.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName names cpcancel's tracer (the instrumentation scope of its spans).
const InstrumentationName = "github.com/cpcancel/cpcancel"

// Provider owns the tracer provider of the service. The zero Provider is tracing off.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// Options are what New cannot read from the environment.
type Options struct {
	// Version is the service.version resource attribute.
	Version string
	// Print, when set and no endpoint is configured, receives a compact line per ended span
	// (the development printer of "consumer -dev -trace").
	Print io.Writer
	// Exporter, when set, receives the spans instead of OTLP (tests).
	Exporter sdktrace.SpanExporter
}

// New builds the provider from the environment, read through lookup for the variables that turn
// tracing on or choose the protocol; the OpenTelemetry SDK reads the others itself
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and _ARG, the exporter's
// OTEL_EXPORTER_OTLP_* headers, timeout and compression). Errors name the variable at fault.
func New(ctx context.Context, lookup func(string) (string, bool), opts Options) (*Provider, error) {
	if v, _ := lookup("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return &Provider{}, nil
	}
	endpoint := firstSet(lookup, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	exp := opts.Exporter
	switch {
	case exp != nil:
	case endpoint != "":
		protocol := firstSet(lookup, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
		if protocol != "" && protocol != "http/protobuf" {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported; cpcancel exports http/protobuf only", protocol)
		}
		var err error
		// The exporter reads the endpoint, headers, timeout and compression from the environment.
		if exp, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
	case opts.Print != nil:
		exp = NewPrinter(opts.Print)
	default:
		return &Provider{}, nil
	}
	// The SDK's own attributes, then cpcancel's defaults, then OTEL_RESOURCE_ATTRIBUTES and
	// OTEL_SERVICE_NAME, each winning over the ones before.
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", "cpcancel"), attribute.String("service.version", opts.Version)))
	if err == nil {
		res, err = resource.Merge(res, resource.Environment())
	}
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	sp := sdktrace.NewBatchSpanProcessor(exp)
	if opts.Print != nil && endpoint == "" && opts.Exporter == nil {
		sp = sdktrace.NewSimpleSpanProcessor(exp) // printed as each span ends
	}
	// No WithSampler: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
	// (default parentbased_always_on).
	return &Provider{tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(res))}, nil
}

// NewWithProcessor returns a Provider over the given span processor (tests: tracetest's
// in-memory exporter behind a simple span processor).
func NewWithProcessor(sp sdktrace.SpanProcessor) *Provider {
	return &Provider{tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp))}
}

func firstSet(lookup func(string) (string, bool), names ...string) string {
	for _, n := range names {
		if v, ok := lookup(n); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Tracer is cpcancel's tracer, or nil when tracing is off: callers skip tracing on nil.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil || p.tp == nil {
		return nil
	}
	return p.tp.Tracer(InstrumentationName)
}

// Shutdown exports the spans still buffered and stops the provider; it waits at most until ctx
// ends. It does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.tp == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}

// propagator reads and writes W3C traceparent and tracestate.
var propagator = propagation.TraceContext{}

// Remote is the trace context in a W3C traceparent (and tracestate), or an invalid
// SpanContext when traceparent is empty or malformed.
func Remote(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	c := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), c))
}

// Producer is the producer's trace context of a request: the event's traceparent extension
// (binary mode's ce-traceparent header or structured mode's attribute, which natsce decodes
// alike), else a plain traceparent NATS header as nats.net's OpenTelemetry support writes it. It
// is invalid when neither is there or valid.
func Producer(ev *event.Event, header map[string][]string) trace.SpanContext {
	if sc := Event(ev); sc.IsValid() {
		return sc
	}
	return Remote(first(header, "traceparent", "Traceparent"), first(header, "tracestate", "Tracestate"))
}

func first(h map[string][]string, names ...string) string {
	for _, n := range names {
		if v := h[n]; len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// TraceParent is the W3C traceparent and tracestate of ctx's span, or "" when it has none.
func TraceParent(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}
