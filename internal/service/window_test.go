package service

import "testing"

// The window of outstanding publishes holds two per worker, and more than nats.go's default of
// 4,000 at the largest CPCANCEL_CONCURRENCY.
func TestAsyncWindow(t *testing.T) {
	for _, concurrency := range []int{1, 32, 1024, 4096} {
		if got, want := asyncWindow(concurrency), 2*(concurrency+followConcurrency); got < want {
			t.Errorf("asyncWindow(%d) = %d, want at least %d", concurrency, got, want)
		}
	}
}
