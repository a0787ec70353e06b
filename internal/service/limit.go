package service

import (
	"context"
	"time"

	"github.com/cpcancel/cpcancel/internal/adaptive"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/config"
)

// newLimit is the adaptive limit on requests in flight, between limitBounds.
func newLimit(cfg config.Processing) *adaptive.Limiter {
	floor, ceiling := limitBounds(cfg)
	return adaptive.New(adaptive.Config{Min: floor, Max: ceiling})
}

// limitBounds are the floor and ceiling of the adaptive limit: CPCANCEL_CONCURRENCY_MIN and
// CPCANCEL_CONCURRENCY; a floor at or above the ceiling fixes the limit at the ceiling.
func limitBounds(cfg config.Processing) (floor, ceiling int) {
	return min(cfg.ConcurrencyMin, cfg.Concurrency), cfg.Concurrency
}

// limitObserver passes every API exchange on to the metrics and each Cancel POST's answer to the
// adaptive limit. Polls of an operation are left out: they run in the follow pool, whose
// concurrency is fixed, and their latency says little about the Cancel POST's.
type limitObserver struct {
	cloudpartner.Observer
	limit *adaptive.Limiter
}

func (o limitObserver) ObserveAPIRequest(ctx context.Context, operation, code string, elapsed time.Duration) {
	o.Observer.ObserveAPIRequest(ctx, operation, code, elapsed)
	if operation == "cancel" {
		o.limit.Observe(elapsed, pushback(code))
	}
}

// pushback reports whether an answer tells cpcancel to send less: throttled (429), unavailable
// (503), a gateway timeout (504), or no answer at all (a timeout or a failed connection).
func pushback(code string) bool {
	switch code {
	case "429", "503", "504", "error":
		return true
	}
	return false
}
