package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStorageGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	var deadline time.Duration
	RegisterStorage(reg, func(ctx context.Context) ([]StreamUsage, error) {
		d, ok := ctx.Deadline()
		if !ok {
			t.Error("usage called without a deadline")
		}
		deadline = time.Until(d)
		return []StreamUsage{
			{Stream: "CPCANCEL_REQUESTS", Bytes: 2048, MaxBytes: 1 << 30, Messages: 3},
			{Stream: "KV_CPCANCEL_IDEMPOTENCY", Bytes: 512, MaxBytes: 0, Messages: 1},
		}, nil
	})
	want := `
# HELP cpcancel_stream_bytes Bytes stored in a JetStream stream cpcancel uses (the idempotency bucket's is KV_<bucket>).
# TYPE cpcancel_stream_bytes gauge
cpcancel_stream_bytes{stream="CPCANCEL_REQUESTS"} 2048
cpcancel_stream_bytes{stream="KV_CPCANCEL_IDEMPOTENCY"} 512
# HELP cpcancel_stream_max_bytes The stream's limit on stored bytes; 0 when it has none.
# TYPE cpcancel_stream_max_bytes gauge
cpcancel_stream_max_bytes{stream="CPCANCEL_REQUESTS"} 1.073741824e+09
cpcancel_stream_max_bytes{stream="KV_CPCANCEL_IDEMPOTENCY"} 0
# HELP cpcancel_stream_messages Messages stored in the stream.
# TYPE cpcancel_stream_messages gauge
cpcancel_stream_messages{stream="CPCANCEL_REQUESTS"} 3
cpcancel_stream_messages{stream="KV_CPCANCEL_IDEMPOTENCY"} 1
# HELP cpcancel_stream_usage_errors_total Scrapes whose read of the streams' usage failed or timed out; they exported no cpcancel_stream_* gauges.
# TYPE cpcancel_stream_usage_errors_total counter
cpcancel_stream_usage_errors_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if deadline <= 0 || deadline > storageTimeout {
		t.Errorf("usage had %v left, want at most %v", deadline, storageTimeout)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestStorageUsageError(t *testing.T) {
	reg := prometheus.NewRegistry()
	fail := true
	RegisterStorage(reg, func(ctx context.Context) ([]StreamUsage, error) {
		if fail {
			return []StreamUsage{{Stream: "half-read", Bytes: 1}}, errors.New("nats: timeout")
		}
		return []StreamUsage{{Stream: "S", Bytes: 1, MaxBytes: 10, Messages: 1}}, nil
	})
	for i := range 2 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if len(families) != 1 || families[0].GetName() != "cpcancel_stream_usage_errors_total" {
			t.Fatalf("after a failed read, gathered %v, want only the error counter", families)
		}
		if got := families[0].GetMetric()[0].GetCounter().GetValue(); got != float64(i+1) {
			t.Errorf("scrape %d: %v errors counted, want %d", i+1, got, i+1)
		}
	}
	fail = false
	if n, err := testutil.GatherAndCount(reg, "cpcancel_stream_bytes", "cpcancel_stream_max_bytes", "cpcancel_stream_messages"); err != nil || n != 3 {
		t.Errorf("after a good read, %d gauges (%v), want 3", n, err)
	}
}
