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
	if c, ok := p.js.(interface{ Conn() *nats.Conn }); ok { // jetstream.JetStream: the server's limit
		hdr, data = fit(hdr, data, int(c.Conn().MaxPayload()))
	}
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

const (
	// deadLetterRoom is kept free in a dead letter for what the publish adds (Nats-Msg-Id) and
	// the header block's framing.
	deadLetterRoom = 256
	// maxHeaderBytes is the most header bytes JetStream stores with a message.
	maxHeaderBytes = 64 << 10
)

// fit makes a dead letter of hdr and data fit in maxPayload bytes, and its headers in what
// JetStream takes. A copy that does not would be refused on every try, and the message lost when
// its stream drops it: the body is cut, and when the original's headers are too many (renaming
// its Nats-* ones makes them longer), they are left out too; HeaderTruncated says what was.
func fit(hdr nats.Header, data []byte, maxPayload int) (nats.Header, []byte) {
	size := headerBytes(hdr)
	if maxPayload <= 0 || size+len(data)+deadLetterRoom <= maxPayload && size+deadLetterRoom <= maxHeaderBytes {
		return hdr, data
	}
	var cut []string
	if size+deadLetterRoom > min(maxPayload, maxHeaderBytes) {
		own := nats.Header{}
		for _, k := range []string{cancelevent.HeaderReason, cancelevent.HeaderStream, cancelevent.HeaderStreamSequence} {
			own.Set(k, hdr.Get(k))
		}
		cut = append(cut, fmt.Sprintf("%d headers", len(hdr)-len(own)))
		hdr = own
	}
	// deadLetterRoom also holds HeaderTruncated.
	if keep := max(0, min(len(data), maxPayload-headerBytes(hdr)-deadLetterRoom)); keep < len(data) {
		cut = append(cut, fmt.Sprintf("%d of the body's %d bytes", len(data)-keep, len(data)))
		data = data[:keep]
	}
	hdr.Set(cancelevent.HeaderTruncated, strings.Join(cut, ", "))
	return hdr, data
}

// headerBytes is what hdr takes in a NATS message, as nats.go encodes it.
func headerBytes(hdr nats.Header) int { return (&nats.Msg{Header: hdr}).Size() }

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
