package chaos_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/chaos"
	"github.com/cpcancel/cpcancel/internal/emulator"
)

func TestScheduleIsSeeded(t *testing.T) {
	o := chaos.ScheduleOptions{Duration: 60 * time.Second, Replicas: 3, HTTPTimeout: 2 * time.Second}
	a, b := chaos.NewSchedule(42, o), chaos.NewSchedule(42, o)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed planned two schedules")
	}
	if reflect.DeepEqual(a, chaos.NewSchedule(43, o)) {
		t.Error("seeds 42 and 43 planned the same schedule")
	}
	kinds := map[chaos.Kind]int{}
	for _, f := range a {
		kinds[f.Kind]++
		if f.At < 0 || f.At+f.For > o.Duration {
			t.Errorf("%s: outside the %s run", f, o.Duration)
		}
		switch f.Kind {
		case chaos.KillReplica, chaos.TermReplica, chaos.KillNATS:
			if f.For < time.Second || f.For > 5*time.Second {
				t.Errorf("%s: downtime outside 1-5s", f)
			}
		case chaos.StateOutage:
			if f.For < 20*time.Second && f.At+f.For < o.Duration-time.Second {
				t.Errorf("%s: outage shorter than 20s", f)
			}
		case chaos.ResultOutage:
			if f.For < 10*time.Second && f.At+f.For < o.Duration-time.Second {
				t.Errorf("%s: outage shorter than 10s", f)
			}
		case chaos.SlowAPI:
			if f.Latency <= o.HTTPTimeout {
				t.Errorf("%s: latency within the API timeout", f)
			}
		}
		if (f.Kind == chaos.KillReplica || f.Kind == chaos.TermReplica) && (f.Target < 0 || f.Target >= o.Replicas) {
			t.Errorf("%s: no such replica", f)
		}
	}
	for _, k := range chaos.Kinds {
		if kinds[k] == 0 {
			t.Errorf("a 60s schedule has no %s: %v", k, a)
		}
	}
	// No two faults hold one replica, nats-server or the API's rates at once.
	for i, f := range a {
		for _, g := range a[i+1:] {
			same := f.Kind == g.Kind && (f.Target == g.Target || (f.Kind != chaos.KillReplica && f.Kind != chaos.TermReplica))
			replica := (f.Kind == chaos.KillReplica || f.Kind == chaos.TermReplica) && (g.Kind == chaos.KillReplica || g.Kind == chaos.TermReplica) && f.Target == g.Target
			rates := (f.Kind == chaos.ServerErrors || f.Kind == chaos.Throttle) && (g.Kind == chaos.ServerErrors || g.Kind == chaos.Throttle)
			if (same || replica || rates) && g.At < f.At+f.For {
				t.Errorf("%s and %s overlap", f, g)
			}
		}
	}
}

func TestPlanIsSeeded(t *testing.T) {
	a, b := chaos.NewPlan(7, 2000, time.Minute), chaos.NewPlan(7, 2000, time.Minute)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed planned two runs")
	}
	counts := map[chaos.Scenario]int{}
	offers := map[string]bool{}
	resent := 0
	for i, q := range a.Requests {
		counts[q.Scenario]++
		if offers[q.OfferID] {
			t.Errorf("offer %s planned twice", q.OfferID)
		}
		offers[q.OfferID] = true
		if i > 0 && q.At < a.Requests[i-1].At {
			t.Errorf("%s published before the request planned ahead of it", q.ID)
		}
		if q.ResendAt != 0 {
			resent++
			if q.ResendAt <= q.At || q.ResendAt >= time.Minute {
				t.Errorf("%s: re-sent at %s, published at %s", q.ID, q.ResendAt, q.At)
			}
		}
	}
	for _, s := range chaos.Scenarios {
		if counts[s] == 0 {
			t.Errorf("no %s request in 2000", s)
		}
	}
	if counts[chaos.Invalid] > 80 || resent == 0 || resent > 120 {
		t.Errorf("%d invalid, %d re-sent of 2000: want about 2%% and 3%%", counts[chaos.Invalid], resent)
	}
	if len(a.DeadLetters) != 13 || !chaos.IsPlannedDeadLetter(a.DeadLetters[0].Body) {
		t.Errorf("dead letters %v, want 13 planned ones", a.DeadLetters)
	}
}

// run builds the observations of a clean run of plan: every request answered as its scenario
// says, one API call each, polls a second apart.
func cleanRun(plan chaos.Plan, start time.Time) chaos.Observed {
	obs := chaos.Observed{Start: start, Published: map[int]time.Time{}, Resent: map[int]time.Time{}, SettledOK: true}
	seq := uint64(0)
	store := func(q chaos.Request, final bool, outcome cancelevent.Outcome, at time.Time, d cancelevent.ResultData) {
		seq++
		id := cancelevent.ResultID(q.Source, q.ID, outcome)
		if final {
			id = cancelevent.FinalResultID(q.Source, q.ID, outcome)
		}
		d.RequestSource, d.RequestID, d.PublisherID, d.OfferID = q.Source, q.ID, q.PublisherID, q.OfferID
		obs.Results = append(obs.Results, chaos.StoredResult{Seq: seq, Stored: at, ID: id, Type: outcome.Type(), Data: d})
	}
	for _, q := range plan.Requests {
		at := start.Add(q.At)
		obs.Published[q.Index] = at
		first, final := q.Expected()
		if q.Scenario != chaos.Invalid {
			status := map[string]int{"cancelling": 202, "cancelled": 200, "failed": 404}[first]
			obs.Calls = append(obs.Calls, emulator.Call{PublisherID: q.PublisherID, OfferID: q.OfferID, Status: status, At: at.Add(time.Millisecond)})
		}
		d := cancelevent.ResultData{}
		if first == "cancelling" {
			d.Location = "http://127.0.0.1/op"
		}
		if first == "failed" {
			d.Error = &cancelevent.ErrorData{Code: "OfferNotFound"}
			if q.Scenario == chaos.Invalid {
				d.Error.Code = cancelevent.CodeInvalidRequest
			}
		}
		store(q, false, cancelevent.Outcome(first), at.Add(2*time.Millisecond), d)
		if final != "" {
			op := emulator.OperationRecord{ID: "op-" + q.ID, PublisherID: q.PublisherID, OfferID: q.OfferID, Created: at}
			for i := range 3 {
				op.Polls = append(op.Polls, emulator.Poll{At: at.Add(500*time.Millisecond + time.Duration(i)*time.Second), Status: 200})
			}
			op.PollCount = len(op.Polls)
			obs.Operations = append(obs.Operations, op)
			fd := cancelevent.ResultData{}
			if final == "failed" {
				fd.Error = &cancelevent.ErrorData{Code: cancelevent.CodeOperationFailed}
			}
			store(q, true, cancelevent.Outcome(final), at.Add(3*time.Second), fd)
		}
	}
	for _, d := range plan.DeadLetters {
		obs.DeadLetters = append(obs.DeadLetters, d.Body)
	}
	obs.Streams = []chaos.StreamState{{Name: "CPCANCEL_REQUESTS"}, {Name: "CPCANCEL_FOLLOW"}}
	obs.Consumers = []chaos.ConsumerState{{Stream: "CPCANCEL_REQUESTS", Name: "cpcancel"}}
	return obs
}

var checkOptions = chaos.CheckOptions{FollowInterval: time.Second, PollTolerance: 0.2, InFlight: 12 * time.Second}

func TestCheckCleanRun(t *testing.T) {
	plan := chaos.NewPlan(1, 300, 30*time.Second)
	r := chaos.Check(plan, cleanRun(plan, time.Now()), checkOptions)
	if len(r.Violations) != 0 {
		t.Fatalf("violations in a clean run: %q", r.Violations)
	}
	if s := r.Summary(); !strings.Contains(s, "every guarantee held") {
		t.Errorf("summary:\n%s", s)
	}
}

func TestCheckFindsViolations(t *testing.T) {
	start := time.Now()
	plan := chaos.NewPlan(1, 300, 30*time.Second)
	var plain, sync, plain2 *chaos.Request
	for i := range plan.Requests {
		q := &plan.Requests[i]
		switch {
		case q.Scenario == chaos.Plain && plain == nil:
			plain = q
		case q.Scenario == chaos.Plain && plain2 == nil:
			plain2 = q
		case q.Scenario == chaos.Sync && sync == nil:
			sync = q
		}
	}
	tests := []struct {
		name   string
		mutate func(*chaos.Observed)
		want   string // in a violation
	}{
		{"duplicate result", func(o *chaos.Observed) {
			o.Results = append(o.Results, o.Results[0])
		}, "stored 2 times"},
		{"missing result", func(o *chaos.Observed) {
			o.Results = o.Results[1:]
		}, "no first result stored"},
		{"contradictory results", func(o *chaos.Observed) {
			for _, r := range o.Results {
				if r.Data.RequestID == sync.ID {
					r.ID, r.Type = cancelevent.ResultID(sync.Source, sync.ID, cancelevent.Failed), cancelevent.Failed.Type()
					r.Data.Error = &cancelevent.ErrorData{Code: "x"}
					o.Results = append(o.Results, r)
					return
				}
			}
		}, "contradictory first results"},
		{"missing final", func(o *chaos.Observed) {
			for i, r := range o.Results {
				if r.Data.RequestID == plain.ID && r.ID == cancelevent.FinalResultID(plain.Source, plain.ID, cancelevent.Cancelled) {
					o.Results = append(o.Results[:i], o.Results[i+1:]...)
					return
				}
			}
		}, "no final result stored"},
		{"unexplained second call", func(o *chaos.Observed) {
			o.Calls = append(o.Calls, emulator.Call{PublisherID: plain.PublisherID, OfferID: plain.OfferID, Status: 202, At: start.Add(plain.At + time.Millisecond + time.Microsecond)})
		}, "a second API call no SIGKILL explains"},
		{"call after result", func(o *chaos.Observed) {
			o.Calls = append(o.Calls, emulator.Call{PublisherID: sync.PublisherID, OfferID: sync.OfferID, Status: 200, At: start.Add(sync.At + time.Minute)})
		}, "after its first result was stored"},
		{"polls too close", func(o *chaos.Observed) {
			op := &o.Operations[0]
			op.Polls = append(op.Polls, emulator.Poll{At: op.Polls[0].At.Add(100 * time.Millisecond), Status: 200})
		}, "polled 2 times within 800ms"},
		{"polls too close after a 401", func(o *chaos.Observed) {
			op := &o.Operations[0]
			at := op.Polls[0].At
			op.Polls = append(op.Polls, emulator.Poll{At: at.Add(100 * time.Millisecond), Status: 401}, emulator.Poll{At: at.Add(110 * time.Millisecond), Status: 200})
		}, "polled 2 times within 800ms"},
		{"left over", func(o *chaos.Observed) {
			o.Streams[0].Msgs = 3
			o.Consumers[0].AckPending = 1
		}, "still holds 3 messages"},
		{"extra dead letter", func(o *chaos.Observed) {
			o.DeadLetters = append(o.DeadLetters, "a request")
		}, "not one of the planned"},
		{"missing dead letter", func(o *chaos.Observed) {
			o.DeadLetters = o.DeadLetters[1:]
		}, "not in the dead-letter stream"},
		{"unexpected outcome", func(o *chaos.Observed) {
			for i, r := range o.Results {
				if r.Data.RequestID == sync.ID {
					o.Results[i].ID, o.Results[i].Type = cancelevent.ResultID(sync.Source, sync.ID, cancelevent.Failed), cancelevent.Failed.Type()
					o.Results[i].Data.Error = &cancelevent.ErrorData{Code: "Unauthorized"}
				}
			}
		}, `want cancelled then ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := cleanRun(plan, start)
			tt.mutate(&obs)
			r := chaos.Check(plan, obs, checkOptions)
			for _, v := range r.Violations {
				if strings.Contains(v, tt.want) {
					return
				}
			}
			t.Errorf("violations %q, want one with %q", r.Violations, tt.want)
		})
	}

	t.Run("401 poll retried at once", func(t *testing.T) {
		obs := cleanRun(plan, start)
		op := &obs.Operations[0]
		// The first poll was answered 401 and retried with a fresh token 1ms later.
		op.Polls = append([]emulator.Poll{{At: op.Polls[0].At.Add(-time.Millisecond), Status: 401}}, op.Polls...)
		if r := chaos.Check(plan, obs, checkOptions); len(r.Violations) != 0 {
			t.Errorf("violations %q, want none", r.Violations)
		}
	})

	t.Run("second call in flight at a kill", func(t *testing.T) {
		obs := cleanRun(plan, start)
		first := start.Add(plain2.At + time.Millisecond)
		// The result of the first call was not stored: the kill came first; the retry's was.
		for i, r := range obs.Results {
			if r.Data.RequestID == plain2.ID {
				obs.Results[i].Stored = first.Add(8 * time.Second)
			}
		}
		obs.Calls = append(obs.Calls, emulator.Call{PublisherID: plain2.PublisherID, OfferID: plain2.OfferID, Status: 202, At: first.Add(5 * time.Second)})
		obs.Faults = []chaos.FaultRecord{{Fault: chaos.Fault{Kind: chaos.KillReplica}, Start: first.Add(time.Second), End: first.Add(3 * time.Second)}}
		r := chaos.Check(plan, obs, checkOptions)
		if len(r.Violations) != 0 {
			t.Errorf("violations %q, want none: the kill explains the second call", r.Violations)
		}
		if s := r.Summary(); !strings.Contains(s, "in flight at kill-replica") {
			t.Errorf("summary does not report the extra call:\n%s", s)
		}
	})
}
