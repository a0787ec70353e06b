// Package idempotency records, per request, who is working on it and what its result was, in a
// JetStream KeyValue bucket, so that a redelivered or re-sent request never calls the API again
// and two workers never call it for the same request at once.
//
// A request's entry goes through: absent → leased (Create, with a per-key TTL: a crashed worker's
// lease expires by itself) → done (Update with the result event, kept for the bucket's TTL). A
// lease is released (deleted) when the work is handed back for a retry.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Store.
type Config struct {
	// Bucket is the KeyValue bucket name.
	Bucket string
	// TTL is how long a recorded result is kept (CPCANCEL_IDEMPOTENCY_TTL).
	TTL time.Duration
	// Lease bounds how long one worker may hold a request; it must outlive the longest
	// processing of one delivery.
	Lease time.Duration
	// Provision creates or updates the bucket; otherwise it must exist.
	Provision bool
	// Replicas of the bucket's stream when it is provisioned.
	Replicas int
}

// Store is safe for concurrent use.
type Store struct {
	js            jetstream.JetStream
	kv            jetstream.KeyValue
	subjectPrefix string // of the bucket's keys
	lease         time.Duration
	leaseTTL      []string // lease as a Nats-TTL header value
	ownerJSON     []byte   // this process, as a JSON string
}

// BusyError is returned by Claim while another worker holds the request.
type BusyError struct {
	// Until is when the other worker's lease ends at the latest.
	Until time.Time
}

func (e *BusyError) Error() string {
	return "request is being processed by another worker until " + e.Until.Format(time.RFC3339)
}

// An entry's value is either a lease, the byte 'L' followed by JSON naming its owner and end (for
// operators reading the bucket), or the recorded result event as it is (structured JSON, starting
// with '{'), so that recording and reading it costs no re-encoding or copy. Records written by
// earlier versions carry a 'D' before the result and are still read.
const (
	stateLeased = 'L'
	legacyDone  = 'D'
)

// lease is the payload of a leased entry.
type lease struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// leaseValue encodes a lease as json.Marshal would, in one allocation.
func (s *Store) leaseValue(until time.Time) []byte {
	v := make([]byte, 0, 64+len(s.ownerJSON))
	v = append(v, stateLeased)
	v = append(v, `{"owner":`...)
	v = append(v, s.ownerJSON...)
	v = append(v, `,"expires":"`...)
	v = until.AppendFormat(v, time.RFC3339Nano)
	return append(v, `"}`...)
}

// Open binds to the bucket, creating or updating it when cfg.Provision is set. Per-key lease TTLs
// need the bucket's LimitMarkerTTL, which can only be set when the bucket is created.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	var kv jetstream.KeyValue
	var err error
	if cfg.Provision {
		kvc := jetstream.KeyValueConfig{
			Bucket:         cfg.Bucket,
			Description:    "cpcancel: per-request leases and recorded results",
			History:        1,
			TTL:            cfg.TTL,
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: time.Minute,
			Replicas:       max(cfg.Replicas, 1),
		}
		// Create first, update only a bucket configured otherwise: on a cluster, an update sent
		// while another replica's create is still being proposed is never answered.
		kv, err = js.CreateKeyValue(ctx, kvc)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.UpdateKeyValue(ctx, kvc)
		}
		if err != nil {
			return nil, fmt.Errorf("provision idempotency bucket %s: %w", cfg.Bucket, err)
		}
	} else if kv, err = js.KeyValue(ctx, cfg.Bucket); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("idempotency bucket %q (CPCANCEL_IDEMPOTENCY_BUCKET) does not exist: create it or set CPCANCEL_PROVISION=true", cfg.Bucket)
		}
		return nil, fmt.Errorf("look up idempotency bucket %s: %w", cfg.Bucket, err)
	}
	host, _ := os.Hostname()
	owner, err := json.Marshal(host + "/" + strconv.Itoa(os.Getpid()))
	if err != nil {
		return nil, err
	}
	return &Store{
		js: js, kv: kv, subjectPrefix: "$KV." + cfg.Bucket + ".",
		lease: cfg.Lease, leaseTTL: []string{cfg.Lease.String()}, ownerJSON: owner,
	}, nil
}

// Key is the bucket key of the request (source, id): a hash, since ids may hold any character.
func Key(source, id string) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Lease is the right to process one request. Exactly one of Complete and Release should follow.
type Lease struct {
	s   *Store
	key string
	rev uint64
}

// Claim takes the lease on key. It returns the lease when the caller may go on, or the recorded
// result when the request was answered before, or a *BusyError while another worker holds it.
// Any other error means the store could not be reached: retry later.
func (s *Store) Claim(ctx context.Context, key string) (claimed *Lease, recorded []byte, err error) {
	value := s.leaseValue(time.Now().Add(s.lease))
	// The usual case, a key never seen, costs one put expecting no entry at all. Otherwise
	// KeyValue.Create also takes the place of a deleted or expired entry.
	rev, err := s.put(ctx, key, value, nats.Header{
		jetstream.ExpectedLastSubjSeqHeader: noEntry,
		jetstream.MsgTTLHeader:              s.leaseTTL,
	})
	if isWrongLastSeq(err) {
		rev, err = s.kv.Create(ctx, key, value, jetstream.KeyTTL(s.lease))
	}
	if err == nil {
		return &Lease{s: s, key: key, rev: rev}, nil, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil, fmt.Errorf("claim request: %w", err)
	}
	kve, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// The holder's lease just ended or was released: try again soon.
		return nil, nil, &BusyError{Until: time.Now()}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read request state: %w", err)
	}
	v := kve.Value()
	switch {
	case len(v) > 1 && v[0] == '{':
		return nil, v, nil
	case len(v) > 1 && v[0] == legacyDone:
		return nil, v[1:], nil
	case len(v) > 1 && v[0] == stateLeased:
		var l lease
		if err := json.Unmarshal(v[1:], &l); err != nil {
			return nil, nil, fmt.Errorf("read request state: %w", err)
		}
		return nil, nil, &BusyError{Until: l.Expires}
	}
	return nil, nil, fmt.Errorf("read request state: unknown value %q", v[:min(len(v), 16)])
}

// Complete records the result of the leased request for the bucket's TTL. result is a
// structured-mode CloudEvent (a JSON object); it is stored as it is.
func (l *Lease) Complete(ctx context.Context, result []byte) error {
	if len(result) < 2 || result[0] != '{' {
		return errors.New("record result: not a JSON object")
	}
	_, err := l.s.put(ctx, l.key, result, nats.Header{
		jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(l.rev, 10)},
	})
	if err != nil {
		return fmt.Errorf("record result: %w", err)
	}
	return nil
}

// noEntry is the expected last sequence of a key without any entry.
var noEntry = []string{"0"}

// put stores value under key, as KeyValue's Create and Update do, with the expectations in
// header, and waits for the acknowledgement. It publishes asynchronously: for the client that is
// about half the work of a synchronous publish, which is what Create and Update use.
func (s *Store) put(ctx context.Context, key string, value []byte, header nats.Header) (revision uint64, err error) {
	stored, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.subjectPrefix + key, Header: header, Data: value})
	if err != nil {
		return 0, err
	}
	timeout := time.NewTimer(putTimeout)
	defer timeout.Stop()
	select {
	case ack := <-stored.Ok():
		return ack.Sequence, nil
	case err := <-stored.Err():
		return 0, err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-timeout.C:
		return 0, fmt.Errorf("no acknowledgement within %s", putTimeout)
	}
}

// putTimeout bounds the wait for a put's acknowledgement, as the default timeout of a
// synchronous JetStream publish does.
const putTimeout = 5 * time.Second

// isWrongLastSeq reports whether err says the key's last revision is not the one expected (code
// 10164 on replicated streams, 10071 otherwise).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Release gives the lease up so that the next delivery can claim it at once.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.s.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}
