// Package follow tracks a cancellation the API accepted (202) until its operation ends, then
// publishes the request's final result. Each poll is a JetStream message handed back with a
// delay, so following survives restarts and spreads across replicas.
package follow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cenats"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
)

// Error codes of final failed results.
const (
	CodeOperationFailed = "operation_failed"
	CodeTimeout         = "follow_timeout"
)

// Poller reads an operation; *cloudpartner.Client satisfies it. Safe for concurrent use.
type Poller interface {
	Operation(ctx context.Context, location string) (cloudpartner.Operation, error)
}

// Publisher stores a message and waits for JetStream's acknowledgement; jetstream.JetStream
// satisfies it. Safe for concurrent use.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Recorder counts stored results; *metrics.Metrics satisfies it.
type Recorder interface {
	ResultStored(outcome string)
}

var _ Poller = (*cloudpartner.Client)(nil)

// Config configures a Follower.
type Config struct {
	// Subject carries the follow tasks (CPCANCEL_FOLLOW_SUBJECT).
	Subject string
	// Source, ResultSubjectPrefix and Mode are as for the first results.
	Source              string
	ResultSubjectPrefix string
	Mode                cenats.Mode
	// Interval between two polls of one operation (CPCANCEL_FOLLOW_INTERVAL).
	Interval time.Duration
	// Timeout after which a still-running operation is reported failed (CPCANCEL_FOLLOW_TIMEOUT).
	Timeout time.Duration
	// PublishTimeout bounds one publish.
	PublishTimeout time.Duration
	Logger         *slog.Logger
}

// Follower schedules and runs follow tasks. Its methods may be called concurrently.
type Follower struct {
	cfg Config
	api Poller
	pub Publisher
	rec Recorder
	log *slog.Logger
}

// New returns a Follower.
func New(cfg Config, api Poller, pub Publisher, rec Recorder) *Follower {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, api: api, pub: pub, rec: rec, log: log}
}

// task is the body of a follow message.
type task struct {
	RequestID     string    `json:"requestId"`
	RequestSource string    `json:"requestSource"`
	PublisherID   string    `json:"publisherId"`
	OfferID       string    `json:"offerId"`
	Location      string    `json:"location"`
	OperationID   string    `json:"operationId,omitempty"`
	TraceParent   string    `json:"traceparent,omitempty"`
	TraceState    string    `json:"tracestate,omitempty"`
	Deadline      time.Time `json:"deadline"`
}

// Start schedules following the operation of a cancelling result. Calling it again for the same
// result inside the follow stream's duplicate window schedules nothing more.
func (f *Follower) Start(ctx context.Context, result *event.Event) error {
	var d cancelevent.ResultData
	if err := json.Unmarshal(result.Data(), &d); err != nil {
		return fmt.Errorf("follow: read result: %w", err)
	}
	if d.Location == "" {
		return nil // nothing to follow: the API named no operation
	}
	t := task{RequestID: d.RequestID, RequestSource: d.RequestSource, PublisherID: d.PublisherID, OfferID: d.OfferID,
		Location: d.Location, OperationID: d.OperationID, Deadline: time.Now().Add(f.cfg.Timeout).UTC()}
	t.TraceParent, _ = result.Extensions()["traceparent"].(string)
	t.TraceState, _ = result.Extensions()["tracestate"].(string)
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, f.cfg.PublishTimeout)
	defer cancel()
	if _, err := f.pub.PublishMsg(pctx, &nats.Msg{Subject: f.cfg.Subject, Data: body}, jetstream.WithMsgID("follow:"+result.ID())); err != nil {
		return fmt.Errorf("follow: schedule: %w", err)
	}
	return nil
}

// Handle polls the operation of one follow task and settles the message: Ack once the final
// result is stored, NakWithDelay to poll again, TermWithReason for an unreadable task.
func (f *Follower) Handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		f.log.Error("follow task without JetStream metadata", "err", err)
		return
	}
	var t task
	if err := json.Unmarshal(msg.Data(), &t); err != nil || t.Location == "" || t.RequestID == "" {
		f.log.Error("unreadable follow task, dropped", "stream_seq", meta.Sequence.Stream, "err", err)
		settle(f.log, msg, msg.TermWithReason("unreadable follow task"))
		return
	}
	req := cancelevent.Request{ID: t.RequestID, Source: t.RequestSource, PublisherID: t.PublisherID, OfferID: t.OfferID,
		TraceParent: t.TraceParent, TraceState: t.TraceState}
	data := cancelevent.ResultData{Location: t.Location, OperationID: t.OperationID, Attempts: int(meta.NumDelivered)}

	op, err := f.api.Operation(ctx, t.Location)
	var apiErr *cloudpartner.Error
	switch {
	case err == nil && op.Terminal():
		data.StatusCode, data.CorrelationID, data.OperationStatus, data.Messages = 200, op.CorrelationID, op.Status, op.Messages
		outcome := cancelevent.Cancelled
		if !op.Cancelled() {
			outcome = cancelevent.Failed
			data.Error = &cancelevent.ErrorData{Code: CodeOperationFailed,
				Message: "the operation ended " + op.Status + messagesText(op.Messages)}
		}
		f.finish(ctx, msg, req, outcome, data)
		return
	case ctx.Err() != nil:
		settle(f.log, msg, msg.NakWithDelay(time.Second)) // shutting down
		return
	case errors.As(err, &apiErr) && !apiErr.Transient:
		data.StatusCode, data.CorrelationID = apiErr.StatusCode, apiErr.CorrelationID
		data.Error = &cancelevent.ErrorData{Code: apiErr.Code, Message: apiErr.Message}
		f.finish(ctx, msg, req, cancelevent.Failed, data)
		return
	}
	status := op.Status
	if err != nil {
		status = "unknown (" + err.Error() + ")"
	}
	if time.Now().After(t.Deadline) {
		data.StatusCode, data.OperationStatus = 0, op.Status
		data.Error = &cancelevent.ErrorData{Code: CodeTimeout,
			Message: fmt.Sprintf("the operation was still %s at the follow deadline (CPCANCEL_FOLLOW_TIMEOUT %s)", status, f.cfg.Timeout)}
		f.finish(ctx, msg, req, cancelevent.Failed, data)
		return
	}
	f.log.Debug("operation not finished, polling again", "request_id", t.RequestID, "status", status, "in", f.cfg.Interval)
	settle(f.log, msg, msg.NakWithDelay(min(f.cfg.Interval, max(time.Until(t.Deadline), 0)+time.Millisecond)))
}

// finish stores the final result and acks the task, or hands it back if the result is not stored.
func (f *Follower) finish(ctx context.Context, msg jetstream.Msg, req cancelevent.Request, o cancelevent.Outcome, d cancelevent.ResultData) {
	ev, err := cancelevent.NewFinalResult(f.cfg.Source, req, o, d, time.Now())
	var out *nats.Msg
	if err == nil {
		out, err = cenats.NewMsg(ctx, f.cfg.ResultSubjectPrefix+"."+string(o), ev, f.cfg.Mode)
	}
	var ack *jetstream.PubAck
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, f.cfg.PublishTimeout)
		ack, err = f.pub.PublishMsg(pctx, out, jetstream.WithMsgID(ev.ID()))
		cancel()
	}
	if err != nil {
		f.log.Warn("could not store final result, retrying", "request_id", req.ID, "err", err)
		settle(f.log, msg, msg.NakWithDelay(time.Second))
		return
	}
	if !ack.Duplicate { // already in the result stream: JetStream dropped this copy
		f.rec.ResultStored(string(o))
	}
	f.log.Info("final result stored", "request_id", req.ID, "request_source", req.Source, "outcome", o,
		"operation_status", d.OperationStatus, "result_id", ev.ID())
	settle(f.log, msg, msg.Ack())
}

func messagesText(m []string) string {
	if len(m) == 0 {
		return ""
	}
	return ": " + strings.Join(m, "; ")
}

func settle(log *slog.Logger, msg jetstream.Msg, err error) {
	if err != nil {
		log.Warn("could not settle follow task; JetStream redelivers it after AckWait", "err", err)
	}
}
