package handler

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/idempotency"
)

// CodeMaxDeliveries is the error code of a request JetStream stopped delivering.
const CodeMaxDeliveries = "max_deliveries"

// Stream reads and removes request messages by sequence; jetstream.Stream satisfies it.
type Stream interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
	DeleteMsg(ctx context.Context, seq uint64) error
}

var _ Stream = jetstream.Stream(nil)

// Exhausted answers the request at seq after JetStream gave up delivering it (MaxDeliver reached,
// announced by an advisory) without it being settled: it gets a failed result unless one is
// recorded, or is dead-lettered if it is not a request, and is then removed from the stream.
// Several replicas may call it for one message; the idempotency record and the result id keep
// that to one result.
func (h *Handler) Exhausted(ctx context.Context, stream Stream, streamName string, seq, deliveries uint64) error {
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled or removed meanwhile
	}
	if err != nil {
		return fmt.Errorf("read exhausted request %d: %w", seq, err)
	}
	ev, reason := h.decode(ctx, raw.Header, raw.Data)
	if reason != "" {
		err = h.storeDeadLetter(ctx, raw.Header, raw.Data, streamName, seq, boundReason(reason))
	} else {
		err = h.exhaustedResult(ctx, ev, deliveries)
	}
	if err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove exhausted request %d: %w", seq, err)
	}
	return nil
}

func (h *Handler) exhaustedResult(ctx context.Context, ev *event.Event, deliveries uint64) error {
	lease, recorded, err := h.store.Claim(ctx, idempotency.Key(ev.Source(), ev.ID()))
	if err != nil {
		// Busy included: a worker still holds the request, so it is not given up on.
		return fmt.Errorf("exhausted request %s: %w", ev.ID(), err)
	}
	var a action
	if recorded != nil {
		a = h.republish(ctx, ev, recorded)
	} else {
		req, _ := cancelevent.ParseRequest(ev) // identity is all a failed result needs
		result, retry := h.result(req, cancelevent.Failed, cancelevent.ResultData{
			Attempts: int(deliveries),
			Error: &cancelevent.ErrorData{Code: CodeMaxDeliveries,
				Message: fmt.Sprintf("JetStream stopped delivering the request after %d deliveries (MaxDeliver)", deliveries)},
		})
		if retry != nil {
			_ = lease.Release(ctx)
			return errors.New(retry.reason)
		}
		a = h.finish(ctx, lease, result)
	}
	if a.kind != ack {
		return fmt.Errorf("exhausted request %s: %s", ev.ID(), a.reason)
	}
	return nil
}
