package cloudpartner

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// Limits protect the API from cpcancel: a token-bucket rate limit and a cap on calls in flight.
// The zero value limits nothing.
type Limits struct {
	// Rate is the sustained calls per second allowed; 0 means no rate limit.
	Rate float64
	// Burst is how many calls may go at once above the rate; at least 1 when Rate is set.
	Burst int
	// Concurrency caps calls in flight; 0 means no cap.
	Concurrency int
}

// limiter applies Limits to each HTTP exchange and reports the time it held one back.
type limiter struct {
	rate  *rate.Limiter
	slots chan struct{}
}

func newLimiter(l Limits) *limiter {
	lim := &limiter{}
	if l.Rate > 0 {
		lim.rate = rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))
	}
	if l.Concurrency > 0 {
		lim.slots = make(chan struct{}, l.Concurrency)
	}
	return lim
}

// acquire waits for the concurrency cap, then the rate limit, and returns the func that frees the
// slot. observe is told which limit held the call back and for how long.
func (l *limiter) acquire(ctx context.Context, observe func(limit string, waited time.Duration)) (release func(), err error) {
	release = func() {}
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			start := time.Now()
			select {
			case l.slots <- struct{}{}:
				observe("concurrency", time.Since(start))
			case <-ctx.Done():
				return release, ctx.Err()
			}
		}
		release = func() { <-l.slots }
	}
	if l.rate != nil {
		r := l.rate.Reserve()
		if d := r.Delay(); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				observe("rate", d)
			case <-ctx.Done():
				r.Cancel()
				release()
				return func() {}, ctx.Err()
			}
		}
	}
	return release, nil
}
