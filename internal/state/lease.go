package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrLeaseLost is returned by a Lease whose request another worker took over after the lease ran
// out: the holder must not call the API any more, nor record anything.
var ErrLeaseLost = errors.New("state: lease lost to another worker")

// WaitError is returned by Claim when the request may not be worked on now: another worker holds
// it, or its next try is not due yet.
type WaitError struct {
	// Until is when to look again at the latest.
	Until time.Time
	// Held says another worker holds the lease (it may finish before Until); otherwise the
	// request waits for its next try, due at Until.
	Held bool
	// Reason says why, for logs.
	Reason string
}

func (e *WaitError) Error() string {
	return "request " + e.Reason + " until " + e.Until.UTC().Format(time.RFC3339)
}

// Lease is the right to call the API for one request, fenced by the record's revision: every
// change the holder makes expects the revision it last wrote, so a holder that lost the lease
// fails instead of overwriting the new holder's work. Its methods may be called concurrently (a
// heartbeat renewing while the worker calls the API).
type Lease struct {
	s      *Store
	key    string
	holder string
	length time.Duration

	mu    sync.Mutex
	entry Entry
}

// Claim takes the lease on key for length, for holder (a name for this process; each claim adds
// a number of its own). It returns:
//   - a Lease when the caller may go on (a new request, an expired lease, a retry that is due);
//   - no Lease and the record, when the request is settled (answered, following or final);
//   - a *WaitError while another worker holds the lease or the next try is not due;
//   - any other error when the bucket could not be reached.
func (s *Store) Claim(ctx context.Context, key, holder string, length time.Duration) (*Lease, Entry, error) {
	now := time.Now()
	holder += "#" + strconv.FormatUint(claims.Add(1), 10)
	claim := State{Phase: Claimed, Holder: holder, LeaseUntil: now.Add(length)}
	e, err := s.Create(ctx, key, claim)
	if err == nil {
		return &Lease{s: s, key: key, holder: holder, length: length, entry: e}, Entry{}, nil
	}
	if !errors.Is(err, ErrConflict) {
		return nil, Entry{}, err
	}
	cur, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, Entry{}, &WaitError{Until: now, Held: true, Reason: "changing"}
	}
	if err != nil {
		return nil, Entry{}, err
	}
	switch {
	case cur.Settled():
		return nil, cur, nil
	case cur.Phase == Claimed && cur.LeaseUntil.After(now):
		return nil, Entry{}, &WaitError{Until: cur.LeaseUntil, Held: true, Reason: "held by " + cur.Holder}
	case cur.Phase == Waiting && cur.RetryAt.After(now):
		return nil, Entry{}, &WaitError{Until: cur.RetryAt, Reason: "waiting for its next try"}
	}
	// An expired lease (its holder died or hung) or a retry that is due: take it over, keeping
	// the attempts made so far.
	claim.Attempts = cur.Attempts
	e, err = s.Update(ctx, key, claim, cur.Revision)
	if errors.Is(err, ErrConflict) {
		return nil, Entry{}, &WaitError{Until: now, Held: true, Reason: "taken by another worker"}
	}
	if err != nil {
		return nil, Entry{}, err
	}
	return &Lease{s: s, key: key, holder: holder, length: length, entry: e}, Entry{}, nil
}

// Key is the request's key.
func (l *Lease) Key() string { return l.key }

// State is the record as the holder last wrote it.
func (l *Lease) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entry.State
}

// Ensure makes sure the lease has at least need left, renewing it (for its full length) when it
// has less. It fails with ErrLeaseLost when another worker took the request over.
func (l *Lease) Ensure(ctx context.Context, need time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Until(l.entry.LeaseUntil) >= need {
		return nil
	}
	next := l.entry.State
	next.LeaseUntil = time.Now().Add(l.length)
	return l.writeLocked(ctx, next)
}

// Renew extends the lease to its full length from now.
func (l *Lease) Renew(ctx context.Context) error { return l.Ensure(ctx, l.length) }

// Wait gives the lease up until retryAt, recording attempts: the next try, on any worker, claims
// it again from then on.
func (l *Lease) Wait(ctx context.Context, attempts int, retryAt time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked(ctx, State{Phase: Waiting, Attempts: attempts, RetryAt: retryAt})
}

// Settle records the request's answer (st must be settled) and ends the lease. It returns the
// entry to change further with Store.Update. The holder may settle even after its lease ran out,
// as long as nobody took the request over meanwhile.
func (l *Lease) Settle(ctx context.Context, st State) (Entry, error) {
	if !st.Settled() {
		return Entry{}, fmt.Errorf("state: settle with phase %q", st.Phase)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writeLocked(ctx, st); err != nil {
		return Entry{}, err
	}
	return l.entry, nil
}

func (l *Lease) writeLocked(ctx context.Context, st State) error {
	e, err := l.s.Update(ctx, l.key, st, l.entry.Revision)
	if errors.Is(err, ErrConflict) {
		// A write of ours whose acknowledgement was lost may have landed: then the record is
		// still ours, and the write is tried once more on top of it.
		cur, gerr := l.s.Get(ctx, l.key)
		switch {
		case errors.Is(gerr, ErrNotFound):
			// The record is gone (deleted, or lost with the bucket) while we held the lease.
			// Nobody else has claimed the request since, so it is still ours: write it anew, an
			// answer above all, or the next delivery would call the API again. Someone who
			// claims it first wins, and the lease is lost.
			e, err = l.s.Create(ctx, l.key, st)
		case gerr != nil:
			return gerr
		case cur.Phase == Claimed && cur.Holder == l.holder:
			e, err = l.s.Update(ctx, l.key, st, cur.Revision)
		case st.Settled() && cur.Phase == st.Phase && bytes.Equal(cur.Result, st.Result):
			e, err = cur, nil
		}
		if errors.Is(err, ErrConflict) {
			return ErrLeaseLost
		}
	}
	if err != nil {
		return err
	}
	l.entry = e
	return nil
}

// claims numbers the claims of this process, so that every lease has a holder of its own.
var claims atomic.Uint64
