// Package handler decides what becomes of one cancel-request message. It reads and changes the
// request's durable state (package state) by compare-and-set, calls the API only while it holds
// the request's lease, and returns how the message is to be settled; the worker pool settles it.
//
// For a request seen for the first time the steps are: claim the lease, call the API (fenced by
// the lease), record the answer in the state, store the result event, record where it was stored
// (and schedule following a 202), then ack. Every later delivery or re-send reads the state: it
// waits while another worker holds the lease, answers from the record once there is one, and
// never calls the API again.
package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
	"github.com/cpcancel/cpcancel/internal/tracing"
	"github.com/cpcancel/cpcancel/internal/worker"
)

// Canceller calls the Cancel operation API. It must be safe for concurrent use, call
// CancelRequest.Fence right before sending, and return *cloudpartner.Error for every answer other
// than 200/202; any other error is the fence's, or a failure that is not the API's.
type Canceller interface {
	Cancel(ctx context.Context, req cloudpartner.CancelRequest) (cloudpartner.Accepted, error)
}

// Publisher stores result events and dead letters; *results.Publisher satisfies it. It must be
// safe for concurrent use.
type Publisher interface {
	Publish(ctx context.Context, ev *event.Event, recorded []byte) (seq uint64, err error)
	PublishRecorded(ctx context.Context, recorded []byte) (seq uint64, err error)
	DeadLetter(ctx context.Context, header nats.Header, data []byte, stream string, seq uint64, reason string) error
}

// Follower stores the task that follows a request's operation; calling it again for the same key
// stores nothing more. *follow.Follower satisfies it.
type Follower interface {
	Schedule(ctx context.Context, key, location string) error
}

// Recorder counts what the handler does; *metrics.Metrics satisfies it. done's ctx carries the
// delivery's span when tracing is on.
type Recorder interface {
	Received(numDelivered uint64) (done func(ctx context.Context))
	Duplicate()
	Retried()
}

var _ Canceller = (*cloudpartner.Client)(nil)

// Config configures a Handler.
type Config struct {
	// Source is the CloudEvents source of results (CPCANCEL_SOURCE).
	Source string
	// MaxAttempts is the number of API attempts after which a transient failure becomes a failed
	// result (CPCANCEL_MAX_ATTEMPTS).
	MaxAttempts int
	// MaxRequestBytes bounds the size of a request message; larger ones are dead-lettered.
	MaxRequestBytes int
	// Holder names this process in the leases it holds.
	Holder string
	// Lease is how long a claim lasts; CallBudget is the least lease left for the API to be called:
	// one HTTP exchange and the write that records its answer, with a margin for clock skew.
	Lease, CallBudget time.Duration
	// Renew, when positive, is how often a held lease is renewed while the API call waits or runs
	// (rate limit, concurrency cap, token, a slow answer), so that no other worker takes the
	// request over meanwhile; the fence alone would keep it from calling, but not from waiting.
	Renew time.Duration
	// RetryBase and RetryMax bound the exponential retry delay (defaults 1s and 1m). The service
	// keeps the defaults; tests shorten them so that retries fit in a test's time.
	RetryBase, RetryMax time.Duration
	// Follow, when set, follows the operation of every 202: the request's state becomes
	// following, with its first poll FollowFirstPoll and its deadline FollowTimeout from now.
	Follow                         Follower
	FollowFirstPoll, FollowTimeout time.Duration
	// Logger receives one line per answered request; nil discards.
	Logger *slog.Logger
	// Tracer, when set, traces each delivery (package tracing); nil is tracing off, at no cost.
	Tracer trace.Tracer
}

// Handler decides request messages. Decide may be called concurrently.
type Handler struct {
	cfg   Config
	api   Canceller
	store *state.Store
	out   Publisher
	rec   Recorder
	log   *slog.Logger
}

// New returns a Handler. cfg's zero retry delays get their defaults.
func New(cfg Config, api Canceller, store *state.Store, out Publisher, rec Recorder) *Handler {
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, api: api, store: store, out: out, rec: rec, log: log}
}

// delivery is one delivery of a request message being decided.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	ev   *event.Event
	key  string
}

// Decide works out how one delivery of a request message is to be settled. ctx ends the work
// early (the shutdown grace period ran out); the message is then handed back, never half-done.
func (h *Handler) Decide(ctx context.Context, msg jetstream.Msg) (decision worker.Decision) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery; there is nothing to settle, and Term tells the pool so.
		h.log.ErrorContext(ctx, "message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return worker.Term("not a JetStream delivery")
	}
	done := h.rec.Received(meta.NumDelivered)
	d := &delivery{msg: msg, meta: meta}
	var reason string
	d.ev, reason = h.decode(ctx, msg.Headers(), msg.Data())
	var span trace.Span
	if h.cfg.Tracer != nil {
		ctx, span = tracing.StartProcess(ctx, h.cfg.Tracer, tracing.Producer(d.ev, msg.Headers()), msg, meta, d.ev)
	}
	defer func() {
		if span != nil {
			tracing.EndProcess(span, decision)
		}
		done(ctx)
	}()
	if reason != "" {
		return h.deadLetter(ctx, d, reason)
	}
	d.key = state.Key(d.ev.Source(), d.ev.ID())

	lease, entry, err := h.store.Claim(ctx, d.key, h.cfg.Holder, h.cfg.Lease)
	var wait *state.WaitError
	switch {
	case errors.As(err, &wait):
		// Another worker holds the request, or it waits for its next try: look again then, and
		// at least as soon as the retry backoff says, in case its holder finishes early.
		delay := max(time.Until(wait.Until), h.cfg.RetryBase)
		if wait.Held {
			delay = min(delay, h.backoff(int(meta.NumDelivered)))
		}
		return worker.Nak(delay, "request "+wait.Reason)
	case err != nil:
		return h.infraRetry(ctx, d, "state unavailable", err)
	case lease == nil:
		return h.answerFromState(ctx, d, entry)
	}
	return h.work(ctx, d, lease)
}

// decode reads a cancel request, or says why the message is not one.
func (h *Handler) decode(ctx context.Context, hdr nats.Header, data []byte) (ev *event.Event, notRequest string) {
	if size := len(data) + headerSize(hdr); size > h.cfg.MaxRequestBytes {
		return nil, fmt.Sprintf("message of %d bytes exceeds CPCANCEL_MAX_REQUEST_BYTES (%d)", size, h.cfg.MaxRequestBytes)
	}
	ev, err := natsce.Decode(ctx, hdr, data)
	if err != nil {
		return nil, err.Error()
	}
	if ev.Type() != cancelevent.RequestType {
		return nil, fmt.Sprintf("CloudEvent type %q is not %s", ev.Type(), cancelevent.RequestType)
	}
	return ev, ""
}

// work answers a request whose lease this worker holds: it calls the API unless the request is
// invalid, and then either records the answer or gives the lease up until the next try.
func (h *Handler) work(ctx context.Context, d *delivery, lease *state.Lease) worker.Decision {
	attempts := lease.State().Attempts
	if h.cfg.Tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(tracing.Attempt.Int(attempts + 1))
	}
	req, err := cancelevent.ParseRequest(d.ev)
	var invalid *cancelevent.InvalidError
	if errors.As(err, &invalid) {
		// No API attempt is made; the result counts the one look at the request.
		return h.settle(ctx, d, lease, attempts, "", nil, h.result(ctx, req, cancelevent.Failed, cancelevent.ResultData{
			Attempts: max(attempts, 1),
			Error:    &cancelevent.ErrorData{Code: cancelevent.CodeInvalidRequest, Message: invalid.Reason},
		}))
	}

	sent := false
	stopRenewing := h.keepLease(ctx, lease)
	accepted, err := h.api.Cancel(ctx, cloudpartner.CancelRequest{
		PublisherID: req.PublisherID, OfferID: req.OfferID, NotificationEmails: req.Emails, Attempt: attempts + 1,
		Fence: func(ctx context.Context) error {
			if err := lease.Ensure(ctx, h.cfg.CallBudget); err != nil {
				return err
			}
			sent = true
			return nil
		},
	})
	stopRenewing()
	if err == nil {
		outcome := cancelevent.Cancelled
		if accepted.StatusCode == http.StatusAccepted {
			outcome = cancelevent.Cancelling
		}
		result := h.result(ctx, req, outcome, cancelevent.ResultData{
			StatusCode: accepted.StatusCode, Location: accepted.Location, OperationID: accepted.OperationID,
			CorrelationID: accepted.CorrelationID, Attempts: attempts + 1,
		})
		var final *event.Event
		if h.cfg.Follow != nil && outcome == cancelevent.Cancelling && accepted.Location == "" {
			final = h.unfollowable(ctx, req, attempts+1)
		}
		return h.settle(ctx, d, lease, attempts+1, accepted.Location, final, result)
	}

	var apiErr *cloudpartner.Error
	switch {
	case errors.Is(err, state.ErrLeaseLost):
		// Another worker took the request over: it decides from now on.
		return worker.Nak(h.backoff(int(d.meta.NumDelivered)), "lease lost")
	case !errors.As(err, &apiErr):
		// The lease could not be renewed: nothing was sent.
		return h.giveBack(ctx, d, lease, attempts, "state unavailable", err)
	case ctx.Err() != nil && apiErr.StatusCode == 0 && sent:
		// Shutting down with the call's fate unknown: keep the lease, so that no other worker
		// calls the API for this request before the lease runs out.
		return worker.Nak(h.cfg.RetryBase, "shutting down")
	case ctx.Err() != nil && apiErr.StatusCode == 0, apiErr.Code == cancelevent.CodeTokenError:
		// Not the API's answer: no attempt is used up.
		return h.giveBack(ctx, d, lease, attempts, apiErr.Code, err)
	}
	// The call counts: an answer (also one that came as the grace period ran out: it is recorded,
	// as a success is, or the next holder would call again), a timeout or a transport error.
	attempts++
	if apiErr.Transient && attempts < h.cfg.MaxAttempts {
		h.rec.Retried()
		delay := max(h.backoff(attempts), apiErr.RetryAfter)
		h.log.InfoContext(ctx, "transient API failure, retrying", "request_id", req.ID, "request_source", req.Source,
			"status", apiErr.StatusCode, "code", apiErr.Code, "attempt", attempts, "delay", delay)
		// Unrecorded, the attempt would not count: the next holder would start from the old count.
		if dec, ok := h.record(ctx, d, "attempt", func(wctx context.Context) error {
			return lease.Wait(wctx, attempts, time.Now().Add(delay))
		}); !ok {
			return dec
		}
		return worker.Nak(delay, apiErr.Code)
	}
	return h.settle(ctx, d, lease, attempts, "", nil, h.result(ctx, req, cancelevent.Failed, cancelevent.ResultData{
		StatusCode: apiErr.StatusCode, CorrelationID: apiErr.CorrelationID, Attempts: attempts,
		Error: &cancelevent.ErrorData{Code: apiErr.Code, Message: apiErr.Message},
	}))
}

// keepLease renews the lease every Renew until the returned func is called, or until a renewal
// fails (lost, or not reachable: the fence decides before anything is sent).
func (h *Handler) keepLease(ctx context.Context, lease *state.Lease) (stop func()) {
	return worker.Every(h.cfg.Renew, func() bool {
		if err := lease.Renew(ctx); err != nil {
			h.log.DebugContext(ctx, "lease not renewed", "key", lease.Key(), "err", err)
			return false
		}
		return true
	})
}

// giveBack releases the lease without using up an attempt and says to try again after a backoff.
func (h *Handler) giveBack(ctx context.Context, d *delivery, lease *state.Lease, attempts int, reason string, cause error) worker.Decision {
	delay := h.backoff(int(d.meta.NumDelivered))
	if err := lease.Wait(context.WithoutCancel(ctx), attempts, time.Now()); err != nil {
		h.log.DebugContext(ctx, "could not release lease; the retry waits for it to run out", "err", err)
	}
	h.log.WarnContext(ctx, "request handed back, no attempt used", "request_id", d.ev.ID(), "reason", reason, "err", cause, "delay", delay)
	return worker.Nak(delay, reason)
}

// unfollowable is the final result of a request accepted (202) without a location that can be
// followed (none, relative to a path, too long, or holding the token): as for a location on another
// origin, following ends at once, so that the request still gets the final result it waits for.
func (h *Handler) unfollowable(ctx context.Context, req cancelevent.Request, attempts int) *event.Event {
	ev, err := cancelevent.NewFinalResult(h.cfg.Source, req, cancelevent.Failed, cancelevent.ResultData{
		StatusCode: http.StatusAccepted, Attempts: attempts, Error: &cancelevent.ErrorData{Code: cancelevent.CodeLocationNotFollowed,
			Message: "the API accepted the cancellation without an operation location that can be followed; it was not polled"},
	}, time.Now())
	if err != nil {
		panic(fmt.Sprintf("build final result: %v", err)) // as in result: ResultData always encodes
	}
	h.log.InfoContext(ctx, "request accepted without a location to follow", "request_id", req.ID, "request_source", req.Source, "result_id", ev.ID())
	return ev
}

// settle records the result, after attempts API attempts, under the lease (location is the
// operation to follow, if any; final, when set, the final result, as there is none to follow),
// then stores and acknowledges it. The record is
// written before anything is published: from then on every delivery and re-send is answered from
// it, and the API is never called again for the request. Writing it is retried for as long as the
// message may be held, since a failure would otherwise cost a second API call.
func (h *Handler) settle(ctx context.Context, d *delivery, lease *state.Lease, attempts int, location string, final, result *event.Event) worker.Decision {
	recorded, err := natsce.MarshalStructured(result)
	if err != nil {
		h.log.ErrorContext(ctx, "could not encode result", "result_id", result.ID(), "err", err)
		return h.giveBack(ctx, d, lease, lease.State().Attempts, "result not encoded", err)
	}
	st := state.State{Phase: state.Answered, Attempts: attempts, Result: recorded, RequestSeq: d.meta.Sequence.Stream}
	if h.cfg.Tracer != nil {
		// Following polls and the final result continue this trace, also after a restart.
		st.TraceParent, st.TraceState = tracing.TraceParent(ctx)
	}
	if h.cfg.Follow != nil && location != "" {
		now := time.Now()
		st.Phase = state.Following
		st.Follow = &state.Follow{Location: location, FirstPoll: now.Add(h.cfg.FollowFirstPoll), Deadline: now.Add(h.cfg.FollowTimeout)}
	}
	if final != nil {
		if st.Final, err = natsce.MarshalStructured(final); err != nil {
			h.log.ErrorContext(ctx, "could not encode final result", "result_id", final.ID(), "err", err)
			return h.giveBack(ctx, d, lease, lease.State().Attempts, "result not encoded", err)
		}
		st.Phase = state.Final
	}
	var entry state.Entry
	if dec, ok := h.record(ctx, d, "answer ("+string(cancelevent.OutcomeOf(result.Type()))+")", func(wctx context.Context) error {
		entry, err = lease.Settle(wctx, st)
		return err
	}); !ok {
		return dec
	}
	return h.storeResult(ctx, d, entry, result)
}

// record makes write, which records what an API answer told (the answer, or an attempt used up),
// until it succeeds (ok), trying again at most maxAnswerDelay apart. It goes on after the grace
// period ran out (a few bounded writes), since what is lost costs a call too many. Otherwise it
// returns how to settle the message: the lease was lost, the record is unreadable, or shutdown
// allowed three tries.
func (h *Handler) record(ctx context.Context, d *delivery, what string, write func(context.Context) error) (worker.Decision, bool) {
	wctx := context.WithoutCancel(ctx)
	for try := 1; ; try++ {
		err := write(wctx)
		switch {
		case err == nil:
			return worker.Decision{}, true
		case errors.Is(err, state.ErrLeaseLost):
			// Only possible after the lease ran out while the state could not be written: the
			// new holder decides, and may call the API again.
			h.log.ErrorContext(ctx, what+" not recorded: the lease ran out and another worker took the request over",
				"request_id", d.ev.ID())
			return worker.Nak(h.cfg.RetryBase, "lease lost"), false
		case errors.Is(err, state.ErrUnreadable): // damaged meanwhile: dead-lettered, and logged
			return h.infraRetry(ctx, d, what+" not recorded", err), false
		case ctx.Err() != nil && try >= 3:
			h.log.ErrorContext(ctx, what+" not recorded before shutdown; the request may be sent to the API again",
				"request_id", d.ev.ID(), "err", err)
			return worker.Nak(h.cfg.RetryBase, "shutting down"), false
		}
		delay := min(h.backoff(try), maxAnswerDelay)
		h.log.WarnContext(ctx, "could not record the "+what+", trying again", "request_id", d.ev.ID(), "err", err, "delay", delay)
		time.Sleep(delay)
	}
}

// answerFromState answers a delivery of a request that is settled. A redelivery of the message
// whose result is recorded as stored is acked, nothing stored again, however late it comes.
// Anything else (a re-send by the publisher, or a redelivery after a crash) stores the recorded
// results again, under the same ids, and finishes what may have been left undone: scheduling
// the follow task.
func (h *Handler) answerFromState(ctx context.Context, d *delivery, entry state.Entry) worker.Decision {
	// Following left unscheduled is nothing left undone once following is turned off.
	done := entry.Follow == nil || entry.Follow.Scheduled || h.cfg.Follow == nil
	if entry.ResultSeq != 0 && entry.RequestSeq == d.meta.Sequence.Stream && done {
		return worker.Ack()
	}
	if entry.RequestSeq != d.meta.Sequence.Stream {
		h.rec.Duplicate()
		h.log.InfoContext(ctx, "re-sent request answered from its record", "request_id", d.ev.ID(), "request_source", d.ev.Source())
	}
	return h.storeResult(ctx, d, entry, nil)
}

// storeResult stores the result recorded in entry (ev, when given, is that result decoded), and
// its final result when it has one, and schedules following it, then says to ack. Where the
// result is stored, and that following is scheduled, are recorded in the state only when
// JetStream does not confirm the ack: a confirmed ack means the message is never delivered
// again, and a write per request is saved.
func (h *Handler) storeResult(ctx context.Context, d *delivery, entry state.Entry, ev *event.Event) worker.Decision {
	var seq uint64
	var err error
	if ev != nil {
		seq, err = h.out.Publish(ctx, ev, entry.Result)
	} else {
		seq, err = h.out.PublishRecorded(ctx, entry.Result)
	}
	if err != nil {
		return h.infraRetry(ctx, d, "result not stored", err)
	}
	if len(entry.Final) > 0 {
		if _, err := h.out.PublishRecorded(ctx, entry.Final); err != nil {
			return h.infraRetry(ctx, d, "final result not stored", err)
		}
	}
	scheduled := false
	// With following turned off since the answer, nothing schedules it.
	if h.cfg.Follow != nil && entry.Follow != nil && !entry.Follow.Scheduled && entry.Phase == state.Following {
		if err := h.cfg.Follow.Schedule(ctx, d.key, entry.Follow.Location); err != nil {
			return h.infraRetry(ctx, d, "follow not scheduled", err)
		}
		scheduled = true
	}
	return worker.AckConfirmed(func(ackErr error) {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*h.cfg.CallBudget)
		defer cancel()
		if err := h.mark(mctx, d, entry, seq, scheduled); err != nil {
			h.log.WarnContext(ctx, "ack not confirmed and result not marked stored; a redelivery stores it again under the same id",
				"request_id", d.ev.ID(), "ack_err", ackErr, "err", err)
		}
	})
}

// mark records in the state that the request's result is stored at seq, and that following is
// scheduled. Following may have moved the record on meanwhile: then the marks go on
// top of the newer record.
func (h *Handler) mark(ctx context.Context, d *delivery, entry state.Entry, seq uint64, scheduled bool) error {
	for range 3 {
		next := entry.State
		next.ResultSeq = seq
		if scheduled && next.Follow != nil {
			f := *next.Follow
			f.Scheduled = true
			next.Follow = &f
		}
		_, err := h.store.Update(ctx, d.key, next, entry.Revision)
		if !errors.Is(err, state.ErrConflict) {
			return err
		}
		if entry, err = h.store.Get(ctx, d.key); err != nil {
			return err
		}
	}
	return state.ErrConflict
}

// result builds a result event and logs the outcome. With tracing on, the result's traceparent is
// the processing span's, so that the next stage continues the trace; otherwise the request's is
// passed on as it came.
func (h *Handler) result(ctx context.Context, req cancelevent.Request, o cancelevent.Outcome, d cancelevent.ResultData) *event.Event {
	if h.cfg.Tracer != nil {
		if tp, ts := tracing.TraceParent(ctx); tp != "" {
			req.TraceParent, req.TraceState = tp, ts
		}
		span := trace.SpanFromContext(ctx)
		span.SetAttributes(tracing.Outcome.String(string(o)))
		if d.Error != nil {
			span.SetStatus(codes.Error, d.Error.Code)
		}
	}
	ev, err := cancelevent.NewResult(h.cfg.Source, req, o, d, time.Now())
	if err != nil {
		// Only data that cannot be encoded as JSON gets here, which ResultData cannot be.
		panic(fmt.Sprintf("build result: %v", err))
	}
	if h.log.Enabled(ctx, slog.LevelInfo) {
		args := []any{"request_id", req.ID, "request_source", req.Source, "publisher", req.PublisherID,
			"offer", req.OfferID, "outcome", o, "status", d.StatusCode, "attempts", d.Attempts, "result_id", ev.ID()}
		if d.CorrelationID != "" {
			args = append(args, "correlation_id", d.CorrelationID)
		}
		if d.Error != nil {
			args = append(args, "error_code", d.Error.Code, "error", d.Error.Message)
		}
		h.log.InfoContext(ctx, "request answered", args...)
	}
	return ev
}

// maxInfraDelay caps the delay after a failure of NATS or of the bucket: short enough that work
// resumes within seconds of an outage's end, long enough not to hammer what is recovering.
const maxInfraDelay = 15 * time.Second

// maxAnswerDelay caps the delay between tries to record an answer in hand. While the bucket is
// away nothing renews the lease, and once it is back a redelivery may find the lease run out and
// take the request over: the holder's write should land first.
const maxAnswerDelay = 2 * time.Second

// infraRetry hands a message back after a failure of NATS or of the bucket: with a growing delay,
// and without using up an attempt. A record that cannot be read is no failure that passes: the
// message is dead-lettered instead.
func (h *Handler) infraRetry(ctx context.Context, d *delivery, reason string, err error) worker.Decision {
	if errors.Is(err, state.ErrUnreadable) || errors.Is(err, results.ErrUnreadable) {
		// Not a failure that passes: the request's record cannot be decided on, and trying again
		// would hold the message until its stream drops it. An operator can look at both.
		h.log.ErrorContext(ctx, "request's record unreadable, request dead-lettered", "request_id", d.ev.ID(),
			"request_source", d.ev.Source(), "key", d.key, "reason", reason, "err", err)
		return h.deadLetter(ctx, d, "its record in the idempotency bucket (key "+d.key+") is unreadable: "+err.Error())
	}
	delay := min(h.backoff(int(d.meta.NumDelivered)), maxInfraDelay)
	h.log.WarnContext(ctx, "could not finish, retrying", "stream_seq", d.meta.Sequence.Stream, "reason", reason, "err", err, "delay", delay)
	return worker.Nak(delay, reason)
}

// deadLetter stores the request message as a dead letter with reason and ends its deliveries.
func (h *Handler) deadLetter(ctx context.Context, d *delivery, reason string) worker.Decision {
	if err := h.out.DeadLetter(ctx, d.msg.Headers(), d.msg.Data(), d.meta.Stream, d.meta.Sequence.Stream, reason); err != nil {
		return h.infraRetry(ctx, d, "dead letter not stored", err)
	}
	return worker.Term(reason)
}

// backoff is exponential in n (1, 2, …) with equal jitter, capped at RetryMax.
func (h *Handler) backoff(n int) time.Duration {
	d := h.cfg.RetryMax
	if shift := n - 1; shift >= 0 && shift < 30 {
		d = min(h.cfg.RetryBase<<shift, h.cfg.RetryMax)
	}
	return d/2 + rand.N(d/2+1)
}

func headerSize(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
