package cenats

import (
	"context"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

func benchEvent(b *testing.B) *event.Event {
	ev := event.New()
	ev.SetID("0b9e4c5e-5f3a-5d35-9b8b-3a0f4c8e2d17")
	ev.SetSource("/cpcancel")
	ev.SetType("cloudpartner.offer.cancel.cancelling")
	ev.SetSubject("publishers/contoso/offers/contoso-offer")
	ev.SetTime(time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC))
	data := []byte(`{"publisherId":"contoso","offerId":"contoso-offer","requestId":"req-0001","requestSource":"/publisher/app","statusCode":202,"location":"https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31","attempts":1}`)
	if err := ev.SetData(event.ApplicationJSON, data); err != nil {
		b.Fatal(err)
	}
	return &ev
}

func BenchmarkDecode(b *testing.B) {
	for _, mode := range []Mode{Binary, Structured} {
		b.Run(mode.String(), func(b *testing.B) {
			hdr, body, err := Encode(context.Background(), benchEvent(b), mode)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(context.Background(), hdr, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, mode := range []Mode{Binary, Structured} {
		b.Run(mode.String(), func(b *testing.B) {
			ev := benchEvent(b)
			b.ReportAllocs()
			var hdr nats.Header
			for b.Loop() {
				var err error
				if hdr, _, err = Encode(context.Background(), ev, mode); err != nil {
					b.Fatal(err)
				}
			}
			_ = hdr
		})
	}
}
