package state

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	result, final := []byte(`{"id":"r","data":{"m":"a\nb"}}`), []byte(`{"id":"f"}`)
	for _, st := range []State{
		{Phase: Claimed, Holder: "h#1", LeaseUntil: time.Unix(100, 0).UTC()},
		{Phase: Answered, Attempts: 2, Result: result, RequestSeq: 7},
		{Phase: Final, Result: result, Final: final, ResultSeq: 3, FinalSeq: 9,
			Follow: &Follow{Location: "https://x/op", FirstPoll: time.Unix(1, 0).UTC(), Deadline: time.Unix(2, 0).UTC(), Scheduled: true}},
	} {
		v, err := encode(&st)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode(v)
		if err != nil {
			t.Fatalf("decode %q: %v", v, err)
		}
		if got.Phase != st.Phase || !bytes.Equal(got.Result, st.Result) || !bytes.Equal(got.Final, st.Final) ||
			got.Attempts != st.Attempts || !got.LeaseUntil.Equal(st.LeaseUntil) || (got.Follow == nil) != (st.Follow == nil) {
			t.Errorf("round trip of %+v gave %+v", st, got)
		}
	}
	for _, bad := range []string{"", "{}", `{"phase":"answered","resultBytes":50}` + "\n{}", `{"phase":"final","resultBytes":2,"finalBytes":9}` + "\n{}\n{}",
		`{"phase":"Answered"}`, `{"phase":"cancelled"}`} {
		if _, err := decode([]byte(bad)); err == nil {
			t.Errorf("decode(%q) accepted", bad)
		}
	}
}

func TestLease(t *testing.T) {
	ctx := context.Background()
	s, _ := pollStore(t)

	l, _, err := s.Claim(ctx, "k1", "a", time.Minute)
	if err != nil || l == nil {
		t.Fatalf("first claim: %v", err)
	}
	var wait *WaitError
	if _, _, err := s.Claim(ctx, "k1", "b", time.Minute); !errors.As(err, &wait) || !wait.Held {
		t.Fatalf("second claim while held: %v", err)
	}

	// Waiting keeps the attempts; a claim before the next try is due waits, one after takes over.
	if err := l.Wait(ctx, 2, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Claim(ctx, "k1", "b", time.Minute); !errors.As(err, &wait) || wait.Held {
		t.Fatalf("claim before the next try: %v", err)
	}
	e, _ := s.Get(ctx, "k1")
	e.RetryAt = time.Now().Add(-time.Second)
	if _, err := s.Update(ctx, "k1", e.State, e.Revision); err != nil {
		t.Fatal(err)
	}
	l2, _, err := s.Claim(ctx, "k1", "b", 50*time.Millisecond)
	if err != nil || l2.State().Attempts != 2 {
		t.Fatalf("claim of a due retry: %v, attempts %d", err, l2.State().Attempts)
	}

	// The short lease runs out; another worker takes over; the first one's lease is lost.
	time.Sleep(100 * time.Millisecond)
	l3, _, err := s.Claim(ctx, "k1", "c", time.Minute)
	if err != nil || l3 == nil {
		t.Fatalf("takeover of an expired lease: %v", err)
	}
	if err := l2.Ensure(ctx, time.Minute); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Ensure after a takeover: %v, want ErrLeaseLost", err)
	}
	if _, err := l2.Settle(ctx, State{Phase: Answered, Result: []byte(`{}`)}); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Settle after a takeover: %v, want ErrLeaseLost", err)
	}

	// Ensure renews only when less than asked for is left.
	before := l3.State().LeaseUntil
	if err := l3.Ensure(ctx, time.Second); err != nil || !l3.State().LeaseUntil.Equal(before) {
		t.Errorf("Ensure with time left renewed: %v", err)
	}
	if err := l3.Ensure(ctx, 2*time.Minute); err != nil || !l3.State().LeaseUntil.After(before) {
		t.Errorf("Ensure without enough time left did not renew: %v", err)
	}

	// Settled: later claims get the record, no lease.
	if _, err := l3.Settle(ctx, State{Phase: Answered, Attempts: 3, Result: []byte(`{"id":"r"}`)}); err != nil {
		t.Fatal(err)
	}
	l4, rec, err := s.Claim(ctx, "k1", "d", time.Minute)
	if err != nil || l4 != nil || rec.Phase != Answered || string(rec.Result) != `{"id":"r"}` || rec.Attempts != 3 {
		t.Fatalf("claim of an answered request: lease %v, record %+v, %v", l4, rec, err)
	}
}

// A record that vanishes while its lease is held is written anew by the holder, unless another
// worker claimed the request first: then the lease is lost.
func TestLeaseRecordGone(t *testing.T) {
	ctx := context.Background()
	s, kv := pollStore(t)
	l, _, err := s.Claim(ctx, "k1", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Settle(ctx, State{Phase: Answered, Attempts: 1, Result: []byte(`{"id":"r"}`)}); err != nil {
		t.Fatalf("Settle after the record vanished: %v", err)
	}
	if e, err := s.Get(ctx, "k1"); err != nil || e.Phase != Answered {
		t.Fatalf("record %+v %v, want answered", e.State, err)
	}

	l, _, err = s.Claim(ctx, "k2", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if other, _, err := s.Claim(ctx, "k2", "b", time.Minute); err != nil || other == nil {
		t.Fatalf("claim of a vanished record: %v", err)
	}
	if err := l.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Renew after another claim on the vanished record: %v, want ErrLeaseLost", err)
	}
}
