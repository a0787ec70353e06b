package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/idempotency"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

func open(t *testing.T) (*idempotency.Store, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx := context.Background()
	s, err := idempotency.Open(ctx, js, idempotency.Config{Bucket: "IDEM", TTL: time.Hour, Lease: time.Minute, Provision: true})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "IDEM")
	if err != nil {
		t.Fatal(err)
	}
	return s, kv
}

// TestLifecycle walks one key through absent → leased → released → leased → done, and checks what
// a second claimant sees at each step and what operators read in the bucket.
func TestLifecycle(t *testing.T) {
	s, kv := open(t)
	ctx := context.Background()
	key := idempotency.Key("/src", "id-1")

	lease, recorded, err := s.Claim(ctx, key)
	if err != nil || lease == nil || recorded != nil {
		t.Fatalf("first claim = %v, %q, %v; want a lease", lease, recorded, err)
	}
	before := time.Now()
	_, _, err = s.Claim(ctx, key)
	var busy *idempotency.BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("claim while leased: err = %v, want *BusyError", err)
	}
	if d := busy.Until.Sub(before); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("busy until %s from now, want about the 1m lease", d)
	}
	entry, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	v := entry.Value()
	var l struct {
		Owner   string    `json:"owner"`
		Expires time.Time `json:"expires"`
	}
	if v[0] != 'L' || json.Unmarshal(v[1:], &l) != nil || l.Owner == "" || !l.Expires.Equal(busy.Until) {
		t.Errorf("lease value %q: want 'L' and JSON with owner and the expiry %s", v, busy.Until)
	}

	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lease, _, err = s.Claim(ctx, key)
	if err != nil || lease == nil {
		t.Fatalf("claim after release = %v, %v; want a lease", lease, err)
	}
	if err := lease.Complete(ctx, []byte("not json")); err == nil {
		t.Error("Complete accepted a value that is not a JSON object")
	}
	result := []byte(`{"specversion":"1.0","id":"r1"}`)
	if err := lease.Complete(ctx, result); err != nil {
		t.Fatal(err)
	}
	if _, recorded, err = s.Claim(ctx, key); err != nil || string(recorded) != string(result) {
		t.Fatalf("claim after complete = %q, %v; want the recorded result", recorded, err)
	}
}

// TestLegacyRecord reads a result recorded by an earlier version, with a 'D' before the event.
func TestLegacyRecord(t *testing.T) {
	s, kv := open(t)
	ctx := context.Background()
	key := idempotency.Key("/src", "old")
	if _, err := kv.Put(ctx, key, []byte(`D{"id":"r0"}`)); err != nil {
		t.Fatal(err)
	}
	if _, recorded, err := s.Claim(ctx, key); err != nil || string(recorded) != `{"id":"r0"}` {
		t.Fatalf("claim = %q, %v; want the legacy record without its state byte", recorded, err)
	}
}
