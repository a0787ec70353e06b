package cloudpartner

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLimits checks that the rate limit spaces calls out and the concurrency cap bounds calls in
// flight, and that both report the calls they held back. Minimum delays only: the machine is shared.
func TestLimits(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		srv := newAPIServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusOK) })
		obs := &recordingObserver{}
		c, err := New(Config{BaseURL: srv.URL, Tokens: StaticToken(testToken), Observer: obs, Limits: Limits{Rate: 20, Burst: 1}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for range 6 {
			if _, err := c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o"}); err != nil {
				t.Fatal(err)
			}
		}
		// Burst 1 at 20/s: the 6th call cannot start before 5 × 50ms.
		if took := time.Since(start); took < 240*time.Millisecond {
			t.Errorf("6 calls at 20/s took %s, want at least 250ms", took)
		}
		if n := obs.throttledBy("rate"); n < 4 {
			t.Errorf("calls reported held back by the rate limit = %d, want at least 4", n)
		}
	})

	t.Run("concurrency", func(t *testing.T) {
		var inFlight, most atomic.Int32
		srv := newAPIServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		})
		obs := &recordingObserver{}
		c, err := New(Config{BaseURL: srv.URL, Tokens: StaticToken(testToken), Observer: obs, Limits: Limits{Concurrency: 2}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				if _, err := c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o"}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if m := most.Load(); m > 2 {
			t.Errorf("%d calls in flight at once, want at most 2", m)
		}
		if n := obs.throttledBy("concurrency"); n < 1 {
			t.Errorf("no call reported held back by the concurrency cap")
		}
	})

	t.Run("gives up with the caller", func(t *testing.T) {
		srv := newAPIServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusOK) })
		c, err := New(Config{BaseURL: srv.URL, Tokens: StaticToken(testToken), Limits: Limits{Rate: 0.1, Burst: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err = c.Cancel(ctx, CancelRequest{PublisherID: "p", OfferID: "o"})
		var e *Error
		if !errors.As(err, &e) || !e.Transient {
			t.Errorf("waiting past the caller's deadline: %v, want a transient *Error", err)
		}
		if n := len(srv.requests()); n != 1 {
			t.Errorf("API saw %d calls, want 1", n)
		}
	})
}

func (o *recordingObserver) throttledBy(limit string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.throttled[limit]
}
