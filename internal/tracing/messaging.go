package tracing

import (
	"context"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/worker"
)

// Attribute keys of cpcancel's spans beyond the semantic conventions' own.
const (
	// DeliveryCount is JetStream's delivery count of the message processed (1 = first delivery).
	DeliveryCount = attribute.Key("messaging.nats.message.delivery_count")
	// Attempt is the API attempt a Cancel call is (1 = first).
	Attempt = attribute.Key("cpcancel.attempt")
	// Outcome is the outcome of the result a process span produced.
	Outcome = attribute.Key("cpcancel.outcome")
)

// StartProcess starts the CONSUMER span of one delivery of msg (ev is its CloudEvent, nil when it
// is not one). The span is a child of parent when parent is valid (the producer's context, or
// for a follow task the context recorded with the request), and a root otherwise.
//
// Child-of rather than a link: each delivery handles exactly one request, so the producer's trace
// is the request's story; as a child, every delivery, retry, follow poll and the final result
// appear under the producer in one trace, and the result's traceparent continues it. Links are
// what the conventions advise for batches, which cpcancel never processes.
func StartProcess(ctx context.Context, t trace.Tracer, parent trace.SpanContext, msg jetstream.Msg, meta *jetstream.MsgMetadata, ev *event.Event) (context.Context, trace.Span) {
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	subject := msg.Subject()
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs,
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.operation.name", "process"),
		attribute.String("messaging.destination.name", subject),
	)
	if meta != nil {
		attrs = append(attrs,
			attribute.String("messaging.message.id", meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10)),
			attribute.String("messaging.consumer.group.name", meta.Consumer),
			attribute.Int64(string(DeliveryCount), int64(meta.NumDelivered)),
		)
	}
	if ev != nil {
		attrs = append(attrs,
			attribute.String("cloudevents.event_id", ev.ID()),
			attribute.String("cloudevents.event_source", ev.Source()),
			attribute.String("cloudevents.event_type", ev.Type()),
			attribute.String("cloudevents.event_spec_version", ev.SpecVersion()),
		)
		if s := ev.Subject(); s != "" {
			attrs = append(attrs, attribute.String("cloudevents.event_subject", s))
		}
	}
	return t.Start(ctx, "process "+subject, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// StartPublish starts the PRODUCER span of storing the message id on subject; eventType is the
// CloudEvent's type, "" for a dead letter.
func StartPublish(ctx context.Context, t trace.Tracer, subject, id, eventType string) (context.Context, trace.Span) {
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs,
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.operation.name", "publish"),
		attribute.String("messaging.destination.name", subject),
		attribute.String("messaging.message.id", id),
	)
	if eventType != "" {
		attrs = append(attrs, attribute.String("cloudevents.event_id", id), attribute.String("cloudevents.event_type", eventType))
	}
	return t.Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

// EndPublish ends a publish span with the stored message's sequence (0: not known) or the error.
func EndPublish(span trace.Span, seq uint64, err error) {
	switch {
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
	case seq != 0:
		span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(seq)))
	}
	span.End()
}

// EndProcess records how the delivery is settled, as the span event "settle", and ends the span.
// A terminated message (dead-lettered, or not a JetStream delivery) marks the span an error.
func EndProcess(span trace.Span, d worker.Decision) {
	attrs := []attribute.KeyValue{attribute.String("cpcancel.settle", d.Kind.String())}
	if d.Kind == worker.KindNak {
		attrs = append(attrs, attribute.String("cpcancel.settle.delay", d.Delay.String()))
	}
	if d.Reason != "" {
		attrs = append(attrs, attribute.String("cpcancel.settle.reason", d.Reason))
	}
	span.AddEvent("settle", trace.WithAttributes(attrs...))
	if d.Kind == worker.KindTerm {
		span.SetStatus(codes.Error, d.Reason)
	}
	span.End()
}

// Event is the trace context an event carries in its traceparent and tracestate extensions.
func Event(ev *event.Event) trace.SpanContext {
	if ev == nil {
		return trace.SpanContext{}
	}
	tp, _ := ev.Extensions()["traceparent"].(string)
	ts, _ := ev.Extensions()["tracestate"].(string)
	return Remote(tp, ts)
}
