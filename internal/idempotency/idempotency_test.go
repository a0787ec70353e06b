package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/idempotency"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

func open(t *testing.T, lease time.Duration) (*idempotency.Store, jetstream.KeyValue, jetstream.JetStream) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx := context.Background()
	s, err := idempotency.Open(ctx, js, idempotency.Config{Bucket: "IDEM", TTL: time.Hour, Lease: lease, Provision: true})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "IDEM")
	if err != nil {
		t.Fatal(err)
	}
	return s, kv, js
}

// TestExpiredLease claims a key whose lease expired (the server left a marker in its place).
func TestExpiredLease(t *testing.T) {
	s, kv, _ := open(t, time.Second)
	ctx := context.Background()
	key := idempotency.Key("/src", "crashed")
	if _, _, err := s.Claim(ctx, key); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of 1s still there after 10s (Get: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lease, recorded, err := s.Claim(ctx, key)
	if err != nil || lease == nil || recorded != nil {
		t.Fatalf("claim after the lease expired = %v, %q, %v; want a new lease", lease, recorded, err)
	}
}

// TestLifecycle walks one key through absent → leased → released → leased → done, and checks what
// a second claimant sees at each step and what operators read in the bucket.
func TestLifecycle(t *testing.T) {
	s, kv, js := open(t, time.Minute)
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

	if ttl := entryHeader(t, js, key).Get("Nats-TTL"); ttl != "1m0s" {
		t.Errorf("lease entry has Nats-TTL %q, want the lease 1m0s", ttl)
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
	if ttl := entryHeader(t, js, key).Get("Nats-TTL"); ttl != "" {
		t.Errorf("record has Nats-TTL %q, want none: it lives for the bucket's TTL", ttl)
	}
}

// entryHeader returns the headers of key's latest entry as the server stores them.
func entryHeader(t *testing.T, js jetstream.JetStream, key string) nats.Header {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, "KV_IDEM")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "$KV.IDEM."+key)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header
}
