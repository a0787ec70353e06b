package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// With CPCANCEL_PROVISION=false the watch only says what has gone, once a minute at most; with it
// true it provisions the topology again.
func TestTopologyWatch(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := Topology(config.Default())
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, topo.Bucket); err != nil {
		t.Fatal(err)
	}
	watch := func(provision bool) string {
		var logs bytes.Buffer
		w := topologyWatch{js: js, topology: topo, provision: provision, every: 20 * time.Millisecond,
			log: slog.New(slog.NewTextHandler(&logs, nil))}
		wctx, stop := context.WithTimeout(ctx, 500*time.Millisecond)
		defer stop()
		w.run(wctx)
		return logs.String()
	}

	logs := watch(false)
	if n := strings.Count(logs, "CPCANCEL_PROVISION=false"); n != 1 || !strings.Contains(logs, "bucket CPCANCEL_IDEMPOTENCY") {
		t.Errorf("logged %d times, want once naming the bucket:\n%s", n, logs)
	}
	if _, err := js.KeyValue(ctx, topo.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("bucket %v with CPCANCEL_PROVISION=false, want still gone", err)
	}

	logs = watch(true)
	if _, err := js.KeyValue(ctx, topo.Bucket); err != nil {
		t.Fatalf("bucket not provisioned again: %v", err)
	}
	if n := strings.Count(logs, "provisioning it again"); n != 1 || !strings.Contains(logs, "sent to the API again") {
		t.Errorf("logged %d times, want once saying the records are lost:\n%s", n, logs)
	}
}
