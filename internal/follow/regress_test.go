package follow

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/worker"
)

// TestLateDuplicateTaskAfterFinal is the regression of "contradictory results": a task for a
// request whose operation was followed to its end, stored again after the follow stream's
// duplicate window, neither polls the (by now gone) operation nor stores another result.
func TestLateDuplicateTaskAfterFinal(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin}
	api.answer = func(context.Context, string) (cloudpartner.Operation, error) {
		if api.calls.Load() == 1 {
			return cloudpartner.Operation{Status: "canceled"}, nil
		}
		return cloudpartner.Operation{}, &cloudpartner.Error{StatusCode: 404, Code: "http_404", Transient: true}
	}
	e := newEnv(t, api)
	ctx := context.Background()
	loc := apiOrigin + "/ops/late"
	key := e.following(t, "late", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	must(t, e.f.Schedule(ctx, key, loc))
	msg := e.next(t)
	if d := e.f.Decide(ctx, msg); d.Kind != worker.KindAck {
		t.Fatalf("first task: %v %q, want Ack", d.Kind, d.Reason)
	} else {
		settle(t, msg, d)
	}

	// The same task again, as if republished after the duplicate window: no message id to drop it.
	late := e.deliver(t, taskBody(key, loc), "")
	if d := e.f.Decide(ctx, late); d.Kind != worker.KindAck {
		t.Fatalf("late task: %v %q, want Ack", d.Kind, d.Reason)
	}
	if n := api.calls.Load(); n != 1 {
		t.Errorf("operation polled %d times, want once", n)
	}
	got := e.results(t)
	if len(got) != 1 || got[0].ev.Type() != cancelevent.Cancelled.Type() {
		t.Fatalf("results %v, want one final cancelled", types(got))
	}
}

// TestConcurrentTasksOneFinal: several tasks for one request (a re-schedule after the duplicate
// window) decided at once store one final result between them.
func TestConcurrentTasksOneFinal(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin, answer: answer(cloudpartner.Operation{Status: "failed", Messages: []string{"no"}}, nil)}
	e := newEnv(t, api)
	loc := apiOrigin + "/ops/dup"
	key := e.following(t, "dup", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	msgs := make([]jetstream.Msg, 5)
	for i := range msgs {
		msgs[i] = e.deliver(t, taskBody(key, loc), "")
	}
	untilAllAcked(t, e.f, msgs)
	if n := api.calls.Load(); n != 1 {
		t.Errorf("operation polled %d times, want once", n)
	}
	got := e.results(t)
	if len(got) != 1 || got[0].data.Error == nil || got[0].data.Error.Code != cancelevent.CodeOperationFailed {
		t.Fatalf("results %v, want one final failed", types(got))
	}
}

// TestForgedTask is the regression of "forged task": a task naming an existing request with a
// location on another host is dead-lettered; the other host is never contacted and no result is
// stored. A request whose own recorded location is on another host ends location_not_followed,
// again without contacting it.
func TestForgedTask(t *testing.T) {
	var apiHits, otherHits atomic.Int64
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"running"}`)
	}))
	defer apiSrv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		fmt.Fprint(w, `{"status":"failed","messages":["leaked secret"]}`)
	}))
	defer other.Close()
	client, err := cloudpartner.New(cloudpartner.Config{BaseURL: apiSrv.URL, Tokens: cloudpartner.StaticToken("token")})
	must(t, err)
	e := newEnv(t, client)
	ctx := context.Background()

	// A forged task for a request following an operation on the API.
	key := e.following(t, "victim", apiSrv.URL+"/ops/1", time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	if d := e.f.Decide(ctx, e.deliver(t, taskBody(key, other.URL+"/steal"), "")); d.Kind != worker.KindTerm {
		t.Fatalf("forged task: %v %q, want Term", d.Kind, d.Reason)
	}
	// A forged task for a request that does not exist.
	if d := e.f.Decide(ctx, e.deliver(t, taskBody(state.Key(reqSource, "nobody"), other.URL+"/steal"), "")); d.Kind != worker.KindTerm {
		t.Fatalf("forged task without a request: %v %q, want Term", d.Kind, d.Reason)
	}
	if n := e.count(t, deadStream); n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
	if st, _ := e.store.Get(ctx, key); st.Phase != state.Following {
		t.Errorf("victim's record is %s, want following", st.Phase)
	}

	// A request whose recorded location is on another host (the 202 named it).
	loc := other.URL + "/ops/2"
	key2 := e.following(t, "elsewhere", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	if d := e.f.Decide(ctx, e.deliver(t, taskBody(key2, loc), "")); d.Kind != worker.KindAck {
		t.Fatalf("task for another host: %v %q, want Ack", d.Kind, d.Reason)
	}
	if n := otherHits.Load(); n != 0 {
		t.Errorf("the other host was contacted %d times", n)
	}
	if n := apiHits.Load(); n != 0 {
		t.Errorf("the API was contacted %d times", n)
	}
	got := e.results(t)
	if len(got) != 1 || got[0].data.RequestID != "elsewhere" || got[0].data.Error == nil ||
		got[0].data.Error.Code != cancelevent.CodeLocationNotFollowed || got[0].data.StatusCode != 0 {
		t.Fatalf("results %v, want only elsewhere's location_not_followed", types(got))
	}
}

// TestOnePollPerOperationPerInterval is the regression of "N requests, N polls": 20 requests
// following one operation, their tasks decided at once, poll it once; when the interval has
// passed, once more, and that answer finishes all of them.
func TestOnePollPerOperationPerInterval(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin}
	e := newEnv(t, api)
	ctx := context.Background()
	loc := apiOrigin + "/ops/shared"
	msgs := make([]jetstream.Msg, 20)
	for i := range msgs {
		key := e.following(t, fmt.Sprintf("shared-%d", i), loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
		msgs[i] = e.deliver(t, taskBody(key, loc), "")
	}
	var wg sync.WaitGroup
	decisions := make([]worker.Decision, len(msgs))
	for i, msg := range msgs {
		wg.Go(func() { decisions[i] = e.f.Decide(ctx, msg) })
	}
	wg.Wait()
	for i, d := range decisions {
		if d.Kind != worker.KindNak || d.Delay > interval+time.Second {
			t.Errorf("task %d: %v %s %q, want Nak within an interval", i, d.Kind, d.Delay, d.Reason)
		}
	}
	if n := api.calls.Load(); n != 1 {
		t.Fatalf("operation polled %d times by 20 requests in one interval, want once", n)
	}

	// An interval later (the record's last poll moved back) the operation has ended.
	rec, err := e.store.Operation(ctx, loc)
	must(t, err)
	_, err = e.store.ClaimPoll(ctx, loc, rec, rec.LastPoll.Add(-interval))
	must(t, err)
	api.answer = answer(cloudpartner.Operation{Status: "canceled"}, nil)
	untilAllAcked(t, e.f, msgs)
	if n := api.calls.Load(); n != 2 {
		t.Errorf("operation polled %d times in two intervals, want twice", n)
	}
	got := e.results(t)
	ids := map[string]bool{}
	for _, r := range got {
		if r.ev.Type() != cancelevent.Cancelled.Type() {
			t.Errorf("result %s is %s", r.data.RequestID, r.ev.Type())
		}
		ids[r.ev.ID()] = true
	}
	if len(got) != 20 || len(ids) != 20 {
		t.Errorf("%d results with %d ids, want 20 final results", len(got), len(ids))
	}
}

// TestFinalRecordedBeforePublishing: a final result that could not be stored is stored by a later
// delivery as it was recorded (same id, same time), without polling again.
func TestFinalRecordedBeforePublishing(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin, answer: answer(cloudpartner.Operation{Status: "canceled"}, nil)}
	e := newEnv(t, api)
	ctx := context.Background()
	loc := apiOrigin + "/ops/down"
	key := e.following(t, "down", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	msg := e.deliver(t, taskBody(key, loc), "")
	must(t, e.js.DeleteStream(ctx, resultStream))
	if d := e.f.Decide(ctx, msg); d.Kind != worker.KindNak {
		t.Fatalf("with the result stream down: %v %q, want Nak", d.Kind, d.Reason)
	}
	recorded, err := e.store.Get(ctx, key)
	must(t, err)
	if recorded.Phase != state.Final || recorded.FinalSeq != 0 {
		t.Fatalf("record %s with final seq %d, want final, not stored", recorded.Phase, recorded.FinalSeq)
	}
	_, err = e.js.CreateStream(ctx, jetstream.StreamConfig{Name: resultStream, Subjects: []string{"res.>"}})
	must(t, err)
	if d := e.f.Decide(ctx, msg); d.Kind != worker.KindAck {
		t.Fatalf("redelivery: %v %q, want Ack", d.Kind, d.Reason)
	}
	var want event.Event
	must(t, json.Unmarshal(recorded.Final, &want))
	got := e.results(t)
	if len(got) != 1 || got[0].ev.ID() != want.ID() || !got[0].ev.Time().Equal(want.Time()) {
		t.Fatalf("results %v, want the recorded %s", types(got), want.ID())
	}
	if n := api.calls.Load(); n != 1 {
		t.Errorf("operation polled %d times, want once", n)
	}
}

// TestScheduleTwice: scheduling a request twice stores one task.
func TestScheduleTwice(t *testing.T) {
	e := newEnv(t, &fakeAPI{origin: apiOrigin})
	ctx := context.Background()
	key := state.Key(reqSource, "twice")
	must(t, e.f.Schedule(ctx, key, apiOrigin+"/ops/twice"))
	must(t, e.f.Schedule(ctx, key, apiOrigin+"/ops/twice"))
	if n := e.count(t, followStream); n != 1 {
		t.Fatalf("%d follow tasks, want 1", n)
	}
	var got task
	must(t, json.Unmarshal(e.next(t).Data(), &got))
	if got != (task{Key: key, Location: apiOrigin + "/ops/twice"}) {
		t.Errorf("task %+v", got)
	}
	if err := e.f.Schedule(ctx, "not a key", apiOrigin+"/ops/x"); err == nil {
		t.Error("a task that Decide would dead-letter was scheduled")
	}
}

// untilAllAcked decides msgs again and again, as redeliveries would, until each is acked; a
// redelivery before its Nak delay is as good as one after, for a record that changed meanwhile.
func untilAllAcked(t *testing.T, f *Follower, msgs []jetstream.Msg) {
	t.Helper()
	pending := append([]jetstream.Msg(nil), msgs...)
	for round := 0; len(pending) > 0; round++ {
		if round == 20 {
			t.Fatalf("%d tasks still not acked", len(pending))
		}
		var mu sync.Mutex
		var next []jetstream.Msg
		var wg sync.WaitGroup
		for _, msg := range pending {
			wg.Go(func() {
				d := f.Decide(context.Background(), msg)
				if d.Kind == worker.KindTerm {
					t.Errorf("task terminated: %q", d.Reason)
				}
				if d.Kind == worker.KindNak {
					mu.Lock()
					next = append(next, msg)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		pending = next
		time.Sleep(10 * time.Millisecond)
	}
}

func types(rs []stored) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.data.RequestID+":"+r.ev.Type())
	}
	return out
}

// TestRetryAfterHoldsEveryRequest is the regression of "polls ignore Retry-After": a poll answered
// 429 with a Retry-After of 5 intervals hands its task back for that long, and another request
// waiting on the same operation does not poll it before then either, though an interval passed.
func TestRetryAfterHoldsEveryRequest(t *testing.T) {
	api := &fakeAPI{origin: apiOrigin, answer: answer(cloudpartner.Operation{}, throttled(429, 5*interval))}
	e := newEnv(t, api)
	ctx := context.Background()
	loc := apiOrigin + "/ops/throttled"
	first := e.following(t, "throttled-1", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	second := e.following(t, "throttled-2", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))

	if d := e.f.Decide(ctx, e.deliver(t, taskBody(first, loc), "")); d.Kind != worker.KindNak || d.Delay < 5*interval {
		t.Fatalf("throttled poll: %v %s %q, want Nak for the Retry-After of %s", d.Kind, d.Delay, d.Reason, 5*interval)
	}
	// An interval later (the record's last poll moved back) the Retry-After still holds.
	rec, err := e.store.Operation(ctx, loc)
	must(t, err)
	_, err = e.store.ClaimPoll(ctx, loc, rec, rec.LastPoll.Add(-interval))
	must(t, err)
	if d := e.f.Decide(ctx, e.deliver(t, taskBody(second, loc), "")); d.Kind != worker.KindNak || d.Delay < 4*interval {
		t.Errorf("other request's task: %v %s %q, want Nak until the Retry-After ends", d.Kind, d.Delay, d.Reason)
	}
	if n := api.calls.Load(); n != 1 {
		t.Errorf("operation polled %d times inside its Retry-After, want once", n)
	}
}

// TestRetryAfterBoundedByClient: a Retry-After of years from the API holds polls for the hour the
// client bounds it to, as on the request path, not longer.
func TestRetryAfterBoundedByClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "99999999999")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	client, err := cloudpartner.New(cloudpartner.Config{BaseURL: srv.URL, Tokens: cloudpartner.StaticToken("token")})
	must(t, err)
	e := newEnv(t, client)
	ctx := context.Background()
	loc := srv.URL + "/ops/hostile"
	key := e.following(t, "hostile", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
	d := e.f.Decide(ctx, e.deliver(t, taskBody(key, loc), ""))
	if d.Kind != worker.KindNak || d.Delay < time.Hour || d.Delay > time.Hour+time.Second {
		t.Errorf("decision %v %s %q, want Nak for an hour", d.Kind, d.Delay, d.Reason)
	}
	rec, err := e.store.Operation(ctx, loc)
	must(t, err)
	if hold := time.Until(rec.NotBefore); hold < time.Hour-time.Minute || hold > time.Hour {
		t.Errorf("poll record held for %s, want an hour", hold)
	}
}

// TestScheduleLongestLocation is the regression of "a valid Location rejected forever": the task
// of any Location the client accepts (MaxLocationBytes of characters that JSON escapes, after the
// base URL) is scheduled and decided; one byte more the client refuses.
func TestScheduleLongestLocation(t *testing.T) {
	var raw string // the Location the API answers with
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header()["Location"] = []string{raw}
			w.WriteHeader(http.StatusAccepted)
			return
		}
		fmt.Fprint(w, `{"status":"running"}`)
	}))
	defer srv.Close()
	client, err := cloudpartner.New(cloudpartner.Config{BaseURL: srv.URL, Tokens: cloudpartner.StaticToken("token")})
	must(t, err)
	e := newEnv(t, client)
	ctx := context.Background()
	cancel := func(location string) string {
		raw = location
		acc, err := client.Cancel(ctx, cloudpartner.CancelRequest{PublisherID: "contoso", OfferID: "offer"})
		must(t, err)
		return acc.Location
	}

	for i, fill := range []string{"a=1&", "<>", `"\`, "\xff", "\u2028"} {
		loc := cancel(sized("/api/operations/x?", fill, cloudpartner.MaxLocationBytes))
		if loc == "" {
			t.Fatalf("%q: the client refused a Location of %d bytes", fill, cloudpartner.MaxLocationBytes)
		}
		key := e.following(t, fmt.Sprintf("long-%d", i), loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
		if err := e.f.Schedule(ctx, key, loc); err != nil {
			t.Errorf("%q: %v", fill, err)
			continue
		}
		if d := e.f.Decide(ctx, e.next(t)); d.Kind != worker.KindNak {
			t.Errorf("%q: decision %v %q, want Nak until the next poll", fill, d.Kind, d.Reason)
		}
	}
	if loc := cancel(sized("/api/operations/x?", "a", cloudpartner.MaxLocationBytes+1)); loc != "" {
		t.Errorf("the client took a Location over cloudpartner.MaxLocationBytes: maxLocation no longer bounds what it accepts")
	}
}

// sized is prefix followed by fill repeated, then padding, n bytes in all.
func sized(prefix, fill string, n int) string {
	s := prefix + strings.Repeat(fill, (n-len(prefix))/len(fill))
	return s + strings.Repeat("a", n-len(s))
}

// TestTaskLimit: a task of the longest key and location, every byte of which JSON writes as 6, is
// within the limit that Decide reads tasks under; a byte more is not.
func TestTaskLimit(t *testing.T) {
	longest, err := encodeTask(task{Key: strings.Repeat("f", maxKey), Location: strings.Repeat("\xff", maxLocation)})
	must(t, err)
	if _, err := parseTask(longest); err != nil {
		t.Errorf("longest task (%d bytes): %v", len(longest), err)
	}
	if _, err := parseTask(append(longest, ' ')); err == nil {
		t.Errorf("a task of %d bytes was read", len(longest)+1)
	}
}

// TestUnreadableRecordIsDeadLettered: a task whose request record cannot be read (a phase this
// version does not know), or whose recorded final result is not an event, is dead-lettered
// instead of retried until the follow stream drops it; nothing is polled.
func TestUnreadableRecordIsDeadLettered(t *testing.T) {
	ctx := context.Background()
	loc := apiOrigin + "/ops/damaged"
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, e *env, key string)
	}{
		{"unknown phase", func(t *testing.T, e *env, key string) {
			_, err := e.kv.Put(ctx, key, []byte(`{"phase":"Following"}`+"\n"))
			must(t, err)
		}},
		{"final result no event", func(t *testing.T, e *env, key string) {
			e.finalRecorded(t, key, "damaged", cancelevent.Cancelled, 0)
			cur, err := e.store.Get(ctx, key)
			must(t, err)
			cur.Final = []byte(`{}`)
			_, err = e.store.Update(ctx, key, cur.State, cur.Revision)
			must(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeAPI{origin: apiOrigin, answer: answer(cloudpartner.Operation{Status: "running"}, nil)}
			e := newEnv(t, api)
			key := e.following(t, "damaged", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
			tc.damage(t, e, key)
			d := e.f.Decide(ctx, e.deliver(t, taskBody(key, loc), ""))
			if d.Kind != worker.KindTerm || !strings.Contains(d.Reason, "unreadable") {
				t.Fatalf("decision %v %s %q, want Term as unreadable", d.Kind, d.Delay, d.Reason)
			}
			if n := e.count(t, deadStream); n != 1 || api.calls.Load() != 0 {
				t.Errorf("%d dead letters, %d polls; want 1 and 0", n, api.calls.Load())
			}
		})
	}
}
