package handler_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
)

// BenchmarkHandle measures one request from delivery to ack: decode, claim in the state bucket,
// (fake) API call, record the answer, store the result, mark it stored, ack; on a real embedded
// JetStream server. With tracing off (the default), and on with every span sampled and batched
// to an exporter that drops them: the cost of making the spans, without the network.
func BenchmarkHandle(b *testing.B) {
	b.Run("tracing=off", func(b *testing.B) { benchmarkHandle(b, nil) })
	b.Run("tracing=on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer tp.Shutdown(context.Background())
		benchmarkHandle(b, tp.Tracer("bench"))
	})
}

func benchmarkHandle(b *testing.B, tracer trace.Tracer) {
	e := newEnv(b)
	e.cfg.Tracer = tracer
	h := e.handler(&apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 202, Location: location,
		OperationID: "56615b67", CorrelationID: "c0ffee"}, nil)})
	for i := range b.N {
		msg := &nats.Msg{Subject: "req", Header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType},
			"ce-source": {"/bench"}, "ce-id": {strconv.Itoa(i)}, "ce-datacontenttype": {"application/json"},
		}, Data: []byte(valid)}
		if _, err := e.js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	<-e.js.PublishAsyncComplete()

	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for handled := 0; handled < b.N; {
		batch, err := e.consumer.Fetch(min(b.N-handled, 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for msg := range batch.Messages() {
			h.Decide(ctx, msg)
			if err := msg.Ack(); err != nil {
				b.Fatal(err)
			}
			handled++
		}
		if err := batch.Error(); err != nil {
			b.Fatal(err)
		}
	}
}
