package handler_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cenats"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/handler"
	"github.com/cpcancel/cpcancel/internal/idempotency"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// fakeAPI answers every cancel at once, as the API would for a running operation.
type fakeAPI struct{}

func (fakeAPI) Cancel(context.Context, cloudpartner.CancelRequest) (cloudpartner.Accepted, error) {
	return cloudpartner.Accepted{StatusCode: 202,
		Location:    "https://cloudpartner.azure.com/api/publishers/contoso/offers/contoso-offer/operations/56615b67-2185-49fe-80d2-c4ddf77bb2e8?api-version=2017-10-31",
		OperationID: "56615b67-2185-49fe-80d2-c4ddf77bb2e8", CorrelationID: "c0ffee"}, nil
}

type nopRecorder struct{}

func (nopRecorder) Received(uint64) func() { return func() {} }
func (nopRecorder) ResultStored(string)    {}
func (nopRecorder) Duplicate()             {}
func (nopRecorder) DeadLettered()          {}
func (nopRecorder) Retried()               {}

// BenchmarkHandle measures one request from delivery to ack: decode, claim in the idempotency
// bucket, (fake) API call, record, result publish and ack, on a real embedded JetStream server.
func BenchmarkHandle(b *testing.B) {
	ns := natstest.Start(b)
	_, js := ns.Connect(b)
	ctx := context.Background()
	topo := broker.Topology{
		RequestStream: "REQ", RequestSubject: "req", ResultStream: "RES", ResultSubjectPrefix: "res",
		DeadLetterStream: "DL", DeadLetterSubject: "dl", Consumer: "bench",
		AckWait: 30 * time.Second, MaxDeliver: 10, MaxAckPending: 1 << 20,
	}
	consumer, err := broker.Provision(ctx, js, topo)
	if err != nil {
		b.Fatal(err)
	}
	store, err := idempotency.Open(ctx, js, idempotency.Config{Bucket: "IDEM", TTL: time.Hour, Lease: time.Minute, Provision: true})
	if err != nil {
		b.Fatal(err)
	}
	h := handler.New(handler.Config{
		Source: "/cpcancel", ResultSubjectPrefix: "res", DeadLetterSubject: "dl", Mode: cenats.Binary,
		MaxAttempts: 5, MaxRequestBytes: 1 << 16, Heartbeat: 10 * time.Second,
	}, fakeAPI{}, js, store, nopRecorder{})

	for i := range b.N {
		msg := &nats.Msg{Subject: "req", Header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-type": {"cloudpartner.offer.cancel.requested"},
			"ce-source": {"/bench"}, "ce-id": {strconv.Itoa(i)}, "ce-datacontenttype": {"application/json"},
		}, Data: []byte(`{"publisherId":"contoso","offerId":"contoso-offer"}`)}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()

	b.ReportAllocs()
	b.ResetTimer()
	for handled := 0; handled < b.N; {
		batch, err := consumer.Fetch(min(b.N-handled, 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for msg := range batch.Messages() {
			h.Handle(ctx, msg)
			handled++
		}
		if err := batch.Error(); err != nil {
			b.Fatal(err)
		}
	}
}
