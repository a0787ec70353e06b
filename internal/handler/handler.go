// Package handler turns one cancel-request message into one result event and settles the message
// exactly once: Ack after the result is stored, NakWithDelay to retry, TermWithReason after
// dead-lettering what is not a cancel request.
package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cenats"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
)

// Canceller calls the Cancel operation API. It must be safe for concurrent use. Any error it
// returns other than *cloudpartner.Error is treated as transient.
type Canceller interface {
	Cancel(ctx context.Context, req cloudpartner.CancelRequest) (cloudpartner.Accepted, error)
}

// Publisher stores a message in JetStream and returns once the server acknowledged it. It must
// be safe for concurrent use; jetstream.JetStream satisfies it.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Recorder counts what the handler does; *metrics.Metrics satisfies it.
type Recorder interface {
	Received(numDelivered uint64) (done func())
	ResultStored(outcome string)
	DeadLettered()
	Retried()
}

var (
	_ Canceller = (*cloudpartner.Client)(nil)
	_ Publisher = jetstream.JetStream(nil)
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
	// Logger receives one line per settled request; nil discards.
	Logger *slog.Logger
}

// Handler processes request messages. Handle may be called concurrently.
type Handler struct {
	cfg Config
	api Canceller
	pub Publisher
	rec Recorder
	log *slog.Logger
}

// New returns a Handler. cfg's zero durations get their defaults.
func New(cfg Config, api Canceller, pub Publisher, rec Recorder) *Handler {
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
	return &Handler{cfg: cfg, api: api, pub: pub, rec: rec, log: log}
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
	a := h.process(ctx, msg, meta)
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
	if size := len(msg.Data()) + headerSize(msg.Headers()); size > h.cfg.MaxRequestBytes {
		return h.deadLetter(ctx, msg, meta, fmt.Sprintf("message of %d bytes exceeds CPCANCEL_MAX_REQUEST_BYTES (%d)", size, h.cfg.MaxRequestBytes))
	}
	ev, err := cenats.Decode(ctx, msg.Headers(), msg.Data())
	if err != nil {
		return h.deadLetter(ctx, msg, meta, err.Error())
	}
	if ev.Type() != cancelevent.RequestType {
		return h.deadLetter(ctx, msg, meta, fmt.Sprintf("CloudEvent type %q is not %s", ev.Type(), cancelevent.RequestType))
	}
	req, err := cancelevent.ParseRequest(ev)
	var invalid *cancelevent.InvalidError
	if errors.As(err, &invalid) {
		return h.publishResult(ctx, req, cancelevent.Failed, cancelevent.ResultData{
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
		return h.publishResult(ctx, req, outcome, cancelevent.ResultData{
			StatusCode: accepted.StatusCode, Location: accepted.Location, OperationID: accepted.OperationID,
			CorrelationID: accepted.CorrelationID, Attempts: attempt,
		})
	}
	if ctx.Err() != nil {
		return action{kind: nak, delay: time.Second, reason: "shutting down"}
	}
	apiErr := &cloudpartner.Error{Code: "internal_error", Message: err.Error(), Transient: true, Err: err}
	errors.As(err, &apiErr)
	if apiErr.Transient && attempt < h.cfg.MaxAttempts {
		h.rec.Retried()
		delay := h.retryDelay(attempt, apiErr.RetryAfter)
		h.log.Info("transient API failure, retrying", "request_id", req.ID, "request_source", req.Source,
			"status", apiErr.StatusCode, "code", apiErr.Code, "attempt", attempt, "delay", delay)
		return action{kind: nak, delay: delay, reason: apiErr.Code}
	}
	return h.publishResult(ctx, req, cancelevent.Failed, cancelevent.ResultData{
		StatusCode: apiErr.StatusCode, CorrelationID: apiErr.CorrelationID, Attempts: attempt,
		Error: &cancelevent.ErrorData{Code: apiErr.Code, Message: apiErr.Message},
	})
}

// publishResult stores the result event and says to ack only once JetStream has it.
func (h *Handler) publishResult(ctx context.Context, req cancelevent.Request, o cancelevent.Outcome, d cancelevent.ResultData) action {
	ev, err := cancelevent.NewResult(h.cfg.Source, req, o, d, time.Now())
	if err == nil {
		var hdr nats.Header
		var body []byte
		if hdr, body, err = cenats.Encode(ctx, ev, h.cfg.Mode); err == nil {
			out := &nats.Msg{Subject: h.cfg.ResultSubjectPrefix + "." + string(o), Header: hdr, Data: body}
			pctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
			_, err = h.pub.PublishMsg(pctx, out, jetstream.WithMsgID(ev.ID()))
			cancel()
		}
	}
	if err != nil {
		h.log.Warn("could not store result, retrying", "request_id", req.ID, "outcome", o, "err", err)
		return action{kind: nak, delay: h.cfg.RetryBase, reason: "result not stored"}
	}
	h.rec.ResultStored(string(o))
	args := []any{"request_id", req.ID, "request_source", req.Source, "publisher", req.PublisherID,
		"offer", req.OfferID, "outcome", o, "status", d.StatusCode, "attempts", d.Attempts, "result_id", ev.ID()}
	if d.CorrelationID != "" {
		args = append(args, "correlation_id", d.CorrelationID)
	}
	if d.Error != nil {
		args = append(args, "error_code", d.Error.Code, "error", d.Error.Message)
	}
	h.log.Info("result stored", args...)
	return action{kind: ack}
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
