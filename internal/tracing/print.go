package tracing

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Printer is a span exporter that writes one compact line per span, for a newcomer to see a
// request's spans without a collector: trace id, name, kind, duration, key attributes, events.
type Printer struct {
	mu sync.Mutex
	w  io.Writer
}

var _ sdktrace.SpanExporter = (*Printer)(nil)

// NewPrinter returns a Printer writing to w.
func NewPrinter(w io.Writer) *Printer { return &Printer{w: w} }

// printed are the attributes worth a line; the others are in the OTLP export.
var printed = map[attribute.Key]bool{
	"messaging.destination.name": true, "messaging.message.id": true,
	"messaging.nats.message.delivery_count": true, "cloudevents.event_id": true,
	"http.request.method": true, "http.response.status_code": true, "url.full": true,
	"http.request.resend_count": true, "cpcancel.attempt": true, "cpcancel.outcome": true,
}

// ExportSpans writes spans, one line each.
func (p *Printer) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range spans {
		var b strings.Builder
		fmt.Fprintf(&b, "span trace=%s span=%s", s.SpanContext().TraceID(), s.SpanContext().SpanID())
		if s.Parent().IsValid() {
			fmt.Fprintf(&b, " parent=%s", s.Parent().SpanID())
		}
		fmt.Fprintf(&b, " %q %s %s", s.Name(), s.SpanKind(), s.EndTime().Sub(s.StartTime()).Round(10*time.Microsecond))
		for _, a := range s.Attributes() {
			if printed[a.Key] {
				fmt.Fprintf(&b, " %s=%s", a.Key, a.Value.Emit())
			}
		}
		for _, e := range s.Events() {
			fmt.Fprintf(&b, " event=%q", e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.Emit())
			}
		}
		if s.Status().Code != 0 {
			fmt.Fprintf(&b, " status=%s %q", s.Status().Code, s.Status().Description)
		}
		b.WriteByte('\n')
		if _, err := io.WriteString(p.w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// Shutdown does nothing: every span was written when exported.
func (p *Printer) Shutdown(context.Context) error { return nil }
