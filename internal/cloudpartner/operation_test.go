package cloudpartner

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	t.Run("unknown operation", func(t *testing.T) {
		_, err := c.Operation(ctx, emu.URL+"/api/operations/nope?api-version=2017-10-31")
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != 404 || e.Transient {
			t.Errorf("err = %v, want a permanent 404", err)
		}
	})
	t.Run("no token for another host", func(t *testing.T) {
		var auth []string
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			auth = append(auth, r.Header.Get("Authorization"))
			w.Write([]byte(`{"status":"Canceled"}`))
		}))
		t.Cleanup(other.Close)
		op, err := c.Operation(ctx, other.URL+"/api/operations/x")
		if err != nil || !op.Cancelled() {
			t.Fatalf("Operation = %+v, %v", op, err)
		}
		if len(auth) != 1 || auth[0] != "" {
			t.Errorf("the other host got Authorization %q", auth)
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
