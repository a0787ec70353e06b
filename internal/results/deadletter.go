package results

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

// maxReason bounds a dead letter's reason header.
const maxReason = 256

// DeadLetter stores a copy of a message that cannot be handled, with the reason (bounded, on one
// line) and where it came from, stream and sequence, in the headers cancelevent names. Nats-*
// headers of the original are kept renamed. Its id is derived from stream and sequence, so storing
// it again inside the dead-letter stream's duplicate window keeps one copy.
func (p *Publisher) DeadLetter(ctx context.Context, header nats.Header, data []byte, stream string, seq uint64, reason string) (err error) {
	if from := header.Get(cancelevent.HeaderReplayedFrom); from != "" {
		reason = "replay of dead letter " + from + " dead-lettered again: " + reason
	}
	reason = boundReason(reason)
	hdr := make(nats.Header, len(header)+3)
	for k, vs := range header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			k = cancelevent.HeaderOriginalPrefix + k
		}
		hdr[k] = append([]string(nil), vs...)
	}
	hdr.Set(cancelevent.HeaderReason, reason)
	hdr.Set(cancelevent.HeaderStream, stream)
	hdr.Set(cancelevent.HeaderStreamSequence, strconv.FormatUint(seq, 10))
	out := &nats.Msg{Subject: p.cfg.DeadLetterSubject, Header: hdr, Data: data}
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	id := fmt.Sprintf("deadletter:%s:%d", stream, seq)
	if p.cfg.Tracer != nil {
		_, span := tracing.StartPublish(ctx, p.cfg.Tracer, out.Subject, id, "")
		defer func() { tracing.EndPublish(span, 0, err) }()
	}
	if _, err := p.js.PublishMsg(pctx, out, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("store dead letter: %w", err)
	}
	p.rec.DeadLettered()
	p.log.WarnContext(ctx, "dead-lettered message", "stream", stream, "stream_seq", seq, "reason", reason)
	return nil
}

// boundReason keeps a reason short, on one line and valid UTF-8, fit for a header.
func boundReason(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return cancelevent.Truncate(s, maxReason)
}
