package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/natstest"
)

// pollStore returns a Store on a fresh bucket of a real embedded server.
func pollStore(t *testing.T) (*Store, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "polls", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return New(js, kv, 5*time.Second), kv
}

func TestOperationKey(t *testing.T) {
	a, b := OperationKey("https://api.example/ops/1"), OperationKey("https://api.example/ops/2")
	if len(a) != len("op.")+32 || a[:3] != "op." || a == b {
		t.Fatalf("keys %q %q", a, b)
	}
	if a != OperationKey("https://api.example/ops/1") {
		t.Fatal("key not deterministic")
	}
	if len(Key("s", "id")) == len(a) {
		t.Fatal("an operation key could collide with a request key")
	}
}

func TestClaimPollOncePerRevision(t *testing.T) {
	s, _ := pollStore(t)
	ctx := context.Background()
	loc := "https://api.example/ops/1"
	none, err := s.Operation(ctx, loc)
	if err != nil || none.Revision != 0 {
		t.Fatalf("absent record: %+v %v", none, err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	first, err := s.ClaimPoll(ctx, loc, none, now)
	if err != nil {
		t.Fatal(err)
	}
	// A second claim from the same (now stale) read loses, whether the record was absent or not.
	if _, err := s.ClaimPoll(ctx, loc, none, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	if _, err := s.ClaimPoll(ctx, loc, first, now.Add(time.Minute)); err != nil {
		t.Fatalf("claim at the current revision: %v", err)
	}
	if _, err := s.ClaimPoll(ctx, loc, first, now.Add(time.Minute)); !errors.Is(err, ErrConflict) {
		t.Fatalf("claim at an old revision: %v, want ErrConflict", err)
	}
	got, err := s.Operation(ctx, loc)
	if err != nil || !got.LastPoll.Equal(now.Add(time.Minute)) {
		t.Fatalf("record %+v %v", got, err)
	}
}

// slowPoll claims loc's poll at now (a, a slow poll) and again a minute later (b, someone else's
// poll that comes after it), as two workers would.
func slowPoll(t *testing.T, s *Store, loc string, now time.Time) (a, b PollEntry) {
	t.Helper()
	a, err := s.ClaimPoll(context.Background(), loc, PollEntry{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = s.ClaimPoll(context.Background(), loc, a, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestRecordPollKeepsTerminal(t *testing.T) {
	s, _ := pollStore(t)
	ctx := context.Background()
	loc := "https://api.example/ops/2"
	now := time.Now().UTC().Truncate(time.Millisecond)
	// A slow poll: someone else claims after it and records a terminal answer first.
	a, b := slowPoll(t, s, loc, now)
	if err := s.RecordPoll(ctx, loc, b, Poll{Status: "canceled", Terminal: true, Cancelled: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPoll(ctx, loc, a, Poll{Status: "running"}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Operation(ctx, loc)
	if got.Status != "canceled" || !got.Terminal || !got.LastPoll.Equal(now.Add(time.Minute)) {
		t.Fatalf("terminal record replaced: %+v", got.Poll)
	}

	// A non-terminal record is replaced by a later answer, keeping the later claim time.
	loc = "https://api.example/ops/3"
	a, _ = slowPoll(t, s, loc, now)
	if err := s.RecordPoll(ctx, loc, a, Poll{Status: "failed", Terminal: true, Messages: []string{"m"}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Operation(ctx, loc)
	if got.Status != "failed" || !got.Terminal || got.Messages[0] != "m" || !got.LastPoll.Equal(now.Add(time.Minute)) {
		t.Fatalf("record %+v", got.Poll)
	}
}

func TestRecordPollKeepsALaterHold(t *testing.T) {
	s, _ := pollStore(t)
	ctx := context.Background()
	loc := "https://api.example/ops/5"
	now := time.Now().UTC().Truncate(time.Millisecond)
	// A slow poll: someone else polls after it and is told to wait (Retry-After) first.
	a, b := slowPoll(t, s, loc, now)
	held := b
	held.NotBefore = now.Add(time.Hour)
	if _, err := s.ClaimPoll(ctx, loc, held, b.LastPoll); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPoll(ctx, loc, a, Poll{Status: "running"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Operation(ctx, loc); got.Status != "running" || !got.NotBefore.Equal(now.Add(time.Hour)) {
		t.Fatalf("record %+v: the later poll's hold is lost", got.Poll)
	}
}

func TestClaimPollAfterDelete(t *testing.T) {
	s, kv := pollStore(t)
	ctx := context.Background()
	loc := "https://api.example/ops/4"
	if _, err := s.ClaimPoll(ctx, loc, PollEntry{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, OperationKey(loc)); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Operation(ctx, loc)
	if err != nil || cur.Revision != 0 {
		t.Fatalf("deleted record: %+v %v", cur, err)
	}
	if _, err := s.ClaimPoll(ctx, loc, cur, time.Now()); err != nil {
		t.Fatalf("claim over a delete marker: %v", err)
	}
}
