package adaptive_test

import (
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/adaptive"
)

// clock is a manual clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newLimiter(minLimit, maxLimit int) (*adaptive.Limiter, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	return adaptive.New(adaptive.Config{Min: minLimit, Max: maxLimit, Now: c.now}), c
}

// window feeds n answers in one window, then moves the clock to its end (100ms on); the limit
// changes when the next window's first answer comes.
func window(l *adaptive.Limiter, c *clock, n int, latency time.Duration, pushback bool) {
	l.InFlight(l.Limit()) // the limit is in use
	for range n {
		l.Observe(latency, pushback)
	}
	c.advance(100 * time.Millisecond)
}

// run feeds windows of steady answers and returns the limit after each.
func run(l *adaptive.Limiter, c *clock, windows int, latency time.Duration, pushback bool) []int {
	var limits []int
	for range windows {
		window(l, c, 10, latency, pushback)
		l.Observe(latency, pushback) // judges the window just ended
		limits = append(limits, l.Limit())
	}
	return limits
}

func TestGrowsToCeilingWhileLatencySteady(t *testing.T) {
	for _, latency := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(latency.String(), func(t *testing.T) {
			l, c := newLimiter(8, 1024)
			if got := l.Limit(); got != 8 {
				t.Fatalf("start: limit %d, want the floor 8", got)
			}
			limits := run(l, c, 20, latency, false)
			for i := 1; i < len(limits); i++ {
				if limits[i] < limits[i-1] {
					t.Fatalf("limit fell at steady latency: %v", limits)
				}
			}
			if got := limits[len(limits)-1]; got != 1024 {
				t.Fatalf("limit %d after 20 steady windows, want the ceiling 1024: %v", got, limits)
			}
		})
	}
}

func TestShrinksWhenLatencyRises(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 6, 20*time.Millisecond, false) // slow start: 8 → 512
	before := l.Limit()
	limits := run(l, c, 3, 100*time.Millisecond, false) // five times the low
	if limits[0] >= before {
		t.Fatalf("limit %d → %d at 5× the latency, want it to shrink", before, limits[0])
	}
	if limits[0] < before*9/10 {
		t.Fatalf("limit %d → %d in one window, want at most 10 %% less", before, limits[0])
	}
	// Within the tolerance (twice the low) the limit grows again.
	after := run(l, c, 3, 30*time.Millisecond, false)
	if after[2] <= limits[2] {
		t.Fatalf("limit %v at 1.5× the low latency after %v, want it to grow", after, limits)
	}
}

func TestPushbackBacksOffOncePerWindow(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 7, 20*time.Millisecond, false)
	before := l.Limit()
	if before != 1024 {
		t.Fatalf("limit %d, want 1024 before the pushback", before)
	}
	// One window in which many calls are pushed back, amid successes at the usual latency.
	for range 50 {
		l.Observe(0, true)
		l.Observe(20*time.Millisecond, false)
	}
	if got := l.Limit(); got != before {
		t.Fatalf("limit %d changed within the window, want %d until it ends", got, before)
	}
	c.advance(100 * time.Millisecond)
	l.Observe(20*time.Millisecond, false)
	if got, want := l.Limit(), int(0.7*float64(before)+0.5); got != want {
		t.Fatalf("limit %d after a window with 50 pushbacks, want %d (one backoff)", got, want)
	}
}

func TestPushbackAloneShrinksToFloor(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 7, 20*time.Millisecond, false)
	limits := run(l, c, 15, 0, true)
	if got := limits[len(limits)-1]; got != 8 {
		t.Fatalf("limit %d after 15 windows of 429s, want the floor 8: %v", got, limits)
	}
	// No answers at all (nothing sent) leaves it there.
	c.advance(time.Minute)
	if got := l.Limit(); got != 8 {
		t.Fatalf("limit %d after a quiet minute, want 8", got)
	}
}

func TestAfterBackoffGrowsAdditively(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 4, 20*time.Millisecond, false) // 128
	run(l, c, 1, 0, true)                    // 90
	run(l, c, 1, 20*time.Millisecond, false) // 63: the window of the answer that judged the last
	before := l.Limit()
	limits := run(l, c, 1, 20*time.Millisecond, false)
	if grew := limits[0] - before; grew < 5 || grew > 15 {
		t.Fatalf("limit %d → %d after a back-off, want it to grow by about √limit", before, limits[0])
	}
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		name             string
		min, max         int
		wantMin, wantMax int
	}{
		{"as given", 8, 64, 8, 64},
		{"floor above ceiling", 64, 8, 64, 64},
		{"zero floor", 0, 4, 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newLimiter(tc.min, tc.max)
			for _, w := range []struct {
				latency  time.Duration
				pushback bool
			}{{10 * time.Millisecond, false}, {time.Second, false}, {0, true}} {
				for range 12 {
					run(l, c, 1, w.latency, w.pushback)
					if got := l.Limit(); got < tc.wantMin || got > tc.wantMax {
						t.Fatalf("limit %d outside [%d, %d]", got, tc.wantMin, tc.wantMax)
					}
				}
			}
			if got := l.Limit(); got != tc.wantMin {
				t.Fatalf("limit %d after pushback, want the floor %d", got, tc.wantMin)
			}
		})
	}
}

func TestNoGrowthWhileLimitUnused(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 3, 20*time.Millisecond, false) // 64
	before := l.Limit()
	for range 10 { // a quiet spell: answers at the usual latency, few requests in flight
		l.InFlight(before/2 - 1)
		l.Observe(20*time.Millisecond, false)
		c.advance(100 * time.Millisecond)
	}
	if got := l.Limit(); got != before {
		t.Fatalf("limit %d → %d with fewer than half of it in flight, want it unchanged", before, got)
	}
	l.InFlight(before / 2)
	c.advance(100 * time.Millisecond)
	l.Observe(20*time.Millisecond, false)
	if got := l.Limit(); got <= before {
		t.Fatalf("limit %d → %d with half of it in flight, want it to grow", before, got)
	}
}

func TestSubMillisecondNoiseIsNoQueueing(t *testing.T) {
	l, c := newLimiter(8, 1024)
	run(l, c, 2, 200*time.Microsecond, false) // 32, low 0.2ms
	before := l.Limit()
	limits := run(l, c, 1, 15*time.Millisecond, false) // 75× the low, within 20ms of it
	if limits[0] <= before {
		t.Fatalf("limit %d → %d at 15ms after a low of 0.2ms, want it to grow", before, limits[0])
	}
	limits = run(l, c, 1, 40*time.Millisecond, false)
	if limits[0] >= 2*before {
		t.Fatalf("limit %d at 40ms after a low of 0.2ms, want it to shrink", limits[0])
	}
}
