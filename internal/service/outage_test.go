package service_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

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
		env          map[string]string
		// calledDuring says whether the API is called while the stream is unavailable;
		// storedDuring is how many results each request has meanwhile.
		calledDuring bool
		storedDuring int
		// outcomes are each request's results in the end.
		outcomes []cancelevent.Outcome
	}{
		// The answer is recorded but its result cannot be stored: the message is handed back,
		// and its redelivery after the outage stores the recorded result without calling the API.
		{"result stream", "CPCANCEL_RESULTS", nil, true, 0, []cancelevent.Outcome{cancelevent.Cancelling}},
		// The claim cannot be stored: the API is not called until the bucket is back.
		{"state bucket", "KV_CPCANCEL_IDEMPOTENCY", nil, false, 0, []cancelevent.Outcome{cancelevent.Cancelling}},
		// The result is stored but following cannot be scheduled: the message is handed back, and
		// its redelivery schedules it (storing the same result again is dropped as a duplicate).
		{"follow stream", "CPCANCEL_FOLLOW", followEnv, true, 1, []cancelevent.Outcome{cancelevent.Cancelling, cancelevent.Cancelled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each has a nats-server and a cpcancel of its own
			st, p := processStack(t, emulator.Options{OperationDuration: 300 * time.Millisecond})
			env := map[string]string{"CPCANCEL_MAX_ATTEMPTS": "1", "CPCANCEL_CONCURRENCY": "8"}
			maps.Copy(env, tc.env)
			st.svc = startService(t, st.env(env))
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
			if n, want := msgs(ctx, t, st.js, "CPCANCEL_RESULTS"), uint64(tc.storedDuring*len(offers)); n != want {
				t.Fatalf("%d results stored during the outage, want %d", n, want)
			}
			wantCalls := 0
			if tc.calledDuring {
				wantCalls = 1
			}
			for _, o := range offers {
				if n := st.emu.CancelCount("contoso", o); n != wantCalls {
					t.Errorf("%s: API called %d times during the outage, want %d", o, n, wantCalls)
				}
			}

			if err := p.DenyPublish(); err != nil {
				t.Fatal(err)
			}
			lifted := time.Now()
			results := st.waitStream(t, "CPCANCEL_RESULTS", len(tc.outcomes)*len(offers), time.Minute)
			t.Logf("%s unavailable for %s: all %d results stored %s after it came back",
				tc.stream, lifted.Sub(began).Round(time.Second), len(results), time.Since(lifted).Round(100*time.Millisecond))
			got := map[string][]cancelevent.Outcome{}
			for _, r := range results {
				if r.ev == nil || r.data.Attempts != 1 {
					t.Fatalf("result %q: want a CloudEvent after 1 attempt", r.body)
				}
				got[r.data.RequestID] = append(got[r.data.RequestID], cancelevent.OutcomeOf(r.ev.Type()))
			}
			for _, o := range offers {
				if !slices.Equal(got[o], tc.outcomes) {
					t.Errorf("request %s: results %v, want %v", o, got[o], tc.outcomes)
				}
				if n := st.emu.CancelCount("contoso", o); n != 1 {
					t.Errorf("%s: API called %d times, want once", o, n)
				}
			}
			if n := msgs(ctx, t, st.js, "CPCANCEL_DEADLETTER"); n != 0 {
				t.Errorf("%d dead letters, want none", n)
			}
		})
	}
}

// processStack is a stack, with an emulator configured by opts, on a nats-server process whose
// publish permissions the test can take away from cpcancel (natstest.Process.DenyPublish);
// st.js is the test's own connection, which keeps them.
func processStack(t *testing.T, opts emulator.Options) (*stack, *natstest.Process) {
	t.Helper()
	p := natstest.StartProcess(t, t.TempDir())
	_, js := p.ConnectAdmin(t)
	st := &stack{natsURL: p.URL(), js: js}
	st.serveEmulator(t, opts)
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
