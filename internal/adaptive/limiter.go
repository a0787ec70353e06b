// Package adaptive sets how many requests cpcancel works on at once from what the API answers: the
// limit grows while the API's latency stays near its long-term low and shrinks when the latency
// rises (calls queue somewhere) or when the API pushes back (429, 503, a timeout or no answer).
//
// The algorithm is a windowed cousin of Netflix concurrency-limits' Gradient2. Each window of
// MinWindow is judged once, when its first observation after the window's end comes in (a window
// without answers changes nothing):
//
//   - any pushback: the limit is multiplied by Backoff (once per window however many calls were
//     pushed back, as their answers all tell of the same overload);
//   - else the window's mean latency m against the low b: when m <= max(Tolerance × b, b + Slack)
//     the limit grows, doubling until the first decrease (slow start) and by √limit after it
//     (Slack keeps a fast API's latency, which under load is mostly cpcancel's own wait for a CPU,
//     from reading as queueing at the API); when m is higher the limit moves a fifth of the way
//     to limit × that bound / m (so by 10 % at most), as latency under a CPU-bound load is noisy
//     and a deep cut takes many windows to grow back;
//   - the limit grows only when at least half of it was in use in the window (InFlight), so that
//     a quiet spell does not leave it at the ceiling when a burst comes;
//   - the low b is the least window mean seen, drifting up by 1 % of the gap per window so that
//     an API that has become slower for good is accepted as its new normal.
package adaptive

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Limiter. The zero values of the tuning fields are the defaults.
type Config struct {
	Min, Max int // the limit stays in [Min, Max]; it starts at Min
	// Tolerance is how much the window latency may exceed the low before the limit shrinks; 2.
	Tolerance float64
	// Slack is latency above the low that never counts as queueing; 20ms.
	Slack time.Duration
	// Backoff multiplies the limit after a window with pushback; 0.7.
	Backoff float64
	// MinWindow is the shortest window; 100ms.
	MinWindow time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Limiter is an adaptive concurrency limit. Its methods are safe for concurrent use.
type Limiter struct {
	cfg   Config
	limit atomic.Int64

	mu        sync.Mutex
	estimate  float64       // the limit before rounding
	low       time.Duration // least window mean latency; 0 until the first window
	slowStart bool
	windowEnd time.Time
	sum       time.Duration // successes' latency in this window
	count     int
	pushback  bool
	used      int // most requests in flight in this window
}

// New returns a Limiter at cfg.Min. Min is at least 1 and Max at least Min.
func New(cfg Config) *Limiter {
	cfg.Min = max(cfg.Min, 1)
	cfg.Max = max(cfg.Max, cfg.Min)
	if cfg.Tolerance <= 1 {
		cfg.Tolerance = 2
	}
	if cfg.Backoff <= 0 || cfg.Backoff >= 1 {
		cfg.Backoff = 0.7
	}
	if cfg.Slack <= 0 {
		cfg.Slack = 20 * time.Millisecond
	}
	if cfg.MinWindow <= 0 {
		cfg.MinWindow = 100 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{cfg: cfg, estimate: float64(cfg.Min), slowStart: true}
	l.limit.Store(int64(cfg.Min))
	l.windowEnd = cfg.Now().Add(cfg.MinWindow)
	return l
}

// Limit is how many requests may be in flight now, in [Min, Max].
func (l *Limiter) Limit() int { return int(l.limit.Load()) }

// InFlight records how many requests are in flight now; call it whenever that number grows.
func (l *Limiter) InFlight(n int) {
	l.mu.Lock()
	l.used = max(l.used, n)
	l.mu.Unlock()
}

// Observe records one API call's answer: latency of a success, or pushback when the API
// answered 429 or 503, timed out or did not answer (its latency is then not a sample).
func (l *Limiter) Observe(latency time.Duration, pushback bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	if !now.Before(l.windowEnd) {
		l.judge(now)
	}
	if pushback {
		l.pushback = true
		return
	}
	l.sum += latency
	l.count++
}

// judge updates the limit from the window that has ended and starts the next one.
func (l *Limiter) judge(now time.Time) {
	switch {
	case l.pushback:
		l.estimate *= l.cfg.Backoff
		l.slowStart = false
	case l.count > 0:
		mean := l.sum / time.Duration(l.count)
		if l.low == 0 || mean < l.low {
			l.low = mean
		} else {
			l.low += (mean - l.low) / 100
		}
		bound := max(l.cfg.Tolerance*float64(l.low), float64(l.low+l.cfg.Slack))
		switch {
		case float64(mean) <= bound && 2*l.used < int(l.limit.Load()):
			// Not limited by the limit: no evidence that more would go well.
		case float64(mean) <= bound:
			if l.slowStart {
				l.estimate *= 2
			} else {
				l.estimate += math.Sqrt(l.estimate)
			}
		default:
			gradient := max(0.5, bound/float64(mean))
			l.estimate *= 0.8 + 0.2*gradient
			l.slowStart = false
		}
	}
	l.estimate = min(max(l.estimate, float64(l.cfg.Min)), float64(l.cfg.Max))
	l.limit.Store(int64(math.Round(l.estimate)))
	l.sum, l.count, l.pushback, l.used = 0, 0, false, 0
	// Windows shorter than the API's latency let the limit reach the ceiling within a second of
	// the first answers; the signals lag by one latency, which the back-off outpaces.
	l.windowEnd = now.Add(l.cfg.MinWindow)
}
