package main

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
)

// TestFloorDoesCpcancelsWrites runs the floor on cpcancel's topology and checks that it does the
// work it stands for: one result per request, a record holding it in the bucket, the request
// acked, and the API called once per request.
func TestFloorDoesCpcancelsWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	top := service.Topology(config.Default())
	bound, err := broker.Provision(ctx, js, top)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(ctx, top.RequestStream, top.Consumer); err != nil {
		t.Fatal(err)
	}
	api, err := emulator.Listen("127.0.0.1:0", emulator.Options{Token: "floor-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })

	const requests = 200
	for i := range requests {
		id := strconv.Itoa(i)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: top.RequestSubject, Header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType}, "ce-source": {"/floor-test"}, "ce-id": {id},
		}, Data: []byte(`{"publisherId":"floor","offerId":"offer-` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CPCANCEL_NATS_URL", srv.ClientURL())
	t.Setenv("CPCANCEL_CLOUDPARTNER_BASE_URL", api.URL)
	t.Setenv("CPCANCEL_CLOUDPARTNER_TOKEN", "floor-token")
	t.Setenv("CPCANCEL_CONSUMER", "floor")
	t.Setenv("CPCANCEL_CONCURRENCY", "16")

	seen := map[string]int{}
	var mu sync.Mutex
	all := make(chan struct{})
	results, err := js.OrderedConsumer(ctx, top.ResultStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := results.Consume(func(m jetstream.Msg) {
		var ev struct {
			Type string
			Data struct{ RequestID string }
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Errorf("result %q: %v", m.Data(), err)
			return
		}
		if ev.Type != "cloudpartner.offer.cancel.cancelling" {
			t.Errorf("result type %q, want cancelling", ev.Type)
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[ev.Data.RequestID]++; len(seen) == requests {
			close(all)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx) }()
	select {
	case <-all:
	case err := <-done:
		t.Fatalf("floor stopped before every result was stored: %v", err)
	case <-ctx.Done():
		t.Fatalf("only %d of %d results stored", len(seen), requests)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}

	mu.Lock()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("request %s: %d results, want 1", id, n)
		}
	}
	mu.Unlock()
	stream, err := js.Stream(ctx, top.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	if si, err := stream.Info(ctx); err != nil || si.State.Msgs != 0 {
		t.Errorf("request stream holds %v messages (err %v), want 0: every request acked", si.State.Msgs, err)
	}
	keys, err := bound.Bucket.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for key := range keys.Keys() {
		e, err := bound.Bucket.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		// The record replaced the claim, and holds the result.
		if want := `{"phase":"answered","attempts":1}` + "\n"; len(e.Value()) <= len(want) || string(e.Value()[:len(want)]) != want {
			t.Errorf("record %s = %.60q…, want the answered line and the result", key, e.Value())
		}
		records++
	}
	if records != requests {
		t.Errorf("%d records in the bucket, want %d", records, requests)
	}
	for i := range requests {
		if n := api.CancelCount("floor", "offer-"+strconv.Itoa(i)); n != 1 {
			t.Errorf("offer-%d: API called %d times, want 1", i, n)
		}
	}
}
