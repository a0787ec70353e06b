package follow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/worker"
)

// answer is a fixed poll answer.
func answer(op cloudpartner.Operation, err error) func(context.Context, string) (cloudpartner.Operation, error) {
	return func(context.Context, string) (cloudpartner.Operation, error) { return op, err }
}

// apiError is an error of the status GET whose body said something that must not be published.
func apiError(status int, transient bool) error {
	return &cloudpartner.Error{StatusCode: status, Code: "SomeApiCode", Transient: transient,
		Message: "BODY-TEXT from the answer", CorrelationID: "corr-err"}
}

// throttled is a transient error of the status GET asking for a pause of retryAfter.
func throttled(status int, retryAfter time.Duration) error {
	return &cloudpartner.Error{StatusCode: status, Code: "TooManyRequests", Transient: true, RetryAfter: retryAfter}
}

// wantResult is a result Decide should have stored.
type wantResult struct {
	outcome   cancelevent.Outcome
	code      string // error code; "" for none
	status    int    // data.statusCode
	opStatus  string // data.operationStatus
	messages  []string
	inMessage []string // substrings of the error message
}

// decideCase is one delivery of a follow task, after the record and poll record it sets up.
type decideCase struct {
	name string
	// The request's record: none, following, or final (with finalSeq).
	noState  bool
	phase    state.Phase // Following when empty
	finalSeq uint64
	// firstPollIn and deadlineIn place the record's first poll and deadline from now (defaults
	// -1s and +1h).
	firstPollIn, deadlineIn time.Duration
	// location is the record's, under apiOrigin unless it starts with https://; taskLocation
	// the task's when it differs; body replaces the task's body.
	location, taskLocation string
	body                   []byte
	// poll is the operation's poll record, last claimed pollAgo ago, and answered then unless
	// pollUnanswered, held by a Retry-After for pollHeld more from now when set; nil for none.
	poll           *state.Poll
	pollAgo        time.Duration
	pollUnanswered bool
	pollHeld       time.Duration
	// answer is the Poller's; cancel makes the poll end with a shutdown.
	answer      func(context.Context, string) (cloudpartner.Operation, error)
	shutdown    bool
	noBucket    bool
	noResults   bool
	wantKind    worker.Kind
	wantDelay   [2]time.Duration // Nak delay range, inclusive
	wantPhase   state.Phase      // the record's after; "" for no record
	wantResults []wantResult
	wantPolls   int64
	wantDead    uint64
	// wantPollStatus is the poll record's status after, when set.
	wantPollStatus string
}

var decideCases = []decideCase{
	{name: "first poll not due", firstPollIn: 30 * time.Second,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{29 * time.Second, 30 * time.Second}, wantPhase: state.Following},
	{name: "running", answer: answer(cloudpartner.Operation{Status: "running"}, nil),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following,
		wantPolls: 1, wantPollStatus: "running"},
	{name: "running close to the deadline", deadlineIn: 10 * time.Second, answer: answer(cloudpartner.Operation{Status: "running"}, nil),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{9 * time.Second, 11 * time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "canceled", answer: answer(cloudpartner.Operation{Status: "Canceled", CorrelationID: "corr-1"}, nil),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1, wantPollStatus: "Canceled",
		wantResults: []wantResult{{outcome: cancelevent.Cancelled, status: 200, opStatus: "Canceled"}}},
	{name: "failed with messages", answer: answer(cloudpartner.Operation{Status: "failed", Messages: []string{"offer locked", "try later"}}, nil),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeOperationFailed, status: 200, opStatus: "failed",
			messages: []string{"offer locked", "try later"}, inMessage: []string{"the operation ended failed: offer locked; try later"}}}},
	{name: "404 is transient", answer: answer(cloudpartner.Operation{}, apiError(404, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "401 is transient", answer: answer(cloudpartner.Operation{}, apiError(401, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "403 is transient", answer: answer(cloudpartner.Operation{}, apiError(403, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "429 is transient", answer: answer(cloudpartner.Operation{}, apiError(429, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "503 is transient", answer: answer(cloudpartner.Operation{}, apiError(503, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	// Regression: a poll answered with a Retry-After was repeated an interval later.
	{name: "429 with a Retry-After over an interval", answer: answer(cloudpartner.Operation{}, throttled(429, 5*interval)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{5 * interval, 5*interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "503 with a Retry-After under an interval", answer: answer(cloudpartner.Operation{}, throttled(503, 10*time.Second)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "429 with a Retry-After reaching past the deadline", deadlineIn: 10 * time.Second, answer: answer(cloudpartner.Operation{}, throttled(429, 5*interval)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{9 * time.Second, 11 * time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "a transport error is transient", answer: answer(cloudpartner.Operation{}, errors.New("connection reset")),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "400 ends without the body", answer: answer(cloudpartner.Operation{}, apiError(400, false)),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: "SomeApiCode", status: 400,
			inMessage: []string{"the operation status request answered HTTP 400"}}}},
	{name: "location on another origin", location: "https://elsewhere.test/ops/1",
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 0,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeLocationNotFollowed, status: 0}}},
	{name: "deadline passed", deadlineIn: -time.Second, poll: &state.Poll{Status: "running"}, pollAgo: 2 * time.Minute,
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeFollowTimeout, opStatus: "running",
			inMessage: []string{"still running", "CPCANCEL_FOLLOW_TIMEOUT 2h0m0s"}}}},
	{name: "deadline passed, polled since", deadlineIn: -time.Second, poll: &state.Poll{Status: "running"}, pollAgo: 500 * time.Millisecond,
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 0,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeFollowTimeout, opStatus: "running",
			inMessage: []string{"still running"}}}},
	// Regression: polls held back by an outage until after the deadline ended following with
	// follow_timeout although the operation had long been cancelled.
	{name: "deadline passed during an outage, operation ended", deadlineIn: -time.Second, poll: &state.Poll{Status: "running"}, pollAgo: 2 * time.Minute,
		answer:   answer(cloudpartner.Operation{Status: "Canceled"}, nil),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Cancelled, status: 200, opStatus: "Canceled"}}},
	{name: "deadline passed before any poll", deadlineIn: -time.Second,
		answer:   answer(cloudpartner.Operation{}, &cloudpartner.Error{StatusCode: 503, Code: "ServiceUnavailable", Transient: true}),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeFollowTimeout, inMessage: []string{"not read"}}}},
	{name: "deadline passed, an answer that is not the status", deadlineIn: -time.Second,
		answer:   answer(cloudpartner.Operation{}, apiError(404, true)),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeFollowTimeout, inMessage: []string{"not read"}}}},
	// Regression (fault injection): the state bucket was down past the deadline, and the first
	// poll after it timed out in a slow spell of the API. That poll ended following with
	// follow_timeout, although the operation had long been cancelled.
	{name: "deadline passed, no answer", deadlineIn: -time.Second, poll: &state.Poll{Status: "running"}, pollAgo: 2 * time.Minute,
		answer:   answer(cloudpartner.Operation{}, &cloudpartner.Error{Code: cancelevent.CodeTransportError, Transient: true}),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "deadline passed, no answer since, operation ended", deadlineIn: -interval - 10*time.Second,
		poll: &state.Poll{Status: "running"}, pollAgo: interval + time.Second, pollUnanswered: true,
		answer:   answer(cloudpartner.Operation{Status: "Canceled"}, nil),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Cancelled, status: 200, opStatus: "Canceled"}}},
	{name: "deadline passed, token not taken", deadlineIn: -time.Second,
		answer:   answer(cloudpartner.Operation{}, apiError(401, true)),
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{interval, interval + time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "deadline passed long ago, no answer", deadlineIn: -maxUnansweredGrace - time.Second,
		answer:   answer(cloudpartner.Operation{}, errors.New("connection reset")),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeFollowTimeout, inMessage: []string{"not read"}}}},
	{name: "polled recently", poll: &state.Poll{Status: "running"}, pollAgo: 20 * time.Second,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{39 * time.Second, 41 * time.Second}, wantPhase: state.Following, wantPolls: 0},
	{name: "polls held by a Retry-After", poll: &state.Poll{Status: "running"}, pollAgo: 2 * time.Minute, pollHeld: 3 * time.Minute,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{3*time.Minute - time.Second, 3*time.Minute + time.Second}, wantPhase: state.Following, wantPolls: 0},
	{name: "poll due again", poll: &state.Poll{Status: "running"}, pollAgo: 2 * time.Minute, answer: answer(cloudpartner.Operation{Status: "cancelled"}, nil),
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 1,
		wantResults: []wantResult{{outcome: cancelevent.Cancelled, status: 200, opStatus: "cancelled"}}},
	{name: "operation already ended", poll: &state.Poll{Status: "failed", Terminal: true, Messages: []string{"m"}}, pollAgo: 5 * time.Second,
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 0,
		wantResults: []wantResult{{outcome: cancelevent.Failed, code: cancelevent.CodeOperationFailed, status: 200, opStatus: "failed", messages: []string{"m"}}}},
	{name: "shutdown during the poll", shutdown: true,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{time.Second, time.Second}, wantPhase: state.Following, wantPolls: 1},
	{name: "final not yet stored is published", phase: state.Final,
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 0,
		wantResults: []wantResult{{outcome: cancelevent.Cancelled, status: 200, opStatus: "canceled"}}},
	{name: "final stored", phase: state.Final, finalSeq: 9,
		wantKind: worker.KindAck, wantPhase: state.Final, wantPolls: 0},
	{name: "final not stored, result stream down", phase: state.Final, noResults: true,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{500 * time.Millisecond, time.Second}, wantPhase: state.Final},
	{name: "no state", noState: true,
		wantKind: worker.KindTerm, wantDead: 1},
	{name: "location mismatch", taskLocation: apiOrigin + "/ops/other",
		wantKind: worker.KindTerm, wantPhase: state.Following, wantDead: 1},
	{name: "request answered, not following", phase: state.Answered,
		wantKind: worker.KindTerm, wantPhase: state.Answered, wantDead: 1},
	{name: "garbage body", body: []byte("\x00not json"),
		wantKind: worker.KindTerm, wantPhase: state.Following, wantDead: 1},
	{name: "key naming a poll record", body: []byte(`{"key":"op.0123","location":"https://api.test/ops/x"}`),
		wantKind: worker.KindTerm, wantPhase: state.Following, wantDead: 1},
	{name: "body over the task limit", body: []byte(`{"key":"00","location":"` + strings.Repeat("a", maxTask) + `"}`),
		wantKind: worker.KindTerm, wantPhase: state.Following, wantDead: 1},
	{name: "bucket unavailable", noBucket: true,
		wantKind: worker.KindNak, wantDelay: [2]time.Duration{500 * time.Millisecond, time.Second}},
}

// TestDecide runs each case on a server of its own: the record and poll record it sets up, one
// delivery of a task, then the decision, the records and the results stored.
func TestDecide(t *testing.T) {
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

func (tc decideCase) run(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin, answer: tc.answer}
	e := newEnv(t, api)
	bg := context.Background()
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	if tc.shutdown {
		api.answer = func(context.Context, string) (cloudpartner.Operation, error) {
			cancel()
			return cloudpartner.Operation{}, &cloudpartner.Error{Code: "timeout", Transient: true, Err: context.Canceled}
		}
	}

	id := "req-" + strings.ReplaceAll(tc.name, " ", "-")
	loc := tc.location
	if loc == "" {
		loc = apiOrigin + "/ops/" + id
	}
	firstPollIn, deadlineIn := tc.firstPollIn, tc.deadlineIn
	if firstPollIn == 0 {
		firstPollIn = -time.Second
	}
	if deadlineIn == 0 {
		deadlineIn = time.Hour
	}
	now := time.Now()
	key := state.Key(reqSource, id)
	var before state.Entry
	if !tc.noState {
		e.following(t, id, loc, now.Add(firstPollIn), now.Add(deadlineIn))
		switch tc.phase {
		case state.Final:
			e.finalRecorded(t, key, id, cancelevent.Cancelled, tc.finalSeq)
		case state.Answered:
			cur, err := e.store.Get(bg, key)
			must(t, err)
			cur.Phase = state.Answered
			_, err = e.store.Update(bg, key, cur.State, cur.Revision)
			must(t, err)
		}
		var err error
		before, err = e.store.Get(bg, key)
		must(t, err)
	}
	if tc.poll != nil {
		p := *tc.poll
		if tc.pollHeld != 0 {
			p.NotBefore = now.Add(tc.pollHeld)
		}
		if tc.pollUnanswered {
			_, err := e.store.ClaimPoll(bg, loc, state.PollEntry{Poll: p}, now.Add(-tc.pollAgo))
			must(t, err)
		} else {
			claimed, err := e.store.ClaimPoll(bg, loc, state.PollEntry{}, now.Add(-tc.pollAgo))
			must(t, err)
			must(t, e.store.RecordPoll(bg, loc, claimed, p))
		}
	}
	body := tc.body
	if body == nil {
		taskLoc := loc
		if tc.taskLocation != "" {
			taskLoc = tc.taskLocation
		}
		body = taskBody(key, taskLoc)
	}
	msg := e.deliver(t, body, "")
	if tc.noBucket {
		must(t, e.js.DeleteKeyValue(bg, bucket))
	}
	if tc.noResults {
		must(t, e.js.DeleteStream(bg, resultStream))
	}

	d := e.f.Decide(ctx, msg)

	if d.Kind != tc.wantKind {
		t.Fatalf("decision %v %s (%q), want %v", d.Kind, d.Delay, d.Reason, tc.wantKind)
	}
	if d.Kind == worker.KindNak && (d.Delay < tc.wantDelay[0] || d.Delay > tc.wantDelay[1]) {
		t.Errorf("Nak delay %s, want %s..%s", d.Delay, tc.wantDelay[0], tc.wantDelay[1])
	}
	if n := api.calls.Load(); n != tc.wantPolls {
		t.Errorf("polled %d times, want %d", n, tc.wantPolls)
	}
	if n := e.count(t, deadStream); n != tc.wantDead {
		t.Errorf("%d dead letters, want %d", n, tc.wantDead)
	}
	if tc.noBucket {
		return
	}

	after, err := e.store.Get(bg, key)
	switch {
	case tc.wantPhase == "":
		if !errors.Is(err, state.ErrNotFound) {
			t.Errorf("record %+v %v, want none", after.State, err)
		}
		return
	case err != nil:
		t.Fatal(err)
	case after.Phase != tc.wantPhase:
		t.Errorf("phase %s, want %s", after.Phase, tc.wantPhase)
	}
	// The first result and following's bounds never change; a final result is marked stored
	// once acked.
	if string(after.Result) != string(before.Result) || *after.Follow != *before.Follow {
		t.Errorf("record changed beyond its final result: %+v", after.State)
	}
	if after.Phase == state.Final && d.Kind == worker.KindAck && after.FinalSeq == 0 {
		t.Error("final result acked but not marked stored")
	}
	if tc.wantPollStatus != "" {
		p, err := e.store.Operation(bg, loc)
		if err != nil || p.Status != tc.wantPollStatus || time.Since(p.LastPoll) > 10*time.Second {
			t.Errorf("poll record %+v %v, want status %q polled just now", p.Poll, err, tc.wantPollStatus)
		}
	}
	if tc.noResults {
		if len(after.Final) == 0 || after.FinalSeq != 0 {
			t.Errorf("record lost its final result or marks it stored: %+v", after.State)
		}
		return
	}

	got := e.results(t)
	if len(got) != len(tc.wantResults) {
		t.Fatalf("%d results stored, want %d", len(got), len(tc.wantResults))
	}
	for i, w := range tc.wantResults {
		r := got[i]
		if r.ev.ID() != cancelevent.FinalResultID(reqSource, id, w.outcome) || r.ev.Type() != w.outcome.Type() {
			t.Errorf("result %s of type %s, want the final %s result", r.ev.ID(), r.ev.Type(), w.outcome)
		}
		if string(after.Final) == "" || after.FinalSeq != r.seq {
			t.Errorf("record's final seq %d, stored at %d", after.FinalSeq, r.seq)
		}
		checkFinal(t, r, w, id, loc)
	}
}

// checkFinal checks a final result's data against w and the request id following loc.
func checkFinal(t *testing.T, r stored, w wantResult, id, loc string) {
	t.Helper()
	d := r.data
	if d.RequestID != id || d.RequestSource != reqSource || d.PublisherID != "contoso" || d.OfferID != "offer-"+id {
		t.Errorf("result names request %q/%q of %q/%q", d.RequestSource, d.RequestID, d.PublisherID, d.OfferID)
	}
	if d.Location != loc || d.OperationID != "op-"+id || d.Attempts != 2 {
		t.Errorf("result location %q operation %q attempts %d, want the first result's", d.Location, d.OperationID, d.Attempts)
	}
	if tp, _ := r.ev.Extensions()["traceparent"].(string); tp != request(id).TraceParent {
		t.Errorf("traceparent %q", tp)
	}
	if d.StatusCode != w.status || d.OperationStatus != w.opStatus || strings.Join(d.Messages, "|") != strings.Join(w.messages, "|") {
		t.Errorf("result statusCode %d operationStatus %q messages %q, want %d %q %q",
			d.StatusCode, d.OperationStatus, d.Messages, w.status, w.opStatus, w.messages)
	}
	switch {
	case w.code == "" && d.Error != nil:
		t.Errorf("error %+v, want none", d.Error)
	case w.code != "" && (d.Error == nil || d.Error.Code != w.code):
		t.Errorf("error %+v, want code %q", d.Error, w.code)
	case d.Error != nil:
		for _, s := range w.inMessage {
			if !strings.Contains(d.Error.Message, s) {
				t.Errorf("error message %q lacks %q", d.Error.Message, s)
			}
		}
		if strings.Contains(d.Error.Message, "BODY-TEXT") {
			t.Errorf("error message %q copies the answer's body", d.Error.Message)
		}
	}
}
