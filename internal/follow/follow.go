// Package follow follows the operation of a cancellation the API accepted (202) until it ends,
// then publishes the request's final result.
//
// The request's record (package state) is the truth: the request handler settles it as following,
// with the operation's location, first poll and deadline, and schedules one follow task, a
// JetStream message naming only the request's key and the location. Decide reads the record for
// every delivery of a task and hands the task back (Nak with a delay) until the operation ends or
// the deadline passes. The final result is written into the record before it is published, so a
// request gets at most one final result however many tasks name it, and a finished request is
// never polled again. Each operation has a poll record of its own in the same bucket, claimed by
// compare-and-set, so that it is polled at most once per Interval however many requests wait on it.
//
// Tasks are untrusted: one that does not match its request's record (no record, not following,
// another location) is dead-lettered and does nothing else.
package follow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/tracing"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	// maxKey is the longest request key a task may carry; state.Key makes 32 hex digits.
	maxKey = 64
	// maxLocation is the longest location a task carries: the client takes a Location of up to
	// cloudpartner.MaxLocationBytes and makes a relative one absolute by prefixing
	// CPCANCEL_CLOUDPARTNER_BASE_URL, at most config.MaxBaseURLBytes.
	maxLocation = cloudpartner.MaxLocationBytes + config.MaxBaseURLBytes
	// maxEscaped is the most bytes JSON writes for one byte of a location: \ufffd for a byte
	// that is not UTF-8 (and \u0026 for &, were it escaped: encodeTask writes it as it is).
	maxEscaped = len(`\ufffd`)
	// maxTask bounds a follow task's body: it holds the task of any location the client accepts,
	// so that Schedule never refuses one, and bounds what is read from the (untrusted) stream.
	maxTask = len(`{"key":"","location":""}`) + maxKey + maxEscaped*maxLocation
	// maxBackoff caps the delay before retrying after a failure of NATS: work resumes within
	// seconds of an outage's end.
	maxBackoff = 15 * time.Second
	// reasonMismatch is the dead-letter reason of a task that its request's record does not back.
	reasonMismatch = "follow task does not match the request's state"
)

// Poller reads operations; *cloudpartner.Client satisfies it. Its errors should be
// *cloudpartner.Error: a permanent one ends following with a failed final result, anything else
// is retried until the deadline, not before its RetryAfter (which the client bounds to an hour).
// A Poller that also has SameOrigin(location) bool (as the client does) is asked first, and a
// location it refuses is not handed to Operation at all. It must be safe for concurrent use.
type Poller interface {
	Operation(ctx context.Context, location string) (cloudpartner.Operation, error)
}

// originChecker is the optional up-front origin check of a Poller.
type originChecker interface {
	SameOrigin(location string) bool
}

var (
	_ Poller        = (*cloudpartner.Client)(nil)
	_ originChecker = (*cloudpartner.Client)(nil)
)

// JetStreamPublisher stores a message and waits for JetStream's acknowledgement; jetstream.JetStream
// satisfies it. It must be safe for concurrent use.
type JetStreamPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Config configures a Follower.
type Config struct {
	// Subject carries the follow tasks (CPCANCEL_FOLLOW_SUBJECT).
	Subject string
	// Source is the CloudEvents source of results (CPCANCEL_SOURCE).
	Source string
	// Interval is the least time between two polls of one operation (CPCANCEL_FOLLOW_INTERVAL).
	Interval time.Duration
	// Timeout is CPCANCEL_FOLLOW_TIMEOUT, named in follow_timeout results; the deadline itself
	// is in each request's record.
	Timeout time.Duration
	// PublishTimeout bounds the wait for a task's acknowledgement in Schedule.
	PublishTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Tracer, when set, traces each delivery of a task as a child of the span that answered the
	// request (its record's trace context); nil is tracing off.
	Tracer trace.Tracer
}

// Follower schedules follow tasks and decides what becomes of each delivery of one. Its methods
// may be called concurrently, from any number of processes sharing the bucket and streams.
type Follower struct {
	cfg   Config
	api   Poller
	store *state.Store
	js    JetStreamPublisher
	out   *results.Publisher
	log   *slog.Logger
}

// New returns a Follower polling through api, reading and writing records in store, scheduling
// tasks through js and storing final results and dead letters through out.
func New(cfg Config, api Poller, store *state.Store, js JetStreamPublisher, out *results.Publisher) *Follower {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, api: api, store: store, js: js, out: out, log: log}
}

// task is the body of a follow message: which request, and which operation it expects to follow.
type task struct {
	Key      string `json:"key"`
	Location string `json:"location"`
}

// Schedule stores the follow task of the request key (its record must already say following, at
// location) and waits for JetStream's acknowledgement. The task's Nats-Msg-Id is "follow:"+key:
// scheduling again inside the follow stream's duplicate window stores nothing more, and a task
// stored twice later still yields one final result.
func (f *Follower) Schedule(ctx context.Context, key, location string) error {
	body, err := encodeTask(task{Key: key, Location: location})
	if err != nil {
		return err
	}
	if _, err := parseTask(body); err != nil {
		return fmt.Errorf("follow: schedule: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, f.cfg.PublishTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: f.cfg.Subject, Data: body}
	if _, err := f.js.PublishMsg(pctx, msg, jetstream.WithMsgID("follow:"+key)); err != nil {
		return fmt.Errorf("follow: schedule: %w", err)
	}
	return nil
}

// Decide works out what becomes of one delivery of a follow task, for the worker pool to settle:
//   - Term, after dead-lettering it, for a task that is unreadable or that the request's record
//     does not back (no record, not following, another location): nothing is fetched or published;
//   - Ack once the request's final result is stored and marked in its record;
//   - Nak with the delay until the next step is due: the first poll, the operation's next poll,
//     or a retry after a failure of NATS (exponential backoff on the delivery count, capped at
//     a minute) or of the API (an Interval, or until the deadline when that comes first, or
//     the API's Retry-After when that is longer than an Interval).
//
// Failures of NATS never end following; a failure of the API ends it only when permanent. An
// operation known to have ended (by this request's poll or another's) gives its own result, even
// past the deadline; otherwise the first poll past the deadline that the API answers ends
// following with follow_timeout (polls that get no answer at all go on for a while after it).
// When ctx ends (shutdown) it hands the task back within a second, leaving the request's record
// as it is.
func (f *Follower) Decide(ctx context.Context, msg jetstream.Msg) (decision worker.Decision) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: there is nothing to redeliver, nor a place to name.
		return worker.Term("follow task without JetStream metadata")
	}
	t, err := parseTask(msg.Data())
	if err != nil {
		return f.deadLetter(ctx, msg, meta, err.Error())
	}
	var span trace.Span
	defer func() {
		if span != nil {
			tracing.EndProcess(span, decision)
		}
	}()
	for try := 0; ; try++ {
		e, err := f.store.Get(ctx, t.Key)
		if f.cfg.Tracer != nil && span == nil {
			ctx, span = tracing.StartProcess(ctx, f.cfg.Tracer, recordedTrace(e), msg, meta, nil)
		}
		switch {
		case errors.Is(err, state.ErrNotFound):
			return f.deadLetter(ctx, msg, meta, reasonMismatch)
		case errors.Is(err, state.ErrUnreadable):
			f.log.ErrorContext(ctx, "following request whose record is unreadable", "key", t.Key, "err", err)
			return f.deadLetter(ctx, msg, meta, "the request's record is unreadable")
		case err != nil:
			return f.retry(ctx, meta, "request state not read", err)
		case !backs(e, t):
			return f.deadLetter(ctx, msg, meta, reasonMismatch)
		}
		d, err := f.decide(ctx, msg, meta, t.Key, e)
		if errors.Is(err, results.ErrUnreadable) {
			f.log.ErrorContext(ctx, "request whose final result is unreadable", "key", t.Key, "err", err)
			return f.deadLetter(ctx, msg, meta, "the request's final result is unreadable")
		}
		if !errors.Is(err, state.ErrConflict) {
			return d
		}
		// Someone else changed the record (another task for the same request): decide once
		// more on what they wrote.
		if try > 0 {
			return worker.Nak(jitter(time.Second), "request state changing")
		}
	}
}

// decide decides for the record e, which backs the task. It returns state.ErrConflict when e
// changed before it could be written (the caller reads it again), and results.ErrUnreadable when
// the final result recorded in e is not one.
func (f *Follower) decide(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, key string, e state.Entry) (worker.Decision, error) {
	if e.Phase == state.Final {
		return f.publishFinal(ctx, meta, key, e)
	}
	loc, now := e.Follow.Location, time.Now()
	if now.Before(e.Follow.FirstPoll) {
		return worker.Nak(e.Follow.FirstPoll.Sub(now), "first poll not due"), nil
	}
	req, first, err := readFirst(e.Result)
	if err != nil {
		f.log.ErrorContext(ctx, "following request whose first result is unreadable", "key", key, "err", err)
		return f.deadLetter(ctx, msg, meta, "the request's first result is unreadable"), nil
	}
	end := func(o ending) (worker.Decision, error) { return f.finish(ctx, meta, key, e, req, first, o) }

	if c, ok := f.api.(originChecker); ok && !c.SameOrigin(loc) {
		return end(permanent(&cloudpartner.Error{Code: cancelevent.CodeLocationNotFollowed}))
	}
	rec, err := f.store.Operation(ctx, loc)
	switch {
	case err != nil:
		return f.retry(ctx, meta, "poll record not read", err), nil
	case rec.Terminal:
		return end(ended(rec.Poll))
	case now.After(e.Follow.Deadline) && rec.Answered.After(e.Follow.Deadline):
		// A poll since the deadline read the operation's status, and it had not ended. Before
		// that, the deadline alone ends nothing: an outage may have kept every poll (or every
		// answer) back, so the last word is a fresh poll's.
		return end(f.timedOut(rec.Status))
	case rec.Revision != 0 && now.Before(f.due(rec.Poll)):
		return worker.Nak(f.due(rec.Poll).Sub(now)+jitter(time.Second), "operation polled recently"), nil
	}
	claimed, err := f.store.ClaimPoll(ctx, loc, rec, now)
	if errors.Is(err, state.ErrConflict) {
		return worker.Nak(jitter(time.Second), "operation claimed by another poll"), nil
	}
	if err != nil {
		return f.retry(ctx, meta, "poll not claimed", err), nil
	}

	op, err := f.api.Operation(ctx, loc)
	if ctx.Err() != nil {
		return worker.Nak(time.Second, "shutting down"), nil
	}
	var apiErr *cloudpartner.Error
	switch {
	case err == nil:
		p := state.Poll{Status: op.Status, Terminal: op.Terminal(), Cancelled: op.Cancelled(),
			Messages: op.Messages, CorrelationID: op.CorrelationID}
		if err := f.store.RecordPoll(ctx, loc, claimed, p); err != nil {
			f.log.WarnContext(ctx, "operation's answer not recorded", "location_key", state.OperationKey(loc), "err", err)
		}
		if p.Terminal {
			return end(ended(p))
		}
		if now.After(e.Follow.Deadline) {
			return end(f.timedOut(op.Status))
		}
		f.log.DebugContext(ctx, "operation not finished", "key", key, "status", op.Status)
		return worker.Nak(f.nextPoll(e.Follow.Deadline, now), "operation "+op.Status), nil
	case errors.As(err, &apiErr) && !apiErr.Transient:
		return end(permanent(apiErr))
	case now.After(e.Follow.Deadline) && (answered(err) || now.After(e.Follow.Deadline.Add(f.unansweredGrace()))):
		return end(f.timedOut(rec.Status))
	case now.After(e.Follow.Deadline):
		// No answer at all (the API slow or out of reach): the operation may well have ended
		// meanwhile. Ask again an interval from now, for a while.
		f.log.WarnContext(ctx, "operation status not read after the follow deadline, polling again", "key", key, "err", err)
		return worker.Nak(f.cfg.Interval+jitter(time.Second), "operation status not read"), nil
	case retryAfter(err) > f.cfg.Interval:
		// The API asked for a longer pause than an interval: every request waiting on the
		// operation keeps it, through the poll record. Up to the deadline only, as nextPoll:
		// there one more poll has the last word, and following ends within its bounds.
		wait := min(retryAfter(err), max(e.Follow.Deadline.Sub(now), 0))
		f.log.WarnContext(ctx, "operation status not read, polling again after the API's Retry-After", "key", key,
			"retry_after", wait, "err", err)
		f.holdPolls(ctx, loc, claimed, time.Now().Add(wait))
		return worker.Nak(wait+jitter(time.Second), "operation status not read, Retry-After"), nil
	default:
		f.log.WarnContext(ctx, "operation status not read, polling again", "key", key, "err", err)
		return worker.Nak(f.nextPoll(e.Follow.Deadline, now), "operation status not read"), nil
	}
}

// retryAfter is the pause the API asked for in answering a poll with err (Retry-After, bounded by
// the client); zero when it asked for none.
func retryAfter(err error) time.Duration {
	var apiErr *cloudpartner.Error
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	return 0
}

// due is when the operation whose poll record is p may be polled again: an Interval after the
// last poll, and not before a Retry-After lets it.
func (f *Follower) due(p state.Poll) time.Time {
	next := p.LastPoll.Add(f.cfg.Interval)
	if p.NotBefore.After(next) {
		return p.NotBefore
	}
	return next
}

// holdPolls writes notBefore into the operation's poll record as this poll claimed it
// (ClaimPoll at the claim's own time changes nothing else), so that no request polls it earlier.
// When someone changed the record since, nothing is written and only this task waits.
func (f *Follower) holdPolls(ctx context.Context, loc string, claimed state.PollEntry, notBefore time.Time) {
	held := claimed
	held.NotBefore = notBefore
	if _, err := f.store.ClaimPoll(ctx, loc, held, claimed.LastPoll); err != nil {
		f.log.WarnContext(ctx, "operation's Retry-After not recorded", "location_key", state.OperationKey(loc), "err", err)
	}
}

// answered reports whether a poll that failed got an answer from the API (an HTTP status), as
// against none at all: a timeout, a connection that failed, no token, or a token the API did
// not take even fresh (401: our credentials, not the operation).
func answered(err error) bool {
	var apiErr *cloudpartner.Error
	return errors.As(err, &apiErr) && apiErr.StatusCode != 0 && apiErr.StatusCode != http.StatusUnauthorized
}

// maxUnansweredGrace bounds how long after the deadline polls that get no answer go on: well
// inside the hour that the request's record outlives the deadline by (CPCANCEL_IDEMPOTENCY_TTL).
const maxUnansweredGrace = 10 * time.Minute

// unansweredGrace is how long after the deadline polls that get no answer at all go on:
// CPCANCEL_FOLLOW_TIMEOUT, at most maxUnansweredGrace. An answer ends following at once.
func (f *Follower) unansweredGrace() time.Duration {
	return min(f.cfg.Timeout, maxUnansweredGrace)
}

// ending is how following ends: the final result's outcome and what its data says of the
// operation (the rest comes from the first result).
type ending struct {
	outcome cancelevent.Outcome
	data    cancelevent.ResultData
}

// ended is the ending of an operation that reached a final status (as polled, status 200). A
// failed one's message is built from its status and its own messages only.
func ended(p state.Poll) ending {
	d := cancelevent.ResultData{StatusCode: 200, CorrelationID: p.CorrelationID, OperationStatus: p.Status, Messages: p.Messages}
	if p.Cancelled {
		return ending{cancelevent.Cancelled, d}
	}
	msg := "the operation ended " + p.Status
	if len(p.Messages) > 0 {
		msg += ": " + strings.Join(p.Messages, "; ")
	}
	d.Error = &cancelevent.ErrorData{Code: cancelevent.CodeOperationFailed, Message: msg}
	return ending{cancelevent.Failed, d}
}

// permanent is the ending of a poll that failed for good, coded as the poll's error was. The
// message is cpcancel's own: the answer's body is not copied.
func permanent(e *cloudpartner.Error) ending {
	code, msg := e.Code, ""
	switch {
	case code == cancelevent.CodeLocationNotFollowed:
		msg = "the operation location is not on the API's origin (CPCANCEL_CLOUDPARTNER_BASE_URL); it was not polled"
	case e.StatusCode != 0:
		msg = fmt.Sprintf("the operation status request answered HTTP %d", e.StatusCode)
	default:
		msg = "the operation status request failed"
	}
	if code == "" {
		code = cancelevent.HTTPCode(e.StatusCode)
	}
	return ending{cancelevent.Failed, cancelevent.ResultData{StatusCode: e.StatusCode, CorrelationID: e.CorrelationID,
		Error: &cancelevent.ErrorData{Code: code, Message: msg}}}
}

// timedOut is the ending of an operation still running at the deadline; status is the last one
// polled, if any.
func (f *Follower) timedOut(status string) ending {
	msg := fmt.Sprintf("the operation was still %s at the follow deadline (CPCANCEL_FOLLOW_TIMEOUT %s)", status, f.cfg.Timeout)
	if status == "" {
		msg = fmt.Sprintf("the operation's status was not read before the follow deadline (CPCANCEL_FOLLOW_TIMEOUT %s)", f.cfg.Timeout)
	}
	return ending{cancelevent.Failed, cancelevent.ResultData{OperationStatus: status,
		Error: &cancelevent.ErrorData{Code: cancelevent.CodeFollowTimeout, Message: msg}}}
}

// finish decides the final result: it writes it into the record (following → final, expecting
// e's revision) and then publishes it. Location, operation id and attempts are the first
// result's: attempts counts the Cancel calls, not the polls, which several requests may share.
func (f *Follower) finish(ctx context.Context, meta *jetstream.MsgMetadata, key string, e state.Entry,
	req cancelevent.Request, first cancelevent.ResultData, o ending) (worker.Decision, error) {
	d := o.data
	d.Location, d.OperationID, d.Attempts = first.Location, first.OperationID, first.Attempts
	if d.Location == "" {
		d.Location = e.Follow.Location
	}
	if f.cfg.Tracer != nil {
		// The final result continues the trace from the span that decided it.
		if tp, ts := tracing.TraceParent(ctx); tp != "" {
			req.TraceParent, req.TraceState = tp, ts
		}
		trace.SpanFromContext(ctx).SetAttributes(tracing.Outcome.String(string(o.outcome)))
	}
	ev, err := cancelevent.NewFinalResult(f.cfg.Source, req, o.outcome, d, time.Now())
	var raw []byte
	if err == nil {
		raw, err = natsce.MarshalStructured(ev)
	}
	if err != nil {
		return f.retry(ctx, meta, "final result not encoded", err), nil
	}
	next := e.State
	next.Phase, next.Final, next.FinalSeq = state.Final, raw, 0
	e, err = f.store.Update(ctx, key, next, e.Revision)
	if errors.Is(err, state.ErrConflict) {
		return worker.Decision{}, err
	}
	if err != nil {
		return f.retry(ctx, meta, "final result not recorded", err), nil
	}
	f.log.InfoContext(ctx, "operation followed to its end", "request_id", req.ID, "request_source", req.Source,
		"outcome", o.outcome, "operation_status", d.OperationStatus, "result_id", ev.ID())
	return f.publishFinal(ctx, meta, key, e)
}

// publishFinal stores the final result recorded in e unless e says it is stored, then marks it
// stored. Publishing it again after a lost mark stores nothing new inside the result stream's
// duplicate window (same id).
func (f *Follower) publishFinal(ctx context.Context, meta *jetstream.MsgMetadata, key string, e state.Entry) (worker.Decision, error) {
	if e.FinalSeq != 0 {
		return worker.Ack(), nil
	}
	seq, err := f.out.PublishRecorded(ctx, e.Final)
	if errors.Is(err, results.ErrUnreadable) {
		return worker.Decision{}, err
	}
	if err != nil {
		return f.retry(ctx, meta, "final result not stored", err), nil
	}
	next := e.State
	next.FinalSeq = seq
	if _, err := f.store.Update(ctx, key, next, e.Revision); err != nil {
		if errors.Is(err, state.ErrConflict) {
			return worker.Decision{}, err
		}
		return f.retry(ctx, meta, "final result stored but not marked", err), nil
	}
	return worker.Ack(), nil
}

// deadLetter stores the task as a dead letter and ends it, or retries it if that fails.
func (f *Follower) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, reason string) worker.Decision {
	if err := f.out.DeadLetter(ctx, msg.Headers(), msg.Data(), meta.Stream, meta.Sequence.Stream, reason); err != nil {
		return f.retry(ctx, meta, "dead letter not stored", err)
	}
	return worker.Term(reason)
}

// retry hands the task back after a failure of NATS (or of cpcancel): within a second when
// shutting down, otherwise after an exponential backoff on the deliveries so far.
func (f *Follower) retry(ctx context.Context, meta *jetstream.MsgMetadata, reason string, err error) worker.Decision {
	if ctx.Err() != nil {
		return worker.Nak(time.Second, "shutting down")
	}
	f.log.WarnContext(ctx, reason+", retrying", "stream_seq", meta.Sequence.Stream, "deliveries", meta.NumDelivered, "err", err)
	return worker.Nak(backoff(meta.NumDelivered), reason)
}

// nextPoll is the delay until the next poll: an Interval, or just past the deadline when that
// comes first.
func (f *Follower) nextPoll(deadline, now time.Time) time.Duration {
	return min(f.cfg.Interval, max(deadline.Sub(now), 0)) + jitter(time.Second)
}

// backoff is the delay before the delivery after the n-th: 1s doubling, capped at maxBackoff,
// between half and all of it.
func backoff(n uint64) time.Duration {
	d := maxBackoff
	if n >= 1 && n <= 7 {
		d = min(time.Second<<(n-1), maxBackoff)
	}
	return d/2 + jitter(d/2)
}

// jitter is a random duration in [1ms, d], spreading retries that would otherwise come together.
func jitter(d time.Duration) time.Duration {
	return time.Millisecond + rand.N(max(d-time.Millisecond, 1))
}

// encodeTask is the body of t: JSON with &, < and > written as they are, not as the 6 bytes
// each that json.Marshal writes. A location's query may hold hundreds of them, and the follow
// stream's bytes are bounded (CPCANCEL_FOLLOW_STREAM_MAX_BYTES).
func encodeTask(t task) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(t); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// parseTask reads a task body: JSON, at most maxTask bytes, with a key as state.Key makes them
// and a location.
func parseTask(body []byte) (task, error) {
	var t task
	switch {
	case len(body) > maxTask:
		return task{}, fmt.Errorf("follow task over %d bytes", maxTask)
	case json.Unmarshal(body, &t) != nil:
		return task{}, errors.New("follow task is not a JSON object")
	case !validKey(t.Key) || t.Location == "":
		return task{}, errors.New("follow task without a request key and a location")
	}
	return t, nil
}

// validKey reports whether k can be a request's key: lowercase hex, as state.Key makes them. Any
// other key could name another kind of record, or one the bucket refuses.
func validKey(k string) bool {
	if k == "" || len(k) > maxKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// backs reports whether the record e backs task t: the request follows, or followed, t's location.
func backs(e state.Entry, t task) bool {
	return (e.Phase == state.Following || e.Phase == state.Final) && e.Follow != nil && e.Follow.Location == t.Location
}

// recordedTrace is the trace context kept in the request's record: the answering span's, or for a
// record written without one, the traceparent of its first result.
func recordedTrace(e state.Entry) trace.SpanContext {
	if sc := tracing.Remote(e.TraceParent, e.TraceState); sc.IsValid() || len(e.Result) == 0 {
		return sc
	}
	var ev event.Event
	if json.Unmarshal(e.Result, &ev) != nil {
		return trace.SpanContext{}
	}
	return tracing.Event(&ev)
}

// readFirst reads the request and the first result's data from the recorded first result.
func readFirst(recorded []byte) (cancelevent.Request, cancelevent.ResultData, error) {
	var ev event.Event
	if err := json.Unmarshal(recorded, &ev); err != nil {
		return cancelevent.Request{}, cancelevent.ResultData{}, err
	}
	var d cancelevent.ResultData
	if err := json.Unmarshal(ev.Data(), &d); err != nil {
		return cancelevent.Request{}, cancelevent.ResultData{}, fmt.Errorf("data: %w", err)
	}
	if d.RequestID == "" || d.RequestSource == "" {
		return cancelevent.Request{}, cancelevent.ResultData{}, errors.New("no request id or source")
	}
	req := cancelevent.Request{ID: d.RequestID, Source: d.RequestSource, PublisherID: d.PublisherID, OfferID: d.OfferID}
	req.TraceParent, _ = ev.Extensions()["traceparent"].(string)
	req.TraceState, _ = ev.Extensions()["tracestate"].(string)
	return req, d, nil
}
