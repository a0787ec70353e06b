package service_test

import (
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

// followStack is a stack whose emulator ends operations after opDuration, without a service yet.
func followStack(t *testing.T, opDuration time.Duration) *stack {
	t.Helper()
	return newStack(t, emulator.Options{OperationDuration: opDuration})
}

var followEnv = map[string]string{"CPCANCEL_FOLLOW": "true", "CPCANCEL_FOLLOW_INTERVAL": "100ms", "CPCANCEL_FOLLOW_TIMEOUT": "20s",
	"CPCANCEL_FOLLOW_FIRST_POLL": "100ms"}

func TestFollow(t *testing.T) {
	st := followStack(t, 300*time.Millisecond)
	st.svc = startService(t, st.env(followEnv))
	for _, offer := range []string{"contoso-offer", "legacy-offer", "opfail-offer", "sync-offer"} {
		st.publish(t, natsce.Binary, request(t, "/test", offer, "contoso", offer))
	}
	// Three cancelling results with their final results, and one cancelled (200) not followed.
	results := st.waitStream(t, "CPCANCEL_RESULTS", 7, 20*time.Second)
	byID := map[string]stored{}
	for _, r := range results {
		byID[r.ev.ID()] = r
	}
	cases := []struct {
		offer       string
		final       cancelevent.Outcome
		errCode     string
		operationIs string
	}{
		{"contoso-offer", cancelevent.Cancelled, "", "canceled"},
		{"legacy-offer", cancelevent.Cancelled, "", "canceled"},
		{"opfail-offer", cancelevent.Failed, cancelevent.CodeOperationFailed, "failed"},
	}
	for _, c := range cases {
		t.Run(c.offer, func(t *testing.T) {
			first, ok := byID[cancelevent.ResultID("/test", c.offer, cancelevent.Cancelling)]
			if !ok {
				t.Fatal("no cancelling result")
			}
			final, ok := byID[cancelevent.FinalResultID("/test", c.offer, c.final)]
			if !ok {
				t.Fatalf("no final %s result", c.final)
			}
			d := final.data
			if final.ev.Type() != c.final.Type() || d.RequestID != c.offer || d.OperationStatus != c.operationIs ||
				d.Location != first.data.Location || d.OperationID != first.data.OperationID || d.StatusCode != 200 {
				t.Errorf("final result %s %+v", final.ev.Type(), d)
			}
			if c.errCode == "" && d.Error != nil || c.errCode != "" && (d.Error == nil || d.Error.Code != c.errCode || len(d.Messages) == 0) {
				t.Errorf("final error %+v, messages %q", d.Error, d.Messages)
			}
			if final.ev.Subject() != first.ev.Subject() {
				t.Errorf("subject %q, want %q", final.ev.Subject(), first.ev.Subject())
			}
		})
	}
	if _, ok := byID[cancelevent.ResultID("/test", "sync-offer", cancelevent.Cancelled)]; !ok {
		t.Error("no result for sync-offer")
	}
	waitEmpty(t, st, "CPCANCEL_FOLLOW")
}

func TestFollowTimeout(t *testing.T) {
	st := followStack(t, time.Hour)
	env := map[string]string{"CPCANCEL_FOLLOW": "true", "CPCANCEL_FOLLOW_INTERVAL": "100ms", "CPCANCEL_FOLLOW_TIMEOUT": "500ms",
		"CPCANCEL_FOLLOW_FIRST_POLL": "100ms"}
	st.svc = startService(t, st.env(env))
	st.publish(t, natsce.Binary, request(t, "/test", "slow", "contoso", "slow-offer"))
	rs := st.waitStream(t, "CPCANCEL_RESULTS", 2, 10*time.Second)
	final := rs[1]
	if final.ev.ID() != cancelevent.FinalResultID("/test", "slow", cancelevent.Failed) ||
		final.data.Error == nil || final.data.Error.Code != cancelevent.CodeFollowTimeout || final.data.OperationStatus != "running" {
		t.Errorf("final result %s %+v %+v", final.ev.ID(), final.data, final.data.Error)
	}
	waitEmpty(t, st, "CPCANCEL_FOLLOW")
}

// TestFollowSurvivesRestart stops cpcancel while an operation is followed: the next instance
// finishes the follow, and the final result is stored once.
func TestFollowSurvivesRestart(t *testing.T) {
	st := followStack(t, 2*time.Second)
	_, done, stop := runService(t, st.env(followEnv))
	st.publish(t, natsce.Binary, request(t, "/test", "restart", "contoso", "restart-offer"))
	st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("first instance: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("first instance did not stop")
	}
	st.svc = startService(t, st.env(followEnv))
	rs := st.waitStream(t, "CPCANCEL_RESULTS", 2, 15*time.Second)
	if rs[1].ev.ID() != cancelevent.FinalResultID("/test", "restart", cancelevent.Cancelled) {
		t.Errorf("final result %s %+v", rs[1].ev.Type(), rs[1].data)
	}
	waitEmpty(t, st, "CPCANCEL_FOLLOW")
	time.Sleep(300 * time.Millisecond) // a duplicate final result would show up by now
	st.waitStream(t, "CPCANCEL_RESULTS", 2, time.Second)
}
