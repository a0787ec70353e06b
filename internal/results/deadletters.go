package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
)

// ErrNoDeadLetter: the dead-letter stream holds no message at that sequence (never stored,
// replayed and deleted, or dropped as the stream's oldest).
var ErrNoDeadLetter = errors.New("no dead letter at that sequence")

// DeadLetter is one message of the dead-letter stream as stored: the original's headers and body
// with the Cpcancel-* headers DeadLetter adds.
type DeadLetter struct {
	Seq    uint64
	Time   time.Time
	Header nats.Header
	Data   []byte
}

// Reason is why the message was dead-lettered.
func (d DeadLetter) Reason() string { return d.Header.Get(cancelevent.HeaderReason) }

// Size is the stored size of the message: its body and its headers.
func (d DeadLetter) Size() int {
	n := len(d.Data)
	for k, vs := range d.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	return n
}

// Request returns the CloudEvents source and id the original message claimed, from its ce-
// headers (binary mode) or its body (structured mode); empty when it claimed none. The message
// was dead-lettered, so nothing else about it is assumed to be valid.
func (d DeadLetter) Request() (source, id string) {
	for k, vs := range d.Header {
		if len(vs) == 0 {
			continue
		}
		switch strings.ToLower(k) {
		case "ce-source":
			source = unescape(vs[0])
		case "ce-id":
			id = unescape(vs[0])
		}
	}
	if source != "" || id != "" {
		return source, id
	}
	var structured struct {
		Source string `json:"source"`
		ID     string `json:"id"`
	}
	if json.Unmarshal(d.Data, &structured) == nil {
		return structured.Source, structured.ID
	}
	return "", ""
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// DeadLetters reads, replays and removes the messages of one dead-letter stream, for operators
// (consumer deadletter, consumer status). It is safe for concurrent use, but a replay and a
// removal of the same dead letter by two operators at once are not coordinated: a replay's
// message id (ReplayID) makes the second copy a duplicate the request stream drops.
type DeadLetters struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// OpenDeadLetters looks up the dead-letter stream named stream.
func OpenDeadLetters(ctx context.Context, js jetstream.JetStream, stream string) (*DeadLetters, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", stream, err)
	}
	return &DeadLetters{js: js, stream: s}, nil
}

// Name is the dead-letter stream's name.
func (d *DeadLetters) Name() string { return d.stream.CachedInfo().Config.Name }

// Range is the part of the stream a scan looked at.
type Range struct {
	// First and Last are the sequences looked at (both 0 when the stream is empty); Messages how
	// many messages the stream held in all, Scanned how many of them were read.
	First, Last       uint64
	Messages, Scanned uint64
}

// Scan calls fn with each dead letter among the stream's last limit messages (all when limit is 0)
// as they were when Scan started, oldest first, until fn returns false. Messages stored after
// Scan started are not read: a replay that is dead-lettered again during a scan is not seen.
func (d *DeadLetters) Scan(ctx context.Context, limit uint64, fn func(DeadLetter) bool) (Range, error) {
	info, err := d.stream.Info(ctx)
	if err != nil {
		return Range{}, fmt.Errorf("read dead-letter stream: %w", err)
	}
	st := info.State
	r := Range{Messages: st.Msgs}
	if st.Msgs == 0 {
		return r, nil
	}
	r.First, r.Last = st.FirstSeq, st.LastSeq
	if limit > 0 && st.Msgs > limit {
		// Sequences may have gaps (deleted dead letters): start at the first of the last limit.
		r.First, err = d.nthFromEnd(ctx, st, limit)
		if err != nil {
			return Range{}, err
		}
	}
	cons, err := d.js.OrderedConsumer(ctx, info.Config.Name, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: r.First,
	})
	if err != nil {
		return Range{}, fmt.Errorf("read dead-letter stream: %w", err)
	}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return r, fmt.Errorf("read dead-letter stream: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return r, fmt.Errorf("read dead-letter stream: %w", err)
			}
			seq := meta.Sequence.Stream
			if seq > r.Last {
				return r, nil
			}
			r.Scanned++
			if !fn(DeadLetter{Seq: seq, Time: meta.Timestamp, Header: m.Headers(), Data: m.Data()}) {
				return r, nil
			}
			if seq == r.Last {
				return r, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return r, fmt.Errorf("read dead-letter stream: %w", err)
		}
		if n == 0 {
			return r, nil // the last ones were removed meanwhile
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
	}
}

// nthFromEnd finds the sequence of the limit-th message from the end. Without gaps that is
// LastSeq-limit+1; with gaps, the stream's deleted sequences say how far back to go.
func (d *DeadLetters) nthFromEnd(ctx context.Context, st jetstream.StreamState, limit uint64) (uint64, error) {
	if st.NumDeleted == 0 {
		return st.LastSeq - limit + 1, nil
	}
	info, err := d.stream.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return 0, fmt.Errorf("read dead-letter stream: %w", err)
	}
	deleted := make(map[uint64]bool, len(info.State.Deleted))
	for _, s := range info.State.Deleted {
		deleted[s] = true
	}
	seq, n := info.State.LastSeq, uint64(0)
	for ; seq > info.State.FirstSeq; seq-- {
		if !deleted[seq] {
			if n++; n == limit {
				break
			}
		}
	}
	return seq, nil
}

// Get reads the dead letter at seq; ErrNoDeadLetter when there is none.
func (d *DeadLetters) Get(ctx context.Context, seq uint64) (DeadLetter, error) {
	m, err := d.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w %d", ErrNoDeadLetter, seq)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	return DeadLetter{Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data}, nil
}

// ReplayID is the message id (Nats-Msg-Id) of the replay of the dead letter at seq of stream: the
// same for every replay of it, so that a replay repeated inside the request stream's duplicate
// window (after one that was stored but whose dead letter was not removed) is dropped.
func ReplayID(stream string, seq uint64) string {
	return "replay-" + stream + "-" + strconv.FormatUint(seq, 10)
}

// ReplayMsg is the message a replay of dl publishes on subject: the original's body and headers,
// without cpcancel's own headers (Cpcancel-*) and NATS's reserved ones (Nats-*), and with
// HeaderReplayedFrom naming the dead letter. Trace headers (traceparent, tracestate) are kept.
func ReplayMsg(dl DeadLetter, subject string) *nats.Msg {
	hdr := make(nats.Header, len(dl.Header)+1)
	for k, vs := range dl.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "cpcancel-") || strings.HasPrefix(lk, "nats-") {
			continue
		}
		hdr[k] = append([]string(nil), vs...)
	}
	hdr.Set(cancelevent.HeaderReplayedFrom, strconv.FormatUint(dl.Seq, 10))
	return &nats.Msg{Subject: subject, Header: hdr, Data: dl.Data}
}

// Republish publishes the replay of dl on subject (ReplayMsg, with ReplayID) and waits for the
// acknowledgement. It leaves the dead letter in place: Remove it once Republish succeeded. A
// duplicate acknowledgement means an earlier replay of dl was stored.
func (d *DeadLetters) Republish(ctx context.Context, dl DeadLetter, subject string) (*jetstream.PubAck, error) {
	if cut := dl.Header.Get(cancelevent.HeaderTruncated); cut != "" {
		return nil, fmt.Errorf("replay dead letter %d: it holds only part of the original (left out: %s)", dl.Seq, cut)
	}
	ack, err := d.js.PublishMsg(ctx, ReplayMsg(dl, subject), jetstream.WithMsgID(ReplayID(d.Name(), dl.Seq)))
	if err != nil {
		return nil, fmt.Errorf("replay dead letter %d: %w", dl.Seq, err)
	}
	return ack, nil
}

// Remove deletes the dead letter at seq; one already gone is not an error.
func (d *DeadLetters) Remove(ctx context.Context, seq uint64) error {
	err := d.stream.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	// The server answers a delete of a missing message with a generic failure: look.
	if _, gerr := d.stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("remove dead letter %d: %w", seq, err)
}
