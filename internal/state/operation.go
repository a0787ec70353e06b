package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Poll is the poll record of one operation (a 202's Location), shared by every request that
// follows it, kept in the same bucket as the requests' records. Whoever claims it (moves LastPoll
// to now by compare-and-set) may poll the operation once; everybody else uses what it recorded.
type Poll struct {
	// LastPoll is when the operation was last claimed for a poll.
	LastPoll time.Time `json:"lastPoll"`
	// Status is the operation's status at the last poll that got one; empty before. Answered is
	// when that poll was claimed (zero in records written before it was kept).
	Status   string    `json:"status,omitempty"`
	Answered time.Time `json:"answered,omitzero"`
	// Terminal says the operation ended (Status is final), Cancelled that it ended cancelled.
	Terminal  bool `json:"terminal,omitempty"`
	Cancelled bool `json:"cancelled,omitempty"`
	// Messages and CorrelationID are the operation's messages and the answer's correlation id.
	Messages      []string `json:"messages,omitempty"`
	CorrelationID string   `json:"correlationId,omitempty"`
	// NotBefore is when a poll answered with a Retry-After longer than the poll interval lets
	// the operation be polled again; zero when none asked for more.
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// PollEntry is a Poll as read from the bucket; Revision 0 means the operation has no record yet.
type PollEntry struct {
	Poll
	Revision uint64
}

// OperationKey is the bucket key of the poll record of the operation at location: "op." and a
// hash, so it never collides with a request's key (Key) and fits any location.
func OperationKey(location string) string {
	sum := sha256.Sum256([]byte(location))
	return "op." + hex.EncodeToString(sum[:16])
}

// Operation reads the poll record of the operation at location: Revision 0 when it has none.
// An error means the bucket could not be read.
func (s *Store) Operation(ctx context.Context, location string) (PollEntry, error) {
	kve, err := s.kv.Get(ctx, OperationKey(location))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PollEntry{}, nil
	}
	if err != nil {
		return PollEntry{}, fmt.Errorf("read poll record: %w", err)
	}
	e := PollEntry{Revision: kve.Revision()}
	if err := json.Unmarshal(kve.Value(), &e.Poll); err != nil {
		return PollEntry{}, fmt.Errorf("read poll record: unreadable at revision %d: %w", e.Revision, err)
	}
	return e, nil
}

// ClaimPoll claims a poll of the operation at location: it sets LastPoll to now, keeping what
// cur (as read by Operation, possibly empty) recorded, if the record is still at cur's revision.
// It fails with ErrConflict when someone else changed the record meanwhile: they claimed it.
func (s *Store) ClaimPoll(ctx context.Context, location string, cur PollEntry, now time.Time) (PollEntry, error) {
	next := cur.Poll
	next.LastPoll = now
	rev, err := s.putPoll(ctx, location, next, cur.Revision)
	if err != nil {
		return PollEntry{}, err
	}
	return PollEntry{Poll: next, Revision: rev}, nil
}

// RecordPoll stores what the poll claimed as claimed answered: p, with claimed's LastPoll. A
// terminal record is never replaced: when the record changed since the claim, p is written on
// top of the current one unless that one is terminal (then RecordPoll does nothing), once; a
// second change fails with ErrConflict.
func (s *Store) RecordPoll(ctx context.Context, location string, claimed PollEntry, p Poll) error {
	p.LastPoll, p.Answered = claimed.LastPoll, claimed.LastPoll
	_, err := s.putPoll(ctx, location, p, claimed.Revision)
	if !errors.Is(err, ErrConflict) {
		return err
	}
	cur, err := s.Operation(ctx, location)
	if err != nil || cur.Terminal {
		return err
	}
	p.LastPoll, p.Answered = later(p.LastPoll, cur.LastPoll), later(p.Answered, cur.Answered)
	p.NotBefore = later(p.NotBefore, cur.NotBefore) // a later poll's Retry-After holds
	_, err = s.putPoll(ctx, location, p, cur.Revision)
	return err
}

// putPoll writes p as the record of location if it is at revision rev (0: if it has none), and
// returns the new revision; ErrConflict when it is not.
func (s *Store) putPoll(ctx context.Context, location string, p Poll, rev uint64) (uint64, error) {
	value, err := json.Marshal(&p)
	if err != nil {
		return 0, err
	}
	key := OperationKey(location)
	next, err := s.put(ctx, key, value, []string{strconv.FormatUint(rev, 10)})
	if rev == 0 && isWrongLastSeq(err) {
		// A record that expired or was deleted leaves a marker: KeyValue.Create takes its place.
		next, err = s.kv.Create(ctx, key, value)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrConflict
		}
	}
	if isWrongLastSeq(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("write poll record: %w", err)
	}
	return next, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
