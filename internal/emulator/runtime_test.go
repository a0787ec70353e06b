package emulator

import (
	"net/http"
	"testing"
	"time"
)

func TestSetTokenRotates(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", "sync-a"))
	if resp.StatusCode != 200 {
		t.Fatalf("old token before rotation: status %d (%s), want 200", resp.StatusCode, body)
	}
	e.SetToken(testToken, "rotated-token") // both, while the new one is distributed
	for _, tok := range []string{testToken, "rotated-token"} {
		req := newCancel(t, srv, "contoso", "sync-both")
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, body = mustSend(t, srv, req); resp.StatusCode != 200 {
			t.Errorf("token %s while both are accepted: status %d (%s), want 200", tok, resp.StatusCode, body)
		}
	}
	e.SetToken("rotated-token")
	resp, body = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-b"))
	checkError(t, resp, body, 401, "Unauthorized")
	req := newCancel(t, srv, "contoso", "sync-c")
	req.Header.Set("Authorization", "Bearer rotated-token")
	if resp, body = mustSend(t, srv, req); resp.StatusCode != 200 {
		t.Errorf("new token: status %d (%s), want 200", resp.StatusCode, body)
	}
	e.SetToken("")
	if resp, body = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-d")); resp.StatusCode != 200 {
		t.Errorf("no token configured: status %d (%s), want 200", resp.StatusCode, body)
	}
}

func TestSetLatency(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	e.SetLatency(60 * time.Millisecond)
	start := time.Now()
	resp, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
	if elapsed := time.Since(start); elapsed < 60*time.Millisecond {
		t.Errorf("cancel answered in %v, want at least the 60ms latency set", elapsed)
	}
	e.SetLatency(0)
	start = time.Now()
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+resp.Header.Get("Location"), ""))
	if elapsed := time.Since(start); elapsed >= 60*time.Millisecond {
		t.Errorf("operation GET answered in %v after SetLatency(0), want no added latency", elapsed)
	}
}

func TestRatesRetryAfter(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	e.SetRates(Rates{Throttle: 1, RetryAfter: "7"})
	resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", "sync-a"))
	checkError(t, resp, body, 429, "TooManyRequests")
	if got := resp.Header.Get("Retry-After"); got != "7" {
		t.Errorf("429 Retry-After = %q, want 7", got)
	}
	e.SetRates(Rates{ServerError: 1, RetryAfter: "3"})
	resp, body = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-a"))
	checkError(t, resp, body, 503, "ServiceUnavailable")
	if got := resp.Header.Get("Retry-After"); got != "3" {
		t.Errorf("503 Retry-After = %q, want 3", got)
	}
	e.SetRates(Rates{ServerError: 1})
	if resp, _ = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-a")); resp.Header.Get("Retry-After") != "" {
		t.Errorf("503 without RetryAfter: Retry-After = %q, want none", resp.Header.Get("Retry-After"))
	}

	put := func(body string) int {
		resp, _ := mustSend(t, srv, newRequest(t, http.MethodPut, srv.URL+"/_emulator/rates", body))
		return resp.StatusCode
	}
	if got := put(`{"throttle":1,"retryAfter":"10"}`); got != 204 {
		t.Fatalf("PUT rates with retryAfter: status %d, want 204", got)
	}
	resp, body = mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+"/_emulator/rates", ""))
	if got := decode[Rates](t, body); got != (Rates{Throttle: 1, RetryAfter: "10"}) {
		t.Errorf("GET rates = %+v (status %d), want throttle 1, retryAfter 10", got, resp.StatusCode)
	}
	if got := put(`{"throttle":1,"retryAfter":"soon"}`); got != 400 {
		t.Errorf("PUT rates with retryAfter \"soon\": status %d, want 400", got)
	}
}

func TestOpgoneOperationAnswers404(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken, OperationDuration: 50 * time.Millisecond})
	resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", "opgone-a"))
	if resp.StatusCode != 202 || resp.Header.Get("Location") == "" {
		t.Fatalf("cancel: status %d, Location %q (%s), want 202 with a Location", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	location := resp.Header.Get("Location")
	for range 2 {
		resp, body := mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+location, ""))
		checkError(t, resp, body, 404, "OperationNotFound")
	}
	ops := e.Operations("contoso", "opgone-a")
	if len(ops) != 1 || ops[0].PollCount != 2 || len(ops[0].Polls) != 2 || ops[0].Polls[1].Status != 404 {
		t.Errorf("Operations = %+v, want one operation polled twice, answered 404", ops)
	}
}

func TestOperationPollsRecorded(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	before := time.Now()
	resp, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
	location := resp.Header.Get("Location")
	id := migratedLocation("contoso", "contoso-offer").FindStringSubmatch(location)[1]
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+location, ""))
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+"/api/operations/"+id+"?api-version=2017-10-31", ""))
	// Rejected, and recorded with their status: no token, no api-version.
	noToken := newRequest(t, http.MethodGet, srv.URL+location, "")
	noToken.Header.Del("Authorization")
	mustSend(t, srv, noToken)
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+"/api/operations/"+id, ""))
	// Not a poll of this operation: another offer's route.
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+"/api/publishers/contoso/offers/other/operations/"+id+"?api-version=2017-10-31", ""))

	ops := e.Operations("contoso", "contoso-offer")
	if len(ops) != 1 {
		t.Fatalf("Operations = %+v, want one", ops)
	}
	op := ops[0]
	if op.ID != id || op.PublisherID != "contoso" || op.OfferID != "contoso-offer" || op.PollCount != 4 || len(op.Polls) != 4 {
		t.Fatalf("operation = %+v, want %s of contoso/contoso-offer polled 4 times", op, id)
	}
	for i, want := range []int{200, 200, 401, 400} {
		if op.Polls[i].Status != want {
			t.Errorf("poll %d: status %d, want %d", i, op.Polls[i].Status, want)
		}
		if i > 0 && op.Polls[i].At.Before(op.Polls[i-1].At) {
			t.Errorf("poll %d at %v, before poll %d", i, op.Polls[i].At, i-1)
		}
	}
	if op.Created.Before(before.Add(-time.Second)) || op.Polls[0].At.Before(op.Created) {
		t.Errorf("times out of order: created %v, polls %v", op.Created, op.Polls)
	}
	if all := e.AllOperations(); len(all) != 1 || all[0].ID != id {
		t.Errorf("AllOperations = %+v, want the one operation", all)
	}
	if got := e.Operations("contoso", "other"); len(got) != 0 {
		t.Errorf("Operations of another offer = %+v, want none", got)
	}
	e.Reset()
	if all := e.AllOperations(); len(all) != 0 {
		t.Errorf("AllOperations after Reset = %+v, want none", all)
	}
}
