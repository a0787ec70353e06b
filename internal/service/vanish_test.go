package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/natsce"
)

// Regression: with the state bucket deleted while cpcancel ran (by hand, or lost with a
// nats-server's store), every request was handed back for ever: nothing re-created the bucket
// until a restart; and a deleted request consumer stopped the service. Now cpcancel notices what
// it provisioned is gone and provisions it again, and the requests waiting meanwhile are
// answered. The same holds for the result stream.
func TestProvisionedTopologyVanishes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a topology check and a retry")
	}
	st := startStack(t, nil)
	st.publish(t, natsce.Binary, request(t, "/vanish", "before", "contoso", "sync-offer"))
	st.waitStream(t, "CPCANCEL_RESULTS", 1, 20*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := st.js.DeleteKeyValue(ctx, "CPCANCEL_IDEMPOTENCY"); err != nil {
		t.Fatal(err)
	}
	if err := st.js.DeleteStream(ctx, "CPCANCEL_RESULTS"); err != nil {
		t.Fatal(err)
	}
	if err := st.js.DeleteConsumer(ctx, "CPCANCEL_REQUESTS", "cpcancel"); err != nil {
		t.Fatal(err)
	}
	st.publish(t, natsce.Binary, request(t, "/vanish", "after", "contoso", "sync-offer"))

	// Within a topology check and the request's next delivery.
	deadline := time.Now().Add(45 * time.Second)
	for {
		_, kvErr := st.js.KeyValue(ctx, "CPCANCEL_IDEMPOTENCY")
		_, streamErr := st.js.Stream(ctx, "CPCANCEL_RESULTS")
		if kvErr == nil && streamErr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not provisioned again after 45s: bucket %v, result stream %v", kvErr, streamErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", 1, 45*time.Second))
	if r, ok := results["after"]; !ok || r.data.StatusCode != 200 {
		t.Fatalf("results %v, want the cancelled result of the request published after the deletion", results)
	}
	if n := st.emu.CancelCount("contoso", "sync-offer"); n != 2 {
		t.Errorf("API called %d times, want 2: once per request", n)
	}
	// The request stream keeps nothing: the waiting request was acked once answered.
	s, err := st.js.Stream(ctx, "CPCANCEL_REQUESTS")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("request stream: %+v %v, want empty", info.State, err)
	}
	if _, err := st.js.Consumer(ctx, "CPCANCEL_REQUESTS", "cpcancel"); errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Error("request consumer gone")
	}
}

// A nats-server that comes back with an empty store (its disk lost) has none of the topology:
// cpcancel provisions it again and answers the requests published afterwards, each with one call.
func TestNATSStoreLost(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts nats-server")
	}
	st, env := failureStack(t, 0)
	st.svc = startService(t, env)
	before := publishMany(t, st, "before", 20)
	checkExactlyOnce(t, st, before)

	st.nats.RestartEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := st.js.Consumer(ctx, "CPCANCEL_REQUESTS", "cpcancel")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request consumer not provisioned again 30s after the store was lost: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := publishMany(t, st, "after", 20)
	if twice := checkExactlyOnce(t, st, after); twice != 0 {
		t.Errorf("%d requests sent to the API twice", twice)
	}
}
