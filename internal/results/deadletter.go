package handler

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers added to a dead letter.
const (
	HeaderReason         = "Cpcancel-Reason"
	HeaderStream         = "Cpcancel-Stream"
	HeaderStreamSequence = "Cpcancel-Stream-Sequence"
	// originalPrefix renames the original's Nats-* headers, which would otherwise steer the
	// dead-letter publish (Nats-Msg-Id, Nats-Expected-Stream, ...).
	originalPrefix = "Cpcancel-Original-"
	maxReason      = 256
)

// deadLetter stores the original message with the reason on the dead-letter subject, then says to
// terminate it; if the dead letter cannot be stored, the message is retried instead.
func (h *Handler) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, reason string) action {
	reason = boundReason(reason)
	if err := h.storeDeadLetter(ctx, msg.Headers(), msg.Data(), meta.Stream, meta.Sequence.Stream, reason); err != nil {
		h.log.Warn("could not store dead letter, retrying", "stream_seq", meta.Sequence.Stream, "err", err)
		return action{kind: nak, delay: h.cfg.RetryBase, reason: "dead letter not stored"}
	}
	return action{kind: term, reason: reason}
}

// storeDeadLetter publishes a copy of a request message with the reason and where it came from.
func (h *Handler) storeDeadLetter(ctx context.Context, header nats.Header, data []byte, stream string, seq uint64, reason string) error {
	hdr := make(nats.Header, len(header)+3)
	for k, vs := range header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			k = originalPrefix + k
		}
		hdr[k] = append([]string(nil), vs...)
	}
	hdr.Set(HeaderReason, reason)
	hdr.Set(HeaderStream, stream)
	hdr.Set(HeaderStreamSequence, strconv.FormatUint(seq, 10))
	out := &nats.Msg{Subject: h.cfg.DeadLetterSubject, Header: hdr, Data: data}
	pctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	id := fmt.Sprintf("deadletter:%s:%d", stream, seq)
	if _, err := h.pub.PublishMsg(pctx, out, jetstream.WithMsgID(id)); err != nil {
		return err
	}
	h.rec.DeadLettered()
	h.log.Warn("dead-lettered message", "stream_seq", seq, "reason", reason)
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
	if len(s) > maxReason {
		n := maxReason
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}
