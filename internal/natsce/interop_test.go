package natsce

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// These tests hold natsce to sdk-go's own NATS JetStream protocol binding, the client other
// teams publish requests with and read results with, over a real embedded nats-server.

const (
	interopStream = "CE_INTEROP"
	interopWait   = 10 * time.Second
)

// startJetStream runs an embedded JetStream server for the test, with one stream on interop.>,
// and returns a connection to it.
func startJetStream(t *testing.T) (*nats.Conn, jetstream.Stream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(interopWait) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), interopWait)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: interopStream, Subjects: []string{"interop.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return nc, stream
}

// requestEvent is a request as another team would publish it with sdk-go: a source with `/`
// and a subject with a space.
func requestEvent(t *testing.T) *event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("req+0001")
	ev.SetSource("/publisher/app")
	ev.SetType(requestType)
	ev.SetSubject("publishers/contoso/offers/contoso offer")
	ev.SetTime(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	ev.SetExtension("traceparent", traceParent)
	if err := ev.SetData(event.ApplicationJSON, map[string]any{"publisherId": "contoso", "offerId": "contoso-offer"}); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// resultEvent is a result as cpcancel publishes it.
func resultEvent(t testing.TB) *event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("0b9e4c5e-5f3a-5d35-9b8b-3a0f4c8e2d17")
	ev.SetSource("/cpcancel")
	ev.SetType("cloudpartner.offer.cancel.cancelling")
	ev.SetSubject("publishers/contoso/offers/contoso-offer")
	ev.SetTime(time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC))
	ev.SetExtension("traceparent", traceParent)
	data := []byte(`{"publisherId":"contoso","offerId":"contoso-offer","requestId":"req-0001","requestSource":"/publisher/app","statusCode":202,"location":"https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31","attempts":1}`)
	if err := ev.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// TestDecodeReadsReferenceSender publishes with sdk-go's Sender and decodes what JetStream stored.
func TestDecodeReadsReferenceSender(t *testing.T) {
	nc, stream := startJetStream(t)
	tests := []struct {
		name       string
		subject    string
		structured bool
	}{
		{name: "binary", subject: "interop.ref.binary"},
		{name: "structured", subject: "interop.ref.structured", structured: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), interopWait)
			defer cancel()
			sender, err := cejs.NewSenderFromConn(nc, interopStream, tc.subject, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sender.Close(context.Background()) })
			sendCtx := ctx
			if tc.structured {
				sendCtx = binding.WithForceStructured(ctx)
			}
			want := requestEvent(t)
			if err := sender.Send(sendCtx, binding.ToMessage(want)); err != nil {
				t.Fatalf("reference Send: %v", err)
			}

			stored, err := stream.GetLastMsgForSubject(ctx, tc.subject)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("reference sender wrote headers %q, body %s", stored.Header, stored.Data)
			// Make sure the cases this test claims are the cases it runs: sdk-go's binary mode
			// writes lowercase ce- headers and no Content-Type, its structured mode no header at all.
			if _, ok := stored.Header["Content-Type"]; ok {
				t.Errorf("reference sender now writes Content-Type; update the test's premise")
			}
			if tc.structured && len(stored.Header) != 0 {
				t.Errorf("reference structured message has headers %q; update the test's premise", stored.Header)
			}
			if !tc.structured && stored.Header.Get("ce-subject") != "publishers/contoso/offers/contoso offer" {
				t.Errorf("reference ce-subject = %q, want the raw value", stored.Header.Get("ce-subject"))
			}

			got, err := Decode(ctx, stored.Header, stored.Data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if g, w := view(got), view(want); !reflect.DeepEqual(g, w) {
				t.Errorf("Decode of the reference message\n got  %+v\n want %+v", g, w)
			}
		})
	}
}

// TestReferenceConsumerReadsEncode publishes Encode's output and receives it with sdk-go's
// Consumer, as a team chaining cpcancel's results would.
func TestReferenceConsumerReadsEncode(t *testing.T) {
	nc, _ := startJetStream(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{Binary, Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), interopWait)
			defer cancel()
			subject := "interop.ours." + mode.String()
			want := resultEvent(t)
			h, body, err := Encode(ctx, want, mode)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: body}); err != nil {
				t.Fatal(err)
			}

			got := receiveWithReference(ctx, t, nc, subject)
			if got.Source() != "/cpcancel" {
				t.Errorf("reference reader source = %q, want /cpcancel with its / intact", got.Source())
			}
			if string(got.Data()) != string(want.Data()) {
				t.Errorf("reference reader data\n got  %s\n want %s", got.Data(), want.Data())
			}
			if g, w := view(got), view(want); !reflect.DeepEqual(g, w) {
				t.Errorf("reference reader event\n got  %+v\n want %+v", g, w)
			}
		})
	}
}

// receiveWithReference reads one event from subject with sdk-go's JetStream Consumer.
func receiveWithReference(ctx context.Context, t *testing.T, nc *nats.Conn, subject string) *event.Event {
	t.Helper()
	consumer, err := cejs.NewConsumerFromConn(nc, interopStream, subject, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inboundCtx, stopInbound := context.WithCancel(ctx)
	inbound := make(chan error, 1)
	go func() { inbound <- consumer.OpenInbound(inboundCtx) }()
	defer func() {
		stopInbound()
		select {
		case err := <-inbound:
			if err != nil && !strings.Contains(err.Error(), "closed") {
				t.Errorf("reference OpenInbound: %v", err)
			}
		case <-time.After(interopWait):
			t.Error("reference OpenInbound did not return")
		}
		_ = consumer.Close(context.Background())
	}()

	type received struct {
		msg binding.Message
		err error
	}
	got := make(chan received, 1)
	go func() {
		msg, err := consumer.Receive(ctx)
		got <- received{msg, err}
	}()
	var r received
	select {
	case r = <-got:
	case err := <-inbound:
		inbound <- err // for the deferred wait
		t.Fatalf("reference OpenInbound stopped early: %v", err)
	}
	if r.err != nil {
		t.Fatalf("reference Receive: %v", r.err)
	}
	defer func() { _ = r.msg.Finish(nil) }()
	ev, err := binding.ToEvent(ctx, r.msg)
	if err != nil {
		t.Fatalf("reference reader: %v", err)
	}
	return ev
}
