package handler_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/handler"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	location = "https://cloudpartner.azure.com/api/publishers/contoso/offers/contoso-offer/operations/56615b67?api-version=2017-10-31"
	bucket   = "STATE"
)

// apiFunc is the Cloud Partner API as a function. Like the real client, it asks the fence
// before "sending" and counts only calls that were sent.
type apiFunc struct {
	answer func(n int) (cloudpartner.Accepted, error)
	wait   time.Duration // before the fence, as the rate limiter would
	calls  atomic.Int32
}

func (a *apiFunc) Cancel(ctx context.Context, req cloudpartner.CancelRequest) (cloudpartner.Accepted, error) {
	time.Sleep(a.wait)
	if req.Fence != nil {
		if err := req.Fence(ctx); err != nil {
			return cloudpartner.Accepted{}, err
		}
	}
	return a.answer(int(a.calls.Add(1)))
}

func answer(acc cloudpartner.Accepted, err error) func(int) (cloudpartner.Accepted, error) {
	return func(int) (cloudpartner.Accepted, error) { return acc, err }
}

type recorder struct{ duplicates, retries, stored, deadLetters atomic.Int32 }

func (r *recorder) Received(uint64) func(context.Context) { return func(context.Context) {} }
func (r *recorder) Duplicate()                            { r.duplicates.Add(1) }
func (r *recorder) Retried()                              { r.retries.Add(1) }
func (r *recorder) ResultStored(string)                   { r.stored.Add(1) }
func (r *recorder) DeadLettered()                         { r.deadLetters.Add(1) }

type follower struct {
	mu    sync.Mutex
	tasks []string
}

func (f *follower) Schedule(_ context.Context, key, location string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks = append(f.tasks, key+" "+location)
	return nil
}

// env is a real JetStream server with the request, result and dead-letter streams and the state
// bucket, and a handler over them.
type env struct {
	t        testing.TB
	js       jetstream.JetStream
	consumer jetstream.Consumer
	store    *state.Store
	kv       jetstream.KeyValue
	rec      *recorder
	follow   *follower
	cfg      handler.Config
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "REQ", Subjects: []string{"req"}, Retention: jetstream.WorkQueuePolicy},
		{Name: "RES", Subjects: []string{"res.>"}, Duplicates: time.Minute},
		{Name: "DL", Subjects: []string{"dl"}},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, "REQ", jetstream.ConsumerConfig{Durable: "h", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Minute, MaxDeliver: -1, MaxAckPending: -1})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, consumer: c, kv: kv, store: state.New(js, kv, 5*time.Second), rec: &recorder{}, follow: &follower{},
		cfg: handler.Config{Source: "/cpcancel", MaxAttempts: 3, MaxRequestBytes: 1 << 16, Holder: "test",
			Lease: time.Minute, CallBudget: 10 * time.Second, RetryBase: 100 * time.Millisecond, RetryMax: time.Second,
			FollowFirstPoll: time.Second, FollowTimeout: time.Hour}}
}

func (e *env) handler(api handler.Canceller) *handler.Handler {
	out := results.New(results.Config{SubjectPrefix: "res", DeadLetterSubject: "dl", Mode: natsce.Binary, Timeout: 5 * time.Second,
		Tracer: e.cfg.Tracer}, e.js, e.rec)
	return handler.New(e.cfg, api, e.store, out, e.rec)
}

// publish stores a request (binary mode) with this id and data, and returns its stream sequence.
func (e *env) publish(id, data string) uint64 {
	e.t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: "req", Header: nats.Header{
		"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType}, "ce-source": {"/test"}, "ce-id": {id},
		"ce-datacontenttype": {"application/json"},
	}, Data: []byte(data)})
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// next fetches the next delivery.
func (e *env) next() jetstream.Msg {
	e.t.Helper()
	batch, err := e.consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	for msg := range batch.Messages() {
		return msg
	}
	e.t.Fatalf("no delivery: %v", batch.Error())
	return nil
}

// results lists the result events stored, in order.
func (e *env) results() []*event.Event {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), "RES")
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*event.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			e.t.Fatal(err)
		}
		ev, err := natsce.Decode(context.Background(), raw.Header, raw.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func (e *env) state(id string) state.Entry {
	e.t.Helper()
	st, err := e.store.Get(context.Background(), state.Key("/test", id))
	if err != nil {
		e.t.Fatalf("state of %s: %v", id, err)
	}
	return st
}

func (e *env) put(id string, st state.State) {
	e.t.Helper()
	if _, err := e.store.Create(context.Background(), state.Key("/test", id), st); err != nil {
		e.t.Fatal(err)
	}
}

const valid = `{"publisherId":"contoso","offerId":"contoso-offer"}`

func TestDecide(t *testing.T) {
	ok200 := answer(cloudpartner.Accepted{StatusCode: 200, CorrelationID: "c"}, nil)
	ok202 := answer(cloudpartner.Accepted{StatusCode: 202, Location: location, OperationID: "56615b67"}, nil)
	unavailable := answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 503, Code: "ServiceUnavailable", Transient: true})
	recordedCancelled, err := natsce.MarshalStructured(mustResult(t, "r1", cancelevent.Cancelled))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		data     string
		before   *state.State // the request's state before the delivery
		api      func(int) (cloudpartner.Accepted, error)
		follow   bool
		kind     worker.Kind
		minDelay time.Duration
		maxDelay time.Duration
		calls    int32
		outcomes []cancelevent.Outcome // results stored
		errCode  string
		after    state.Phase
		attempts int
	}{
		{name: "200 cancelled", data: valid, api: ok200, kind: worker.KindAck, calls: 1,
			outcomes: []cancelevent.Outcome{cancelevent.Cancelled}, after: state.Answered, attempts: 1},
		{name: "202 cancelling", data: valid, api: ok202, kind: worker.KindAck, calls: 1,
			outcomes: []cancelevent.Outcome{cancelevent.Cancelling}, after: state.Answered, attempts: 1},
		{name: "202 followed", data: valid, api: ok202, follow: true, kind: worker.KindAck, calls: 1,
			outcomes: []cancelevent.Outcome{cancelevent.Cancelling}, after: state.Following, attempts: 1},
		{name: "permanent 404 fails at once", data: valid, api: answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 404, Code: "OfferNotFound"}),
			kind: worker.KindAck, calls: 1, outcomes: []cancelevent.Outcome{cancelevent.Failed}, errCode: "OfferNotFound", after: state.Answered, attempts: 1},
		{name: "transient 503 waits and counts an attempt", data: valid, api: unavailable,
			kind: worker.KindNak, minDelay: 50 * time.Millisecond, maxDelay: 100 * time.Millisecond, calls: 1, after: state.Waiting, attempts: 1},
		{name: "transient at the last attempt fails", data: valid, before: &state.State{Phase: state.Waiting, Attempts: 2}, api: unavailable,
			kind: worker.KindAck, calls: 1, outcomes: []cancelevent.Outcome{cancelevent.Failed}, errCode: "ServiceUnavailable", after: state.Answered, attempts: 3},
		{name: "Retry-After of an hour is honoured", data: valid,
			api:  answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 429, Code: "TooManyRequests", Transient: true, RetryAfter: time.Hour}),
			kind: worker.KindNak, minDelay: time.Hour, maxDelay: time.Hour, calls: 1, after: state.Waiting, attempts: 1},
		{name: "token error uses no attempt", data: valid, api: answer(cloudpartner.Accepted{}, &cloudpartner.Error{Code: "token_error", Transient: true}),
			kind: worker.KindNak, maxDelay: 100 * time.Millisecond, calls: 1, after: state.Waiting},
		{name: "invalid data fails without a call", data: `{"publisherId":"../x","offerId":"o"}`, api: ok200,
			kind: worker.KindAck, outcomes: []cancelevent.Outcome{cancelevent.Failed}, errCode: cancelevent.CodeInvalidRequest, after: state.Answered},
		{name: "held by another worker", data: valid, before: &state.State{Phase: state.Claimed, Holder: "other", LeaseUntil: time.Now().Add(time.Hour)},
			api: ok200, kind: worker.KindNak, maxDelay: 100 * time.Millisecond, after: state.Claimed},
		{name: "expired lease is taken over with its attempts", data: valid,
			before: &state.State{Phase: state.Claimed, Holder: "dead", LeaseUntil: time.Now().Add(-time.Second), Attempts: 1},
			api:    ok200, kind: worker.KindAck, calls: 1, outcomes: []cancelevent.Outcome{cancelevent.Cancelled}, after: state.Answered, attempts: 2},
		{name: "next try not due", data: valid, before: &state.State{Phase: state.Waiting, Attempts: 1, RetryAt: time.Now().Add(time.Hour)},
			api: ok200, kind: worker.KindNak, minDelay: 59 * time.Minute, maxDelay: time.Hour, after: state.Waiting, attempts: 1},
		{name: "following turned off since the answer", data: valid,
			before: &state.State{Phase: state.Following, Result: recordedCancelled, Attempts: 1, Follow: &state.Follow{Location: location}},
			api:    ok200, kind: worker.KindAck, outcomes: []cancelevent.Outcome{cancelevent.Cancelled}, after: state.Following, attempts: 1},
		{name: "answered but not stored: stored now, no call", data: valid,
			before: &state.State{Phase: state.Answered, Result: recordedCancelled, Attempts: 1},
			api:    ok200, kind: worker.KindAck, outcomes: []cancelevent.Outcome{cancelevent.Cancelled}, after: state.Answered, attempts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.follow {
				e.cfg.Follow = e.follow
			}
			api := &apiFunc{answer: tc.api}
			h := e.handler(api)
			if tc.before != nil {
				e.put("r1", *tc.before)
			}
			seq := e.publish("r1", tc.data)
			d := h.Decide(context.Background(), e.next())
			if d.Kind != tc.kind {
				t.Fatalf("decision %+v, want kind %v", d, tc.kind)
			}
			if d.Kind == worker.KindNak && (d.Delay < tc.minDelay || d.Delay > tc.maxDelay) {
				t.Errorf("delay %s, want %s to %s", d.Delay, tc.minDelay, tc.maxDelay)
			}
			if got := api.calls.Load(); got != tc.calls {
				t.Errorf("%d API calls, want %d", got, tc.calls)
			}
			res := e.results()
			if len(res) != len(tc.outcomes) {
				t.Fatalf("%d results stored, want %d", len(res), len(tc.outcomes))
			}
			for i, ev := range res {
				if got := cancelevent.OutcomeOf(ev.Type()); got != tc.outcomes[i] || ev.ID() != cancelevent.ResultID("/test", "r1", got) {
					t.Errorf("result %d: %s %s", i, got, ev.ID())
				}
				var data cancelevent.ResultData
				if err := ev.DataAs(&data); err != nil {
					t.Fatal(err)
				}
				if code := ""; data.Error != nil {
					code = data.Error.Code
					if code != tc.errCode {
						t.Errorf("error code %q, want %q", code, tc.errCode)
					}
				}
			}
			st := e.state("r1")
			if st.Phase != tc.after || st.Attempts != tc.attempts {
				t.Errorf("state %s with %d attempts, want %s with %d", st.Phase, st.Attempts, tc.after, tc.attempts)
			}
			if st.Settled() && d.Kind == worker.KindAck {
				// Where the result is stored goes into the state only when the ack is not
				// confirmed: play that.
				if d.Unconfirmed == nil {
					t.Fatal("a stored result's ack is not confirmed")
				}
				if st.ResultSeq != 0 {
					t.Errorf("state marked before the ack: result seq %d", st.ResultSeq)
				}
				d.Unconfirmed(errors.New("no confirmation"))
				if st = e.state("r1"); st.ResultSeq == 0 || (tc.before == nil && st.RequestSeq != seq) {
					t.Errorf("state does not say where its result is: result seq %d, request seq %d (want %d)", st.ResultSeq, st.RequestSeq, seq)
				}
			}
			if tc.follow {
				if len(e.follow.tasks) != 1 || st.Follow == nil || !st.Follow.Scheduled || st.Follow.Location != location {
					t.Errorf("follow tasks %q, state follow %+v", e.follow.tasks, st.Follow)
				}
			}
		})
	}
}

func mustResult(t testing.TB, id string, o cancelevent.Outcome) *event.Event {
	t.Helper()
	ev, err := cancelevent.NewResult("/cpcancel", cancelevent.Request{ID: id, Source: "/test", PublisherID: "contoso", OfferID: "contoso-offer"},
		o, cancelevent.ResultData{StatusCode: 200, Attempts: 1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestNotARequestIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	h := e.handler(api)
	if _, err := e.js.Publish(context.Background(), "req", []byte("not a cloudevent")); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindTerm || d.Reason == "" {
		t.Fatalf("decision %+v, want Term with a reason", d)
	}
	if e.rec.deadLetters.Load() != 1 || api.calls.Load() != 0 {
		t.Errorf("%d dead letters, %d calls", e.rec.deadLetters.Load(), api.calls.Load())
	}
}

// Regression: a redelivery of a request whose result is stored, however late it comes (after the
// result stream's duplicate window), stores nothing again.
func TestLateRedeliveryStoresNothingAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A short duplicate window makes "late" a matter of a second: past it, a second copy of the
	// result would be stored.
	res, err := e.js.Stream(ctx, "RES")
	if err != nil {
		t.Fatal(err)
	}
	cfg := res.CachedInfo().Config
	cfg.Duplicates = 200 * time.Millisecond
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	h := e.handler(api)
	e.publish("r1", valid)
	msg := e.next()
	d := h.Decide(ctx, msg)
	if d.Kind != worker.KindAck || d.Unconfirmed == nil {
		t.Fatalf("first delivery: %+v", d)
	}
	// The ack is not confirmed (NATS restarting): the state records where the result is, and
	// the message comes again, after the duplicate window.
	d.Unconfirmed(errors.New("no confirmation"))
	time.Sleep(500 * time.Millisecond)
	if err := msg.Nak(); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(ctx, e.next()); d.Kind != worker.KindAck {
		t.Fatalf("redelivery: %+v", d)
	}
	if n := len(e.results()); n != 1 || api.calls.Load() != 1 || e.rec.stored.Load() != 1 {
		t.Errorf("%d results stored (%d counted), %d API calls; want 1, 1, 1", n, e.rec.stored.Load(), api.calls.Load())
	}
}

// A confirmed ack is what keeps a message from coming again: nothing more is written.
func TestConfirmedAckWritesNoMark(t *testing.T) {
	e := newEnv(t)
	h := e.handler(&apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)})
	e.publish("r1", valid)
	msg := e.next()
	d := h.Decide(context.Background(), msg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ctx); err != nil || d.Unconfirmed == nil {
		t.Fatalf("decision %+v, ack %v", d, err)
	}
	if st := e.state("r1"); st.Phase != state.Answered || st.ResultSeq != 0 {
		t.Errorf("state %s, result seq %d; want answered without a mark", st.Phase, st.ResultSeq)
	}
}

// A re-send by the publisher (a new message, same source and id) is answered from the record:
// the same result id again, no API call.
func TestResendAnsweredFromRecord(t *testing.T) {
	e := newEnv(t)
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	h := e.handler(api)
	e.publish("r1", valid)
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatal(d)
	}
	e.publish("r1", valid)
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatal(d)
	}
	if api.calls.Load() != 1 || e.rec.duplicates.Load() != 1 {
		t.Errorf("%d calls, %d duplicates; want 1, 1", api.calls.Load(), e.rec.duplicates.Load())
	}
	// Both copies carry one id: inside the duplicate window JetStream keeps one.
	if res := e.results(); len(res) != 1 {
		t.Errorf("%d results", len(res))
	}
}

// Regression: the lease did not count time spent waiting (rate limiter, concurrency cap, token),
// so a re-send took the request over while the first worker still waited, and both called the
// API. Now the call is fenced: the first worker finds its lease lost and never sends.
func TestFenceStopsACallAfterTheLeaseWasTakenOver(t *testing.T) {
	e := newEnv(t)
	e.cfg.Lease, e.cfg.CallBudget = 300*time.Millisecond, 100*time.Millisecond
	slow := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil), wait: time.Second}
	fast := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	e.publish("r1", valid)
	first := e.next()
	done := make(chan worker.Decision, 1)
	go func() { done <- e.handler(slow).Decide(context.Background(), first) }()

	// The re-send arrives while the first worker waits; once the lease ran out it takes over.
	time.Sleep(400 * time.Millisecond)
	e.publish("r1", valid)
	if d := e.handler(fast).Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("re-send: %+v", d)
	}
	d := <-done
	if d.Kind != worker.KindNak {
		t.Errorf("first worker: %+v, want a Nak", d)
	}
	if slow.calls.Load() != 0 || fast.calls.Load() != 1 {
		t.Errorf("API calls: first worker %d, second %d; want 0 and 1", slow.calls.Load(), fast.calls.Load())
	}
	if n := len(e.results()); n != 1 {
		t.Errorf("%d results", n)
	}
}

// Regression: a failure of the bucket burned deliveries until JetStream gave up, and the
// request was never answered. Now it never uses up an attempt and the request is answered once
// the bucket is back.
func TestBucketOutageUsesNoAttempt(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxAttempts = 1
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	h := e.handler(api)
	ctx := context.Background()
	if err := e.js.DeleteKeyValue(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	e.publish("r1", valid)
	var last time.Duration
	for i := range 20 {
		msg := e.next()
		d := h.Decide(ctx, msg)
		if d.Kind != worker.KindNak {
			t.Fatalf("delivery %d during the outage: %+v", i+1, d)
		}
		last = d.Delay
		if err := msg.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if last < 500*time.Millisecond {
		t.Errorf("delay after 20 failures %s: want the backoff to grow to RetryMax", last)
	}
	if _, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(ctx, e.next()); d.Kind != worker.KindAck {
		t.Fatalf("after the outage: %+v", d)
	}
	res := e.results()
	if len(res) != 1 || cancelevent.OutcomeOf(res[0].Type()) != cancelevent.Cancelled || api.calls.Load() != 1 {
		t.Fatalf("%d results, %d calls; want one cancelled result after one call", len(res), api.calls.Load())
	}
}

// Regression: the holder of a request killed during its API call left a lease; the request was
// then given up on. Now the next delivery waits for the lease, takes it over with the attempts
// made so far, and answers.
func TestDeadHoldersLeaseIsTakenOver(t *testing.T) {
	e := newEnv(t)
	api := &apiFunc{answer: answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 503, Code: "ServiceUnavailable", Transient: true})}
	h := e.handler(api)
	e.put("r1", state.State{Phase: state.Claimed, Holder: "killed", LeaseUntil: time.Now().Add(200 * time.Millisecond), Attempts: 2})
	e.publish("r1", valid)
	msg := e.next()
	d := h.Decide(context.Background(), msg)
	if d.Kind != worker.KindNak || d.Delay > 200*time.Millisecond {
		t.Fatalf("while the dead holder's lease lasts: %+v", d)
	}
	time.Sleep(250 * time.Millisecond)
	if err := msg.Nak(); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("after the lease: %+v", d)
	}
	res := e.results()
	var data cancelevent.ResultData
	if len(res) != 1 || res[0].DataAs(&data) != nil || data.Attempts != 3 || data.Error == nil {
		t.Fatalf("results %v; want one failed result after the 3rd attempt", res)
	}
}

// Encoding check: the state holds the result as the result stream has it.
func TestStateHoldsTheStoredResult(t *testing.T) {
	e := newEnv(t)
	h := e.handler(&apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)})
	e.publish("r1", valid)
	h.Decide(context.Background(), e.next())
	var recorded event.Event
	if err := json.Unmarshal(e.state("r1").Result, &recorded); err != nil {
		t.Fatal(err)
	}
	if res := e.results(); len(res) != 1 || res[0].ID() != recorded.ID() {
		t.Errorf("stored %v, recorded %s", res, recorded.ID())
	}
}

// Regression: an answer that arrived as the shutdown grace period ran out was dropped with the
// lease, and the next instance called the API again. The answer is recorded all the same; the
// redelivery stores its result without a call.
func TestAnswerAfterGraceIsRecorded(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	api := &apiFunc{answer: func(int) (cloudpartner.Accepted, error) {
		cancel() // the grace period runs out while the answer is on its way
		return cloudpartner.Accepted{StatusCode: 200}, nil
	}}
	h := e.handler(api)
	e.publish("r1", valid)
	msg := e.next()
	if d := h.Decide(ctx, msg); d.Kind != worker.KindNak {
		t.Fatalf("decision at shutdown %+v, want a Nak", d)
	}
	if st := e.state("r1"); st.Phase != state.Answered {
		t.Fatalf("state %s after the answer, want answered", st.Phase)
	}
	if err := msg.Nak(); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("redelivery: %+v", d)
	}
	if n := len(e.results()); n != 1 || api.calls.Load() != 1 {
		t.Errorf("%d results, %d API calls; want 1 and 1", n, api.calls.Load())
	}
}

// A held lease is renewed while the call waits (here: longer than the lease lasts), so a re-send
// meanwhile waits for the holder instead of taking the request over; one call in all.
func TestLeaseRenewedWhileWaiting(t *testing.T) {
	e := newEnv(t)
	e.cfg.Lease, e.cfg.CallBudget, e.cfg.Renew = 300*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	slow := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil), wait: time.Second}
	other := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	e.publish("r1", valid)
	first := e.next()
	done := make(chan worker.Decision, 1)
	go func() { done <- e.handler(slow).Decide(context.Background(), first) }()

	time.Sleep(500 * time.Millisecond) // past the first lease's end
	e.publish("r1", valid)
	if d := e.handler(other).Decide(context.Background(), e.next()); d.Kind != worker.KindNak {
		t.Fatalf("re-send while the holder waits: %+v, want a Nak", d)
	}
	if d := <-done; d.Kind != worker.KindAck {
		t.Fatalf("holder: %+v, want an Ack", d)
	}
	if slow.calls.Load() != 1 || other.calls.Load() != 0 {
		t.Errorf("API calls: holder %d, re-send %d; want 1 and 0", slow.calls.Load(), other.calls.Load())
	}
}

// An API error answer that arrives as the grace period runs out is recorded too, as a success is
// (TestAnswerAfterGraceIsRecorded): handing it back unrecorded made the next holder call again.
func TestErrorAnswerAfterGraceIsRecorded(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	api := &apiFunc{answer: func(int) (cloudpartner.Accepted, error) {
		cancel() // the grace period runs out while the answer is on its way
		return cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 404, Code: "NotFound", Message: "no such offer"}
	}}
	h := e.handler(api)
	e.publish("r1", valid)
	msg := e.next()
	h.Decide(ctx, msg)
	if st := e.state("r1"); st.Phase != state.Answered || st.Attempts != 1 {
		t.Fatalf("record %s after %d attempts, want answered after 1", st.Phase, st.Attempts)
	}
	if err := msg.Nak(); err != nil {
		t.Fatal(err)
	}
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("redelivery: %+v", d)
	}
	rs := e.results()
	if len(rs) != 1 || rs[0].Type() != cancelevent.Failed.Type() || api.calls.Load() != 1 {
		t.Errorf("%d results (%v), %d API calls; want one failed result and 1 call", len(rs), rs, api.calls.Load())
	}
}

// A record that vanishes while the API is called (deleted, or lost with the bucket) is written
// anew with the answer, so that a re-send is answered from it without a second call.
func TestRecordGoneDuringTheCall(t *testing.T) {
	e := newEnv(t)
	key := state.Key("/test", "r1")
	api := &apiFunc{answer: func(int) (cloudpartner.Accepted, error) {
		if err := e.kv.Purge(context.Background(), key); err != nil {
			t.Error(err)
		}
		return cloudpartner.Accepted{StatusCode: 200}, nil
	}}
	h := e.handler(api)
	e.publish("r1", valid)
	done := make(chan worker.Decision, 1)
	go func() { done <- h.Decide(context.Background(), e.next()) }()
	select {
	case d := <-done:
		if d.Kind != worker.KindAck {
			t.Fatalf("decision %+v, want an Ack", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no decision 20s after the record vanished: the answer is never recorded")
	}
	if st := e.state("r1"); st.Phase != state.Answered {
		t.Fatalf("record %s, want answered", st.Phase)
	}
	e.publish("r1", valid) // a re-send
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("re-send: %+v", d)
	}
	if api.calls.Load() != 1 {
		t.Errorf("%d API calls, want 1", api.calls.Load())
	}
}

// A record that cannot be read (damaged, or of a phase this version does not know) is never
// taken for a lease to take over, nor retried for ever: the request is dead-lettered, uncalled.
func TestUnreadableRecordIsDeadLettered(t *testing.T) {
	for _, tc := range []struct{ name, record string }{
		{"unknown phase", `{"phase":"Answered"}` + "\n"},
		{"not JSON", "\x00\x01"},
		{"answered without a result", `{"phase":"answered"}` + "\n"},
		{"answered with a result that is no event", `{"phase":"answered","resultBytes":2}` + "\n{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.kv.Put(context.Background(), state.Key("/test", "r1"), []byte(tc.record)); err != nil {
				t.Fatal(err)
			}
			api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
			e.publish("r1", valid)
			if d := e.handler(api).Decide(context.Background(), e.next()); d.Kind != worker.KindTerm || !strings.Contains(d.Reason, "unreadable") {
				t.Fatalf("decision %+v, want Term as unreadable", d)
			}
			if e.rec.deadLetters.Load() != 1 || api.calls.Load() != 0 || len(e.results()) != 0 {
				t.Errorf("%d dead letters, %d API calls, %d results; want 1, 0, 0", e.rec.deadLetters.Load(), api.calls.Load(), len(e.results()))
			}
		})
	}
}

// A redelivery of a request whose result is stored, answered while following was on and left to
// schedule, stores nothing again once following is turned off: nothing is left to do.
func TestLateRedeliveryAfterFollowingTurnedOff(t *testing.T) {
	e := newEnv(t)
	recorded, err := natsce.MarshalStructured(mustResult(t, "r1", cancelevent.Cancelling))
	if err != nil {
		t.Fatal(err)
	}
	seq := e.publish("r1", valid)
	e.put("r1", state.State{Phase: state.Following, Result: recorded, Attempts: 1, ResultSeq: 7, RequestSeq: seq,
		Follow: &state.Follow{Location: location}})
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)}
	if d := e.handler(api).Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("decision %+v, want an Ack", d)
	}
	if n := len(e.results()); n != 0 || api.calls.Load() != 0 {
		t.Errorf("%d results stored again, %d API calls; want none", n, api.calls.Load())
	}
}

// A 202 without a location that can be followed gets, with following on, its final result at once
// (failed, location_not_followed), as a location on another origin does: nothing would ever
// follow it, and the request would wait for ever for the final result the contract promises.
func TestAcceptedWithoutLocationEndsFollowing(t *testing.T) {
	e := newEnv(t)
	e.cfg.Follow = e.follow
	api := &apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 202}, nil)}
	h := e.handler(api)
	e.publish("r1", valid)
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("decision %+v, want an Ack", d)
	}
	check := func(when string) {
		t.Helper()
		rs := e.results()
		if len(rs) != 2 || rs[0].Type() != cancelevent.Cancelling.Type() || rs[1].Type() != cancelevent.Failed.Type() {
			t.Fatalf("%s: results %v, want cancelling then failed", when, rs)
		}
		var data cancelevent.ResultData
		if err := rs[1].DataAs(&data); err != nil || data.Error == nil || data.Error.Code != cancelevent.CodeLocationNotFollowed {
			t.Errorf("%s: final result %+v %v, want %s", when, data, err, cancelevent.CodeLocationNotFollowed)
		}
	}
	check("first delivery")
	if st := e.state("r1"); st.Phase != state.Final || len(e.follow.tasks) != 0 {
		t.Errorf("record %s with %d follow tasks, want final and none", st.Phase, len(e.follow.tasks))
	}
	e.publish("r1", valid) // a re-send is answered from the record
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("re-send: %+v", d)
	}
	check("re-send")
	if api.calls.Load() != 1 {
		t.Errorf("%d API calls, want 1", api.calls.Load())
	}
}

// An attempt used up by a transient answer is recorded even when the bucket is away as the answer
// comes: unrecorded, the next holder would start from the old count and call more often than
// CPCANCEL_MAX_ATTEMPTS allows.
func TestAttemptRecordedAfterABucketOutage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	back := make(chan error, 1)
	api := &apiFunc{answer: func(int) (cloudpartner.Accepted, error) {
		if err := e.js.DeleteKeyValue(ctx, bucket); err != nil {
			t.Error(err)
		}
		time.AfterFunc(time.Second, func() {
			_, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
			back <- err
		})
		return cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 503, Code: "ServiceUnavailable", Transient: true}
	}}
	e.publish("r1", valid)
	if d := e.handler(api).Decide(ctx, e.next()); d.Kind != worker.KindNak {
		t.Fatalf("decision %+v, want a Nak for the retry", d)
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	if st := e.state("r1"); st.Phase != state.Waiting || st.Attempts != 1 {
		t.Errorf("record %s with %d attempts, want waiting with 1", st.Phase, st.Attempts)
	}
}
