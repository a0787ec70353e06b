// Package handler turns one cancel-request message into one result event and settles the message
// exactly once: Ack after the result is stored, NakWithDelay to retry, TermWithReason after
// dead-lettering what is not a cancel request.
package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cenats"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/idempotency"
)

// Canceller calls the Cancel operation API. It must be safe for concurrent use. Any error it
// returns other than *cloudpartner.Error is treated as transient.
type Canceller interface {
	Cancel(ctx context.Context, req cloudpartner.CancelRequest) (cloudpartner.Accepted, error)
}

// Publisher stores messages in JetStream: PublishMsg returns once the server acknowledged the
// message, PublishMsgAsync at once with a future of the acknowledgement. It must be safe for
// concurrent use; jetstream.JetStream satisfies it.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// Recorder counts what the handler does; *metrics.Metrics satisfies it.
type Recorder interface {
	Received(numDelivered uint64) (done func())
	ResultStored(outcome string)
	Duplicate()
	DeadLettered()
	Retried()
}

// Store holds a lease per request while it is processed, and its result afterwards; it must be
// safe for concurrent use and shared by every worker and replica. *idempotency.Store satisfies it.
type Store interface {
	// Claim returns a lease, or the recorded result, or an *idempotency.BusyError while another
	// worker holds the request; any other error is transient.
	Claim(ctx context.Context, key string) (lease *idempotency.Lease, recorded []byte, err error)
}

var (
	_ Canceller = (*cloudpartner.Client)(nil)
	_ Publisher = jetstream.JetStream(nil)
	_ Store     = (*idempotency.Store)(nil)
)

// Config configures a Handler.
type Config struct {
	// Source is the CloudEvents source of results (CPCANCEL_SOURCE).
	Source string
	// ResultSubjectPrefix gets ".<outcome>" appended to make a result's subject.
	ResultSubjectPrefix string
	// DeadLetterSubject receives messages that are not cancel requests.
	DeadLetterSubject string
	// Mode is the content mode of results.
	Mode cenats.Mode
	// MaxAttempts is the delivery at which a transient failure becomes a failed result.
	MaxAttempts int
	// MaxRequestBytes bounds the size of a request message; larger ones are dead-lettered.
	MaxRequestBytes int
	// RetryBase and RetryMax bound the exponential retry delay (defaults 1s and 1m).
	RetryBase, RetryMax time.Duration
	// PublishTimeout bounds one result or dead-letter publish (default 10s).
	PublishTimeout time.Duration
	// Heartbeat is how often a message in progress is reported to JetStream (InProgress), so that
	// AckWait never redelivers work still running; 0 disables it.
	Heartbeat time.Duration
	// Follow, when set, is called with every stored cancelling result before the request is acked,
	// to schedule following its operation; it must be idempotent. An error hands the request back.
	Follow func(ctx context.Context, result *event.Event) error
	// Logger receives one line per settled request; nil discards.
	Logger *slog.Logger
}

// Handler processes request messages. Handle may be called concurrently.
type Handler struct {
	cfg   Config
	api   Canceller
	pub   Publisher
	store Store
	rec   Recorder
	log   *slog.Logger
}

// New returns a Handler. cfg's zero durations get their defaults.
func New(cfg Config, api Canceller, pub Publisher, store Store, rec Recorder) *Handler {
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, api: api, pub: pub, store: store, rec: rec, log: log}
}

// action is how a message is settled. Exactly one is chosen per delivery, by process.
type action struct {
	kind   actionKind
	delay  time.Duration // nak
	reason string        // term, and logged for nak
}

type actionKind int

const (
	ack actionKind = iota
	nak
	term
)

// Handle processes one delivery of a request message and settles it. ctx ends the work early
// (shutdown); the message is then handed back for redelivery, never half-done.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing can be acknowledged.
		h.log.Error("message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	done := h.rec.Received(meta.NumDelivered)
	defer done()
	stop := h.keepAlive(msg)
	a := h.process(ctx, msg, meta)
	stop()
	h.settle(msg, meta, a)
}

func (h *Handler) settle(msg jetstream.Msg, meta *jetstream.MsgMetadata, a action) {
	var err error
	switch a.kind {
	case ack:
		err = msg.Ack()
	case nak:
		err = msg.NakWithDelay(a.delay)
	case term:
		err = msg.TermWithReason(a.reason)
	}
	if err != nil {
		h.log.Warn("could not settle message; JetStream redelivers it after AckWait",
			"stream_seq", meta.Sequence.Stream, "err", err)
	}
}

func (h *Handler) process(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) action {
	attempt := int(meta.NumDelivered)
	ev, reason := h.decode(ctx, msg.Headers(), msg.Data())
	if reason != "" {
		return h.deadLetter(ctx, msg, meta, reason)
	}
	lease, recorded, err := h.store.Claim(ctx, idempotency.Key(ev.Source(), ev.ID()))
	var busy *idempotency.BusyError
	switch {
	case errors.As(err, &busy):
		// Another worker or replica is on it: look again with backoff (it usually finishes well
		// before its lease ends), and at the latest when the lease ends.
		delay := min(h.retryDelay(attempt, 0), max(time.Until(busy.Until), h.cfg.RetryBase))
		return action{kind: nak, delay: delay, reason: "in progress elsewhere"}
	case err != nil:
		h.log.Warn("idempotency store unavailable, retrying", "request_id", ev.ID(), "err", err)
		return action{kind: nak, delay: h.cfg.RetryBase, reason: "idempotency store unavailable"}
	case recorded != nil:
		return h.republish(ctx, ev, recorded)
	}

	result, retry := h.answer(ctx, ev, attempt)
	if retry != nil {
		if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
			h.log.Warn("could not release lease; the retry waits for it to expire", "request_id", ev.ID(), "err", err)
		}
		return *retry
	}
	return h.finish(ctx, lease, result)
}

// finish records the result under the lease while its publish is on its way, and says to ack
// once the result is stored.
func (h *Handler) finish(ctx context.Context, lease *idempotency.Lease, result *event.Event) action {
	return h.publish(ctx, result, func() {
		if recorded, err := cenats.MarshalStructured(result); err != nil {
			h.log.Error("could not encode result for the record", "result_id", result.ID(), "err", err)
		} else if err := lease.Complete(ctx, recorded); err != nil {
			// The result is still published; only a later re-send could call the API again.
			h.log.Warn("could not record result", "result_id", result.ID(), "err", err)
		}
	})
}

// decode reads a cancel request, or says why the message is not one.
func (h *Handler) decode(ctx context.Context, header nats.Header, data []byte) (ev *event.Event, notRequest string) {
	if size := len(data) + headerSize(header); size > h.cfg.MaxRequestBytes {
		return nil, fmt.Sprintf("message of %d bytes exceeds CPCANCEL_MAX_REQUEST_BYTES (%d)", size, h.cfg.MaxRequestBytes)
	}
	ev, err := cenats.Decode(ctx, header, data)
	if err != nil {
		return nil, err.Error()
	}
	if ev.Type() != cancelevent.RequestType {
		return nil, fmt.Sprintf("CloudEvent type %q is not %s", ev.Type(), cancelevent.RequestType)
	}
	return ev, ""
}

// answer works out the result of a request: validation, then the API call. It returns a nil
// result and the action to take when the request is to be retried later.
func (h *Handler) answer(ctx context.Context, ev *event.Event, attempt int) (*event.Event, *action) {
	req, err := cancelevent.ParseRequest(ev)
	var invalid *cancelevent.InvalidError
	if errors.As(err, &invalid) {
		return h.result(req, cancelevent.Failed, cancelevent.ResultData{
			Attempts: attempt,
			Error:    &cancelevent.ErrorData{Code: cancelevent.CodeInvalidRequest, Message: invalid.Reason},
		})
	}

	accepted, err := h.api.Cancel(ctx, cloudpartner.CancelRequest{
		PublisherID: req.PublisherID, OfferID: req.OfferID, NotificationEmails: req.Emails,
	})
	if err == nil {
		outcome := cancelevent.Cancelled
		if accepted.StatusCode == http.StatusAccepted {
			outcome = cancelevent.Cancelling
		}
		return h.result(req, outcome, cancelevent.ResultData{
			StatusCode: accepted.StatusCode, Location: accepted.Location, OperationID: accepted.OperationID,
			CorrelationID: accepted.CorrelationID, Attempts: attempt,
		})
	}
	if ctx.Err() != nil {
		return nil, &action{kind: nak, delay: time.Second, reason: "shutting down"}
	}
	apiErr := &cloudpartner.Error{Code: "internal_error", Message: err.Error(), Transient: true, Err: err}
	errors.As(err, &apiErr)
	if apiErr.Transient && attempt < h.cfg.MaxAttempts {
		h.rec.Retried()
		delay := h.retryDelay(attempt, apiErr.RetryAfter)
		h.log.Info("transient API failure, retrying", "request_id", req.ID, "request_source", req.Source,
			"status", apiErr.StatusCode, "code", apiErr.Code, "attempt", attempt, "delay", delay)
		return nil, &action{kind: nak, delay: delay, reason: apiErr.Code}
	}
	return h.result(req, cancelevent.Failed, cancelevent.ResultData{
		StatusCode: apiErr.StatusCode, CorrelationID: apiErr.CorrelationID, Attempts: attempt,
		Error: &cancelevent.ErrorData{Code: apiErr.Code, Message: apiErr.Message},
	})
}

// result builds a result event and logs the outcome; a failure to build one is retried like
// any transient failure.
func (h *Handler) result(req cancelevent.Request, o cancelevent.Outcome, d cancelevent.ResultData) (*event.Event, *action) {
	ev, err := cancelevent.NewResult(h.cfg.Source, req, o, d, time.Now())
	if err != nil {
		h.log.Error("could not build result", "request_id", req.ID, "err", err)
		return nil, &action{kind: nak, delay: h.cfg.RetryBase, reason: "result not built"}
	}
	if h.log.Enabled(context.Background(), slog.LevelInfo) {
		args := []any{"request_id", req.ID, "request_source", req.Source, "publisher", req.PublisherID,
			"offer", req.OfferID, "outcome", o, "status", d.StatusCode, "attempts", d.Attempts, "result_id", ev.ID()}
		if d.CorrelationID != "" {
			args = append(args, "correlation_id", d.CorrelationID)
		}
		if d.Error != nil {
			args = append(args, "error_code", d.Error.Code, "error", d.Error.Message)
		}
		h.log.Info("request answered", args...)
	}
	return ev, nil
}

// republish answers a request seen before with its recorded result, same id, no API call.
func (h *Handler) republish(ctx context.Context, req *event.Event, recorded []byte) action {
	var result event.Event
	if err := json.Unmarshal(recorded, &result); err != nil {
		h.log.Error("recorded result unreadable, retrying", "request_id", req.ID(), "err", err)
		return action{kind: nak, delay: h.cfg.RetryMax, reason: "recorded result unreadable"}
	}
	h.rec.Duplicate()
	h.log.Info("duplicate request answered from its record", "request_id", req.ID(), "request_source", req.Source(), "result_id", result.ID())
	return h.publish(ctx, &result, nil)
}

// publish stores the result event and says to ack only once JetStream has it. meanwhile, when
// set, runs while the acknowledgement of the publish is on its way.
func (h *Handler) publish(ctx context.Context, result *event.Event, meanwhile func()) action {
	outcome := string(cancelevent.OutcomeOf(result.Type()))
	out, err := cenats.NewMsg(ctx, h.cfg.ResultSubjectPrefix+"."+outcome, result, h.cfg.Mode)
	var stored jetstream.PubAckFuture
	if err == nil {
		stored, err = h.pub.PublishMsgAsync(out, jetstream.WithMsgID(result.ID()))
	}
	if meanwhile != nil {
		meanwhile()
	}
	duplicate := false
	if err == nil {
		timeout := time.NewTimer(h.cfg.PublishTimeout)
		select {
		case ack := <-stored.Ok():
			duplicate = ack.Duplicate
		case err = <-stored.Err():
		case <-timeout.C:
			err = errors.New("no acknowledgement within the publish timeout")
		}
		timeout.Stop()
	}
	if err != nil {
		h.log.Warn("could not store result, retrying", "result_id", result.ID(), "outcome", outcome, "err", err)
		return action{kind: nak, delay: h.cfg.RetryBase, reason: "result not stored"}
	}
	if !duplicate { // already in the result stream: JetStream dropped this copy
		h.rec.ResultStored(outcome)
	}
	if h.cfg.Follow != nil && outcome == string(cancelevent.Cancelling) {
		if err := h.cfg.Follow(ctx, result); err != nil {
			h.log.Warn("could not schedule following the operation, retrying", "result_id", result.ID(), "err", err)
			return action{kind: nak, delay: h.cfg.RetryBase, reason: "follow not scheduled"}
		}
	}
	return action{kind: ack}
}

// keepAlive reports msg in progress every Heartbeat until the returned func is called. A timer,
// not a goroutine, waits between reports: most messages finish before the first one.
func (h *Handler) keepAlive(msg jetstream.Msg) (stop func()) {
	if h.cfg.Heartbeat <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // the callback must not see t before it is set
	defer mu.Unlock()
	t = time.AfterFunc(h.cfg.Heartbeat, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if err := msg.InProgress(); err != nil {
			h.log.Debug("in-progress report failed", "err", err)
		}
		t.Reset(h.cfg.Heartbeat)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// retryDelay is exponential in the attempt with equal jitter, capped at RetryMax, and never
// shorter than what the API asked for.
func (h *Handler) retryDelay(attempt int, retryAfter time.Duration) time.Duration {
	d := h.cfg.RetryMax
	if shift := attempt - 1; shift < 30 {
		d = min(h.cfg.RetryBase<<shift, h.cfg.RetryMax)
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, retryAfter)
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
