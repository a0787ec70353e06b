package cloudpartner

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
)

func TestOperation(t *testing.T) {
	emu := httptest.NewServer(emulator.New(emulator.Options{Token: testToken, OperationDuration: 100 * time.Millisecond}))
	t.Cleanup(emu.Close)
	c, err := New(Config{BaseURL: emu.URL, Tokens: StaticToken(testToken)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	poll := func(t *testing.T, offer string) (first, last Operation) {
		t.Helper()
		acc, err := c.Cancel(ctx, CancelRequest{PublisherID: "contoso", OfferID: offer})
		if err != nil || acc.Location == "" {
			t.Fatalf("Cancel = %+v, %v", acc, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			op, err := c.Operation(ctx, acc.Location)
			if err != nil {
				t.Fatalf("Operation: %v", err)
			}
			if i == 0 {
				first = op
			}
			if op.Terminal() {
				return first, op
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("operation never ended")
		return
	}
	t.Run("running then canceled", func(t *testing.T) {
		first, last := poll(t, "contoso-offer")
		if first.Terminal() || !strings.EqualFold(first.Status, "running") || !last.Cancelled() || last.CorrelationID == "" {
			t.Errorf("first %+v, last %+v", first, last)
		}
	})
	t.Run("legacy location with $", func(t *testing.T) {
		if _, last := poll(t, "legacy-offer"); !last.Cancelled() {
			t.Errorf("last %+v", last)
		}
	})
	t.Run("failed with messages", func(t *testing.T) {
		_, last := poll(t, "opfail-offer")
		if last.Cancelled() || !last.Terminal() || len(last.Messages) == 0 {
			t.Errorf("last %+v", last)
		}
	})
	t.Run("unknown operation is transient", func(t *testing.T) {
		// Right after a 202 the API may not know the operation yet: a 404 must not end following.
		_, err := c.Operation(ctx, emu.URL+"/api/operations/nope?api-version=2017-10-31")
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != 404 || !e.Transient {
			t.Errorf("err = %v, want a transient 404", err)
		}
	})
	t.Run("another origin is not fetched", func(t *testing.T) {
		var hits atomic.Int32
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Write([]byte(`{"status":"Canceled"}`))
		}))
		t.Cleanup(other.Close)
		base, _ := url.Parse(emu.URL)
		for _, loc := range []string{
			other.URL + "/api/operations/x",                         // other port
			"https://" + base.Host + "/api/operations/x",            // other scheme
			"http://localhost:" + base.Port() + "/api/operations/x", // other host name
			"http://user@" + base.Host + "/api/operations/x",        // user information
			"/api/operations/x",                                     // not absolute
		} {
			_, err := c.Operation(ctx, loc)
			var e *Error
			if !errors.As(err, &e) || e.Code != cancelevent.CodeLocationNotFollowed || e.Transient {
				t.Errorf("Operation(%q) err = %v, want permanent %s", loc, err, cancelevent.CodeLocationNotFollowed)
			}
		}
		if hits.Load() != 0 {
			t.Errorf("the other origin was fetched %d times", hits.Load())
		}
	})
	t.Run("polls are observed as status", func(t *testing.T) {
		obs := &recordingObserver{}
		oc, err := New(Config{BaseURL: emu.URL, Tokens: StaticToken(testToken), Observer: obs})
		if err != nil {
			t.Fatal(err)
		}
		acc, err := oc.Cancel(ctx, CancelRequest{PublisherID: "contoso", OfferID: "observed-offer"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oc.Operation(ctx, acc.Location); err != nil {
			t.Fatal(err)
		}
		if got := obs.got(); !slices.Equal(got, []string{"202", "status:200"}) {
			t.Errorf("observed %q, want [202 status:200]", got)
		}
	})
	t.Run("status compared case-insensitively, unknown not terminal", func(t *testing.T) {
		for status, terminal := range map[string]bool{"CANCELED": true, "Complete": true, "failed": true, "Running": false, "notStarted": false, "": false} {
			if got := (Operation{Status: status}).Terminal(); got != terminal {
				t.Errorf("Terminal(%q) = %v, want %v", status, got, terminal)
			}
		}
	})
}

func TestOperationTransientStatuses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		transient bool
	}{
		{http.StatusUnauthorized, true}, {http.StatusForbidden, true}, {http.StatusNotFound, true},
		{http.StatusRequestTimeout, true}, {http.StatusTooManyRequests, true}, {http.StatusBadGateway, true},
		{http.StatusBadRequest, false}, {http.StatusGone, false},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(tc.status)
			}))
			t.Cleanup(srv.Close)
			c, err := New(Config{BaseURL: srv.URL, Tokens: &scriptedTokens{old: "old-token", fresh: "new-token"}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Operation(context.Background(), srv.URL+"/api/operations/x")
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tc.status || e.Transient != tc.transient {
				t.Fatalf("err = %v (%+v), want status %d transient %v", err, e, tc.status, tc.transient)
			}
			if want := int32(1 + map[bool]int32{true: 1}[tc.status == http.StatusUnauthorized]); calls.Load() != want {
				t.Errorf("%d calls, want %d (one retry after a 401 with a fresh token)", calls.Load(), want)
			}
		})
	}
}

func TestCancelFence(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, Tokens: StaticToken(testToken)})
	if err != nil {
		t.Fatal(err)
	}
	lost := errors.New("lease lost")
	_, err = c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o",
		Fence: func(context.Context) error { return lost }})
	if err != lost || calls.Load() != 0 {
		t.Errorf("err = %v after %d calls, want the fence's error as it is and no call", err, calls.Load())
	}
	fenced := 0
	if _, err := c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o",
		Fence: func(context.Context) error { fenced++; return nil }}); err != nil || fenced != 1 || calls.Load() != 1 {
		t.Errorf("err = %v, fence asked %d times, %d calls; want nil, 1, 1", err, fenced, calls.Load())
	}
}
