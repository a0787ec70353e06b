package natsce

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
)

func BenchmarkDecode(b *testing.B) {
	for _, mode := range []Mode{Binary, Structured} {
		b.Run(mode.String(), func(b *testing.B) {
			hdr, body, err := Encode(context.Background(), resultEvent(b), mode)
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
			ev := resultEvent(b)
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

func BenchmarkMarshalJSON(b *testing.B) {
	ev := resultEvent(b)
	ev.DataBase64 = false // JSON data, as results carry
	b.Run("MarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ev.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("MarshalStructured", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := MarshalStructured(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
