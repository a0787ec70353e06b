// Package state keeps one durable record per request in a JetStream KeyValue bucket, changed only
// by compare-and-set on its revision, so that every decision about a request (call the API, wait,
// answer from the record, follow the operation, publish the final result) reads the same truth on
// every worker and replica, across restarts.
//
// A request's record goes through these phases:
//
//	claimed   a worker holds the lease: it alone may call the API, until LeaseUntil
//	waiting   nobody holds it; the API was tried Attempts times, the next try is due at RetryAt
//	answered  the API answered; Result is the result event, ResultSeq its place once stored
//	following the answer was a 202 that is followed until the operation ends (Follow)
//	final     the followed operation ended; Final is the final result event
//
// claimed and waiting may alternate; answered, following and final are never left for an earlier
// phase, so a request is answered and followed at most once.
package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Phase is where a request stands.
type Phase string

// The phases of a request, in order.
const (
	Claimed   Phase = "claimed"
	Waiting   Phase = "waiting"
	Answered  Phase = "answered"
	Following Phase = "following"
	Final     Phase = "final"
)

// known reports whether p is one of the phases above.
func (p Phase) known() bool {
	switch p {
	case Claimed, Waiting, Answered, Following, Final:
		return true
	}
	return false
}

// State is the record of one request.
type State struct {
	Phase Phase `json:"phase"`
	// Holder and LeaseUntil name the worker holding a claimed request and when its lease ends.
	Holder     string    `json:"holder,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// Attempts counts the API's answers (and calls that got none) so far; only those use up
	// CPCANCEL_MAX_ATTEMPTS, never a failure of NATS or of cpcancel itself.
	Attempts int `json:"attempts,omitempty"`
	// RetryAt is when a waiting request may be tried again.
	RetryAt time.Time `json:"retryAt,omitzero"`
	// Result is the request's result event (structured CloudEvent JSON), from answered on.
	Result json.RawMessage `json:"-"`
	// RequestSeq is the request-stream sequence of the message that got the answer, and
	// ResultSeq Result's sequence in the result stream once it is known to be stored: a
	// redelivery of that message then stores nothing again, however late it comes.
	ResultSeq  uint64 `json:"resultSeq,omitempty"`
	RequestSeq uint64 `json:"requestSeq,omitempty"`
	// Follow is set while and after the operation of a 202 is followed.
	Follow *Follow `json:"follow,omitempty"`
	// Final is the final result event of a followed request, FinalSeq its place once stored.
	Final    json.RawMessage `json:"-"`
	FinalSeq uint64          `json:"finalSeq,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the span that answered the request
	// (set only with tracing on): following continues that trace, also after a restart. Records
	// written without them read as untraced.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// Follow is what following a request's operation needs.
type Follow struct {
	// Location is the operation's absolute URL.
	Location string `json:"location"`
	// FirstPoll is when it is polled first; Deadline when following gives up (follow_timeout).
	FirstPoll time.Time `json:"firstPoll"`
	Deadline  time.Time `json:"deadline"`
	// Scheduled says the follow task is stored.
	Scheduled bool `json:"scheduled,omitempty"`
}

// Settled reports whether the request has its answer: it is answered from the record from then on.
func (s *State) Settled() bool {
	return s.Phase == Answered || s.Phase == Following || s.Phase == Final
}

// Entry is a State as read from the bucket, with the revision that a change must expect.
type Entry struct {
	State
	Revision uint64
}

// Errors of the store. Any other error means the bucket could not be reached or did not answer:
// a failure of the infrastructure, to retry later.
var (
	// ErrNotFound: the key has no record.
	ErrNotFound = errors.New("state: no record")
	// ErrConflict: the record changed since the revision given (someone else wrote it).
	ErrConflict = errors.New("state: record changed meanwhile")
	// ErrUnreadable: the key holds something that is not a record this version can read (damaged,
	// or written by something else). Reading it again cannot help; nothing may be decided on it.
	ErrUnreadable = errors.New("state: record unreadable")
)

// Store reads and writes records. It is safe for concurrent use.
type Store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	prefix  string // subject prefix of the bucket's keys
	timeout time.Duration
}

// New returns a Store on the bucket kv. timeout bounds the wait for one write's acknowledgement.
func New(js jetstream.JetStream, kv jetstream.KeyValue, timeout time.Duration) *Store {
	return &Store{js: js, kv: kv, prefix: "$KV." + kv.Bucket() + ".", timeout: timeout}
}

// Key is the bucket key of the request (source, id): a hash, since ids may hold any character.
func Key(source, id string) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Get reads key's record.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	kve, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read state: %w", err)
	}
	e := Entry{Revision: kve.Revision()}
	if e.State, err = decode(kve.Value()); err != nil {
		return Entry{}, fmt.Errorf("read state: record at revision %d: %w: %v", e.Revision, ErrUnreadable, err)
	}
	return e, nil
}

// record is how a State is stored: one line of JSON with everything but the result events,
// which follow it as they are (each on its own line), so that writing a record never re-encodes
// or re-validates them, and an operator reading the bucket sees plain JSON lines.
type record struct {
	State
	ResultBytes int `json:"resultBytes,omitempty"`
	FinalBytes  int `json:"finalBytes,omitempty"`
}

func encode(st *State) ([]byte, error) {
	// One buffer for the whole record: the line (~200 bytes) is encoded straight into it, and a
	// settled record is written twice per request, so a second copy would be most of the garbage.
	var buf bytes.Buffer
	buf.Grow(maxLine + len(st.Result) + 1 + len(st.Final))
	if err := json.NewEncoder(&buf).Encode(record{State: *st, ResultBytes: len(st.Result), FinalBytes: len(st.Final)}); err != nil {
		return nil, err // Encode ends the line with '\n'
	}
	buf.Write(st.Result)
	if len(st.Final) > 0 {
		buf.WriteByte('\n')
		buf.Write(st.Final)
	}
	return buf.Bytes(), nil
}

// maxLine is room for a record's line with a long location and holder; a longer one grows the
// buffer once.
const maxLine = 256

func decode(v []byte) (State, error) {
	line, rest, _ := bytes.Cut(v, []byte{'\n'})
	var r record
	if err := json.Unmarshal(line, &r); err != nil {
		return State{}, err
	}
	if !r.Phase.known() {
		// A phase of a later version, say, may not be taken for a lease to take over.
		return State{}, fmt.Errorf("unknown phase %q", r.Phase)
	}
	if r.ResultBytes < 0 || r.FinalBytes < 0 || r.ResultBytes > len(rest) {
		return State{}, errors.New("sizes that do not match")
	}
	st := r.State
	if r.ResultBytes > 0 {
		st.Result = rest[:r.ResultBytes]
	}
	if r.FinalBytes > 0 {
		rest = rest[r.ResultBytes:]
		if len(rest) != 1+r.FinalBytes || rest[0] != '\n' {
			return State{}, errors.New("final result of the wrong size")
		}
		st.Final = rest[1:]
	}
	return st, nil
}

// Create writes key's first record; it fails with ErrConflict when key has one.
func (s *Store) Create(ctx context.Context, key string, st State) (Entry, error) {
	value, err := encode(&st)
	if err != nil {
		return Entry{}, err
	}
	// The usual case, a key never seen, costs one put expecting no message at all on the subject.
	// KeyValue.Create also takes the place of a deleted or purged record.
	rev, err := s.put(ctx, key, value, noEntry)
	if err != nil && isWrongLastSeq(err) {
		rev, err = s.kv.Create(ctx, key, value)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Entry{}, ErrConflict
		}
	}
	if err != nil {
		return Entry{}, fmt.Errorf("create state: %w", err)
	}
	return Entry{State: st, Revision: rev}, nil
}

// Update replaces key's record if it is still at revision rev; otherwise it fails with
// ErrConflict.
func (s *Store) Update(ctx context.Context, key string, st State, rev uint64) (Entry, error) {
	value, err := encode(&st)
	if err != nil {
		return Entry{}, err
	}
	next, err := s.put(ctx, key, value, []string{strconv.FormatUint(rev, 10)})
	if err != nil && isWrongLastSeq(err) {
		return Entry{}, ErrConflict
	}
	if err != nil {
		return Entry{}, fmt.Errorf("update state: %w", err)
	}
	return Entry{State: st, Revision: next}, nil
}

// noEntry is the expected last sequence of a key without any message.
var noEntry = []string{"0"}

// put stores value under key as KeyValue's Create and Update do, expecting the key's last
// revision to be expected, and waits for the acknowledgement. It publishes asynchronously: for
// the client that is about half the work of a synchronous publish.
func (s *Store) put(ctx context.Context, key string, value []byte, expected []string) (revision uint64, err error) {
	stored, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.prefix + key, Data: value,
		Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: expected}})
	if err != nil {
		return 0, err
	}
	timeout := time.NewTimer(s.timeout)
	defer timeout.Stop()
	select {
	case ack := <-stored.Ok():
		return ack.Sequence, nil
	case err := <-stored.Err():
		return 0, err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-timeout.C:
		return 0, fmt.Errorf("no acknowledgement within %s", s.timeout)
	}
}

// isWrongLastSeq reports whether err says the key's last revision is not the one expected (code
// 10164 on replicated streams, 10071 otherwise).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
