// Package results stores what cpcancel publishes: result events on the result subjects and
// messages that are not cancel requests on the dead-letter subject. Every publish waits for
// JetStream's acknowledgement, so "stored" means stored.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

// JetStream stores messages: PublishMsg returns once the server acknowledged the message,
// PublishMsgAsync at once with a future of the acknowledgement. It must be safe for concurrent
// use; jetstream.JetStream satisfies it.
type JetStream interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// Recorder counts what is stored; *metrics.Metrics satisfies it.
type Recorder interface {
	ResultStored(outcome string)
	DeadLettered()
}

var _ JetStream = jetstream.JetStream(nil)

// Config configures a Publisher.
type Config struct {
	// SubjectPrefix gets ".<outcome>" appended to make a result's subject.
	SubjectPrefix string
	// DeadLetterSubject receives messages that are not cancel requests.
	DeadLetterSubject string
	// Mode is the content mode of results.
	Mode natsce.Mode
	// Timeout bounds one publish.
	Timeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Tracer, when set, makes a PRODUCER span of every result published; nil is tracing off.
	Tracer trace.Tracer
}

// Publisher stores results and dead letters. It is safe for concurrent use.
type Publisher struct {
	cfg Config
	js  JetStream
	rec Recorder
	log *slog.Logger
}

// New returns a Publisher.
func New(cfg Config, js JetStream, rec Recorder) *Publisher {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{cfg: cfg, js: js, rec: rec, log: log}
}

// Publish stores the result event ev on its outcome's subject, with its id as Nats-Msg-Id, and
// returns its sequence in the result stream. A copy JetStream drops as a duplicate (stored before,
// inside the stream's duplicate window) returns the first copy's sequence and is not counted again.
// recorded, when not nil, is ev as natsce.MarshalStructured wrote it for the request's record: in
// structured mode it is the body as it is, so that the event is not encoded twice.
func (p *Publisher) Publish(ctx context.Context, ev *event.Event, recorded []byte) (seq uint64, err error) {
	outcome := string(cancelevent.OutcomeOf(ev.Type()))
	subject := p.cfg.SubjectPrefix + "." + outcome
	if p.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = tracing.StartPublish(ctx, p.cfg.Tracer, subject, ev.ID(), ev.Type())
		defer func() { tracing.EndPublish(span, seq, err) }()
	}
	out, err := p.encode(ctx, subject, ev, recorded)
	if err != nil {
		return 0, fmt.Errorf("encode result: %w", err)
	}
	stored, err := p.js.PublishMsgAsync(out, jetstream.WithMsgID(ev.ID()))
	if err != nil {
		return 0, fmt.Errorf("store result: %w", err)
	}
	timeout := time.NewTimer(p.cfg.Timeout)
	defer timeout.Stop()
	select {
	case ack := <-stored.Ok():
		if !ack.Duplicate {
			p.rec.ResultStored(outcome)
		}
		return ack.Sequence, nil
	case err = <-stored.Err():
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout.C:
		err = errors.New("no acknowledgement within the publish timeout")
	}
	return 0, fmt.Errorf("store result: %w", err)
}

// encode makes the message of result ev for subject in the configured mode.
func (p *Publisher) encode(ctx context.Context, subject string, ev *event.Event, recorded []byte) (*nats.Msg, error) {
	if p.cfg.Mode != natsce.Structured {
		return natsce.NewMsg(ctx, subject, ev, p.cfg.Mode)
	}
	if recorded == nil {
		var err error
		if recorded, err = natsce.MarshalStructured(ev); err != nil {
			return nil, err
		}
	}
	return natsce.StructuredMsg(subject, recorded), nil
}

// ErrUnreadable is PublishRecorded's error for bytes that are not a result event: what was recorded
// was damaged, or written by something else, and publishing it again cannot help.
var ErrUnreadable = errors.New("recorded result unreadable")

// PublishRecorded stores a result event recorded as structured JSON, as Publish does.
func (p *Publisher) PublishRecorded(ctx context.Context, recorded []byte) (seq uint64, err error) {
	var ev event.Event
	if err := json.Unmarshal(recorded, &ev); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	return p.Publish(ctx, &ev, recorded)
}
