package handler_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
)

// BenchmarkHandle measures one request from delivery to ack: decode, claim in the state bucket,
// (fake) API call, record the answer, store the result, mark it stored, ack; on a real embedded
// JetStream server.
func BenchmarkHandle(b *testing.B) {
	e := newEnv(b)
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
