package service

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

func TestStreamUsage(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQ", Subjects: []string{"req"}, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "UNLIMITED", Subjects: []string{"unlimited"}}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "IDEM", MaxBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, "req", make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	usage, err := streamUsage(js, []string{"REQ", "UNLIMITED", "KV_IDEM"})(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]metrics.StreamUsage{}
	for _, u := range usage {
		byName[u.Stream] = u
	}
	if len(usage) != 3 || len(byName) != 3 {
		t.Fatalf("usage %+v, want REQ, UNLIMITED and KV_IDEM once each", usage)
	}
	if u := byName["REQ"]; u.Messages != 3 || u.Bytes < 300 || u.MaxBytes != 1<<20 {
		t.Errorf("REQ: %+v, want 3 messages, at least 300 bytes, max 1 MiB", u)
	}
	if u := byName["UNLIMITED"]; u != (metrics.StreamUsage{Stream: "UNLIMITED"}) {
		t.Errorf("UNLIMITED: %+v, want empty with max 0 (no limit)", u)
	}
	if u := byName["KV_IDEM"]; u.Messages != 1 || u.Bytes == 0 || u.MaxBytes != 1<<16 {
		t.Errorf("KV_IDEM: %+v, want 1 message, some bytes, max 64 KiB", u)
	}

	t.Run("missing stream", func(t *testing.T) {
		_, err := streamUsage(js, []string{"REQ", "GONE"})(ctx)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("err = %v, want ErrStreamNotFound", err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		done, stop := context.WithCancel(ctx)
		stop()
		if _, err := streamUsage(js, []string{"REQ"})(done); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})

	// Through the registry, as /metrics serves it.
	t.Run("scrape", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		metrics.RegisterStorage(reg, streamUsage(js, []string{"REQ", "KV_IDEM"}))
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					got[f.GetName()] = append(got[f.GetName()], l.GetValue())
				}
			}
		}
		for _, name := range []string{"cpcancel_stream_bytes", "cpcancel_stream_max_bytes", "cpcancel_stream_messages"} {
			if slices.Sort(got[name]); !slices.Equal(got[name], []string{"KV_IDEM", "REQ"}) {
				t.Errorf("%s for streams %v, want KV_IDEM and REQ", name, got[name])
			}
		}
	})
}

func TestStreamUsageStreams(t *testing.T) {
	cfg := config.Config{
		Streams:     config.Streams{RequestStream: "R", ResultStream: "O", DeadLetterStream: "D"},
		Follow:      config.Follow{Stream: "F"},
		Idempotency: config.Idempotency{Bucket: "I"},
	}
	if got := storageStreams(cfg); !slices.Equal(got, []string{"R", "O", "D", "KV_I"}) {
		t.Errorf("without follow: %v", got)
	}
	cfg.Follow.Enabled = true
	if got := storageStreams(cfg); !slices.Equal(got, []string{"R", "O", "D", "F", "KV_I"}) {
		t.Errorf("with follow: %v", got)
	}
}
