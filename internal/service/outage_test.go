package service_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// Our own infrastructure failing, on a real nats-server that stops serving one stream to
// cpcancel while the test still reads it: nothing is lost, nothing is answered twice, and no
// request uses up an attempt (CPCANCEL_MAX_ATTEMPTS=1, so one used would end it failed).
func TestOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out publish timeouts")
	}
	for _, tc := range []struct {
		name, stream string
		// calledDuring says whether the API is called while the stream is unavailable.
		calledDuring bool
	}{
		// The answer is recorded but its result cannot be stored: the message is handed back,
		// and its redelivery after the outage stores the recorded result without calling the API.
		{"result stream", "CPCANCEL_RESULTS", true},
		// The claim cannot be stored: the API is not called until the bucket is back.
		{"state bucket", "KV_CPCANCEL_IDEMPOTENCY", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, p := processStack(t)
			st.svc = startService(t, st.env(map[string]string{"CPCANCEL_MAX_ATTEMPTS": "1", "CPCANCEL_CONCURRENCY": "8"}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			subjects, err := natstest.OutageSubjects(ctx, st.js, tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.DenyPublish(subjects...); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			offers := publishMany(t, st, "outage", 10)
			if tc.calledDuring {
				waitCalled(t, st, offers, 30*time.Second)
			}
			// Long enough for every request to fail at least once: a publish gives up after 5s.
			time.Sleep(7*time.Second - time.Since(began))
			if n := msgs(ctx, t, st.js, "CPCANCEL_RESULTS"); n != 0 {
				t.Fatalf("%d results stored during the outage", n)
			}
			for _, o := range offers {
				if n, want := st.emu.CancelCount("contoso", o), map[bool]int{true: 1, false: 0}[tc.calledDuring]; n != want {
					t.Errorf("%s: API called %d times during the outage, want %d", o, n, want)
				}
			}

			if err := p.DenyPublish(); err != nil {
				t.Fatal(err)
			}
			lifted := time.Now()
			if twice := checkExactlyOnce(t, st, offers); twice != 0 {
				t.Errorf("%d requests sent to the API twice", twice)
			}
			t.Logf("%s unavailable for %s: all %d results stored %s after it came back",
				tc.stream, lifted.Sub(began).Round(time.Second), len(offers), time.Since(lifted).Round(100*time.Millisecond))
			results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", len(offers), time.Second))
			for id, r := range results {
				if got := cancelevent.OutcomeOf(r.ev.Type()); got != cancelevent.Cancelling || r.data.Attempts != 1 {
					t.Errorf("request %s: %s after %d attempts, want cancelling after 1", id, got, r.data.Attempts)
				}
			}
			if n := msgs(ctx, t, st.js, "CPCANCEL_DEADLETTER"); n != 0 {
				t.Errorf("%d dead letters, want none", n)
			}
		})
	}
}

// processStack is a stack on a nats-server process whose publish permissions the test can take
// away from cpcancel (natstest.Process.DenyPublish); st.js is the test's own connection, which
// keeps them.
func processStack(t *testing.T) (*stack, *natstest.Process) {
	t.Helper()
	p := natstest.StartProcess(t, t.TempDir())
	nc, err := nats.Connect(p.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{natsURL: p.URL(), js: js}
	st.serveEmulator(t, emulator.Options{})
	return st, p
}

// waitCalled waits until the API has been called for every offer.
func waitCalled(t *testing.T, st *stack, offers []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, o := range offers {
		for st.emu.CancelCount("contoso", o) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: API not called within %s", o, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// msgs is how many messages stream holds.
func msgs(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(fmt.Errorf("stream %s: %w", stream, err))
	}
	return info.State.Msgs
}
