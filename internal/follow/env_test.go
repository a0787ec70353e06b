package follow

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/worker"
)

// Names of the test topology.
const (
	bucket        = "STATE"
	resultStream  = "RESULTS"
	deadStream    = "DEADLETTERS"
	followStream  = "FOLLOW"
	followSubject = "follow.tasks"
	resultSource  = "/cpcancel/test"
	reqSource     = "/publisher/test"
	apiOrigin     = "https://api.test"
	interval      = time.Minute
	followTimeout = 2 * time.Hour
)

// fakeAPI is a Poller answering with answer and counting its calls; it accepts only locations
// on origin, as the real client does.
type fakeAPI struct {
	origin string
	answer func(ctx context.Context, location string) (cloudpartner.Operation, error)
	calls  atomic.Int64
}

func (a *fakeAPI) Operation(ctx context.Context, location string) (cloudpartner.Operation, error) {
	a.calls.Add(1)
	if a.answer == nil {
		return cloudpartner.Operation{Status: "running"}, nil
	}
	return a.answer(ctx, location)
}

func (a *fakeAPI) SameOrigin(location string) bool { return strings.HasPrefix(location, a.origin+"/") }

// env is a real embedded NATS server with the bucket and streams a Follower uses.
type env struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	store *state.Store
	out   *results.Publisher
	cons  jetstream.Consumer
	f     *Follower
}

type nopRecorder struct{}

func (nopRecorder) ResultStored(string) {}
func (nopRecorder) DeadLettered()       {}

func newEnv(t *testing.T, api Poller) *env {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
	must(t, err)
	for _, sc := range []jetstream.StreamConfig{
		{Name: resultStream, Subjects: []string{"res.>"}},
		{Name: deadStream, Subjects: []string{"dead"}},
		{Name: followStream, Subjects: []string{followSubject}, Retention: jetstream.WorkQueuePolicy},
	} {
		_, err := js.CreateStream(ctx, sc)
		must(t, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, followStream, jetstream.ConsumerConfig{
		Durable: "follow", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, AckWait: time.Minute})
	must(t, err)
	store := state.New(js, kv, 5*time.Second)
	out := results.New(results.Config{SubjectPrefix: "res", DeadLetterSubject: "dead", Mode: natsce.Structured,
		Timeout: 5 * time.Second}, js, nopRecorder{})
	f := New(Config{Subject: followSubject, Source: resultSource, Interval: interval, Timeout: followTimeout,
		PublishTimeout: 5 * time.Second}, api, store, js, out)
	return &env{js: js, kv: kv, store: store, out: out, cons: cons, f: f}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// request is the cancel request of test id.
func request(id string) cancelevent.Request {
	return cancelevent.Request{ID: id, Source: reqSource, PublisherID: "contoso", OfferID: "offer-" + id,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
}

// following records request id as following the operation at location, as the request handler
// does after a 202, and returns its key.
func (e *env) following(t *testing.T, id, location string, firstPoll, deadline time.Time) string {
	t.Helper()
	first, err := cancelevent.NewResult(resultSource, request(id), cancelevent.Cancelling,
		cancelevent.ResultData{StatusCode: 202, Location: location, OperationID: "op-" + id, Attempts: 2}, time.Now())
	must(t, err)
	raw, err := natsce.MarshalStructured(first)
	must(t, err)
	key := state.Key(reqSource, id)
	_, err = e.store.Create(context.Background(), key, state.State{Phase: state.Following, Result: raw,
		ResultSeq: 7, RequestSeq: 3,
		Follow: &state.Follow{Location: location, FirstPoll: firstPoll, Deadline: deadline, Scheduled: true}})
	must(t, err)
	return key
}

// finalRecorded turns key's following record into a final one with outcome o, as Decide would,
// with finalSeq as its place in the result stream.
func (e *env) finalRecorded(t *testing.T, key, id string, o cancelevent.Outcome, finalSeq uint64) []byte {
	t.Helper()
	ctx := context.Background()
	cur, err := e.store.Get(ctx, key)
	must(t, err)
	ev, err := cancelevent.NewFinalResult(resultSource, request(id), o,
		cancelevent.ResultData{StatusCode: 200, Location: cur.Follow.Location, OperationID: "op-" + id, Attempts: 2, OperationStatus: "canceled"}, time.Now())
	must(t, err)
	raw, err := natsce.MarshalStructured(ev)
	must(t, err)
	next := cur.State
	next.Phase, next.Final, next.FinalSeq = state.Final, raw, finalSeq
	_, err = e.store.Update(ctx, key, next, cur.Revision)
	must(t, err)
	return raw
}

// deliver stores body as a follow task (with msgID, if any) and returns its delivery.
func (e *env) deliver(t *testing.T, body []byte, msgID string) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	_, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: followSubject, Data: body}, opts...)
	must(t, err)
	return e.next(t)
}

// next fetches the next delivery of a follow task.
func (e *env) next(t *testing.T) jetstream.Msg {
	t.Helper()
	batch, err := e.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	must(t, err)
	for msg := range batch.Messages() {
		return msg
	}
	t.Fatalf("no follow task delivered: %v", batch.Error())
	return nil
}

func taskBody(key, location string) []byte {
	b, _ := json.Marshal(task{Key: key, Location: location})
	return b
}

// settle settles msg as the worker pool would.
func settle(t *testing.T, msg jetstream.Msg, d worker.Decision) {
	t.Helper()
	var err error
	switch d.Kind {
	case worker.KindAck:
		err = msg.Ack()
	case worker.KindNak:
		err = msg.NakWithDelay(d.Delay)
	case worker.KindTerm:
		err = msg.TermWithReason(d.Reason)
	}
	must(t, err)
}

// stored is a result in the result stream, decoded.
type stored struct {
	seq  uint64
	ev   *event.Event
	data cancelevent.ResultData
}

// results reads every result stored.
func (e *env) results(t *testing.T) []stored {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, resultStream)
	must(t, err)
	info, err := s.Info(ctx)
	must(t, err)
	var out []stored
	for seq := info.State.FirstSeq; seq != 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		must(t, err)
		ev, err := natsce.Decode(ctx, raw.Header, raw.Data)
		must(t, err)
		var d cancelevent.ResultData
		must(t, ev.DataAs(&d))
		out = append(out, stored{seq: seq, ev: ev, data: d})
	}
	return out
}

// count is the number of messages in stream.
func (e *env) count(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), stream)
	must(t, err)
	info, err := s.Info(context.Background())
	must(t, err)
	return info.State.Msgs
}
