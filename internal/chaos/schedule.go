// Package chaos is a fault-injection test of cpcancel's guarantees (README, "Guarantees"): real
// cpcancel processes and a real nats-server, killed and restarted on a seeded random schedule,
// with API storms, a slow API, token rotations, an unavailable state bucket or result stream
// and re-sent requests, then a check of what was stored and what the API saw.
//
// The test itself is built with the chaos tag:
//
//	go test -count=1 -tags chaos -run TestChaos -v ./internal/chaos/ -chaos.duration=60s
//
// This file plans a run from a seed (the faults and the requests), check.go judges one; both are
// plain code, tested without the tag, and the same seed always plans the same run.
package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The faults a schedule mixes.
const (
	// KillReplica SIGKILLs a cpcancel replica and restarts it after Fault.For.
	KillReplica Kind = "kill-replica"
	// TermReplica SIGTERMs a replica, waits for it to exit, and restarts it after Fault.For.
	TermReplica Kind = "term-replica"
	// KillNATS SIGKILLs nats-server and restarts it (same port and store) after Fault.For.
	KillNATS Kind = "kill-nats"
	// StateOutage makes the state (idempotency) bucket stop answering for Fault.For.
	StateOutage Kind = "state-outage"
	// ResultOutage makes the result stream stop taking results for Fault.For.
	ResultOutage Kind = "result-outage"
	// ServerErrors makes the API answer 503 to a share Fault.Rate of cancels for Fault.For.
	ServerErrors Kind = "api-5xx"
	// Throttle makes the API answer 429 with Retry-After: Fault.RetryAfter to a share Fault.Rate
	// of cancels for Fault.For.
	Throttle Kind = "api-429"
	// SlowAPI adds Fault.Latency, longer than CPCANCEL_HTTP_TIMEOUT, to every API answer for
	// Fault.For.
	SlowAPI Kind = "api-slow"
	// RotateToken writes a new token to the token file, then after Fault.For makes the API accept
	// only it.
	RotateToken Kind = "token-rotation"
)

// Kinds lists every kind, in the order reports use.
var Kinds = []Kind{KillReplica, TermReplica, KillNATS, StateOutage, ResultOutage, ServerErrors, Throttle, SlowAPI, RotateToken}

// resource is what a fault holds while it lasts; two faults never hold the same one at once.
func (k Kind) resource(target int) string {
	switch k {
	case KillReplica, TermReplica:
		return fmt.Sprintf("replica-%d", target)
	case KillNATS:
		return "nats"
	case ServerErrors, Throttle:
		return "api-rates"
	}
	return string(k)
}

// Fault is one fault of a schedule.
type Fault struct {
	Kind Kind
	// At is when it starts, from the start of the run.
	At time.Duration
	// For is how long it lasts: a process's downtime, a storm's or an outage's length, the time
	// between writing a new token and the API requiring it.
	For time.Duration
	// Target is the replica of KillReplica and TermReplica.
	Target int
	// Rate is the share of cancels a storm fails.
	Rate float64
	// RetryAfter is the Retry-After of a Throttle storm, in seconds.
	RetryAfter int
	// Latency is the API latency of SlowAPI.
	Latency time.Duration
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s at %s for %s", f.Kind, f.At.Round(time.Millisecond), f.For.Round(time.Millisecond))
	switch f.Kind {
	case KillReplica, TermReplica:
		s += fmt.Sprintf(" (replica %d)", f.Target)
	case ServerErrors:
		s += fmt.Sprintf(" (rate %.2f)", f.Rate)
	case Throttle:
		s += fmt.Sprintf(" (rate %.2f, Retry-After %ds)", f.Rate, f.RetryAfter)
	case SlowAPI:
		s += fmt.Sprintf(" (latency %s)", f.Latency)
	}
	return s
}

// ScheduleOptions shape a schedule.
type ScheduleOptions struct {
	Duration time.Duration
	Replicas int
	// HTTPTimeout is CPCANCEL_HTTP_TIMEOUT: SlowAPI's latency exceeds it.
	HTTPTimeout time.Duration
}

// NewSchedule plans the faults of a run from seed: one of every kind first, in random order (a
// kind whose resource is busy waits for a later turn), then random kinds, a few seconds apart,
// each lasting as its kind does (processes down 1-5s, storms 5-20s, state outages 20-40s, result
// outages 10-30s), none outlasting the run, and no two holding one resource (a replica,
// nats-server, the API's fault rates, its latency, the state bucket, the result stream) at once.
// Faults that do not fit are left out, so a short run holds fewer.
func NewSchedule(seed uint64, o ScheduleOptions) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x5ced1e))
	busy := map[string]time.Duration{} // resource → end of the fault holding it
	end := o.Duration - time.Second
	var out []Fault
	first := slices.Clone(Kinds)
	rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	at := 2*time.Second + between(rng, 0, time.Second)
	for at < end-time.Second {
		var kind Kind
		fromFirst := len(first) > 0
		if fromFirst {
			kind, first = first[0], first[1:]
		} else {
			kind = pick(rng)
		}
		f := Fault{Kind: kind, At: at}
		switch kind {
		case KillReplica, TermReplica, KillNATS:
			f.For = between(rng, time.Second, 5*time.Second)
		case StateOutage:
			f.For = between(rng, 20*time.Second, 40*time.Second)
		case ResultOutage:
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case ServerErrors:
			f.For = between(rng, 5*time.Second, 20*time.Second)
			f.Rate = 0.7 + 0.3*rng.Float64()
		case Throttle:
			f.For = between(rng, 5*time.Second, 20*time.Second)
			f.Rate = 0.7 + 0.3*rng.Float64()
			f.RetryAfter = 1 + rng.IntN(5)
		case SlowAPI:
			f.For = between(rng, 3*time.Second, 10*time.Second)
			f.Latency = o.HTTPTimeout + between(rng, 500*time.Millisecond, 2*time.Second)
		case RotateToken:
			f.For = between(rng, 0, 2*time.Second)
		}
		if kind == KillReplica || kind == TermReplica {
			f.Target = rng.IntN(max(o.Replicas, 1))
		}
		f.For = min(f.For, end-at)
		switch {
		case busy[kind.resource(f.Target)] <= at && f.For > 0:
			busy[kind.resource(f.Target)] = at + f.For
			out = append(out, f)
		case fromFirst:
			first = append(first, kind) // every kind gets its turn: try it again later
		}
		at += between(rng, 1500*time.Millisecond, 4*time.Second)
	}
	return out
}

// weights of the kinds after the first round.
var weights = map[Kind]int{KillReplica: 4, TermReplica: 3, KillNATS: 2, StateOutage: 1, ResultOutage: 1, ServerErrors: 2, Throttle: 2, SlowAPI: 2, RotateToken: 2}

func pick(rng *rand.Rand) Kind {
	total := 0
	for _, k := range Kinds {
		total += weights[k]
	}
	n := rng.IntN(total)
	for _, k := range Kinds {
		if n -= weights[k]; n < 0 {
			return k
		}
	}
	return Kinds[0]
}

// between is uniform in [lo, hi), rounded to milliseconds.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return (lo + time.Duration(rng.Int64N(int64(hi-lo)))).Round(time.Millisecond)
}

// Scenario is what a request asks of the emulator, chosen by its offer id's prefix.
type Scenario string

// The scenarios of a run.
const (
	// Plain: 202, then the operation ends canceled: cancelling, then a final cancelled.
	Plain Scenario = "plain"
	// Sync: 200: cancelled, no final result.
	Sync Scenario = "sync"
	// OpFail: 202, then the operation ends failed: cancelling, then a final failed.
	OpFail Scenario = "opfail"
	// Unknown: 404 OfferNotFound: failed.
	Unknown Scenario = "unknown"
	// OpGone: 202, then the operation's GETs answer 404: cancelling, then a final failed.
	OpGone Scenario = "opgone"
	// Invalid: an offer id that is not valid: failed (invalid_request), no API call.
	Invalid Scenario = "invalid"
)

// Scenarios lists every scenario, in the order reports use.
var Scenarios = []Scenario{Plain, Sync, OpFail, Unknown, OpGone, Invalid}

// Request is one planned cancel request.
type Request struct {
	// Index is its position in the plan; IDs and offers derive from it.
	Index    int
	Scenario Scenario
	// Source and ID are the CloudEvents attributes, the request's identity.
	Source, ID string
	// PublisherID and OfferID are the data; each request has an offer of its own, so that the
	// API's record per offer is the record per request.
	PublisherID, OfferID string
	Emails               []string
	// Structured sends it in structured mode, else binary.
	Structured bool
	// At is when it is published, from the start of the run.
	At time.Duration
	// ResendAt, when not zero, is when the publisher sends it again (same source and id, a new
	// message, in the other content mode).
	ResendAt time.Duration
}

// Expected is what the request gets when nothing goes wrong: the first result's outcome,
// and the final result's ("" for none).
func (r Request) Expected() (first, final string) {
	switch r.Scenario {
	case Plain:
		return "cancelling", "cancelled"
	case Sync:
		return "cancelled", ""
	case OpFail, OpGone:
		return "cancelling", "failed"
	}
	return "failed", ""
}

// DeadLetter is one planned message that is not a CloudEvent.
type DeadLetter struct {
	Body string
	At   time.Duration
}

// Plan is the traffic of a run.
type Plan struct {
	Requests    []Request
	DeadLetters []DeadLetter
}

// Source is the CloudEvents source of the planned requests.
const Source = "/chaos"

// Publisher is the publisher id of the planned requests.
const Publisher = "contoso"

// deadLetterPrefix starts the body of every planned dead letter.
const deadLetterPrefix = "chaos: not a CloudEvent #"

// IsPlannedDeadLetter reports whether body is one of the planned dead letters.
func IsPlannedDeadLetter(body string) bool { return strings.HasPrefix(body, deadLetterPrefix) }

// NewPlan plans n requests from seed, published at an even pace over publishFor: half plain, a
// fifth sync, the rest opfail, unknown, opgone and (2%) invalid; half structured; 3% re-sent
// 1-20s later (within the run); and n/200 + 3 dead letters.
func NewPlan(seed uint64, n int, publishFor time.Duration) Plan {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b9))
	var p Plan
	for i := range n {
		r := Request{Index: i, Source: Source, ID: fmt.Sprintf("req-%05d", i), PublisherID: Publisher}
		switch x := rng.IntN(100); {
		case x < 50:
			r.Scenario = Plain
		case x < 70:
			r.Scenario = Sync
		case x < 80:
			r.Scenario = OpFail
		case x < 88:
			r.Scenario = Unknown
		case x < 98:
			r.Scenario = OpGone
		default:
			r.Scenario = Invalid
		}
		switch r.Scenario {
		case Plain:
			r.OfferID = fmt.Sprintf("offer-%05d", i)
		case Invalid:
			r.OfferID = fmt.Sprintf("invalid/%05d", i) // a slash: not a valid offer id
		default:
			r.OfferID = fmt.Sprintf("%s-%05d", r.Scenario, i)
		}
		if rng.IntN(3) == 0 {
			r.Emails = []string{fmt.Sprintf("ops-%d@contoso.com", i)}
		}
		r.Structured = rng.IntN(2) == 0
		if n > 0 {
			r.At = (publishFor * time.Duration(i) / time.Duration(n)).Round(time.Millisecond)
		}
		if rng.IntN(100) < 3 {
			if at := r.At + between(rng, time.Second, 20*time.Second); at < publishFor {
				r.ResendAt = at
			}
		}
		p.Requests = append(p.Requests, r)
	}
	for i := range n/200 + 3 {
		p.DeadLetters = append(p.DeadLetters, DeadLetter{Body: fmt.Sprintf("%s%d", deadLetterPrefix, i), At: between(rng, 0, publishFor)})
	}
	return p
}
