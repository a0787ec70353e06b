package emulator

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCancel measures the handler alone (no network) answering the load tool's typical
// call: a fresh offer, a bearer token and an empty metadata object, answered 202 with a new
// operation.
func BenchmarkCancel(b *testing.B) {
	// Operations end at once, so that each cancel starts a new one, as the load tool's fresh
	// offers do; cycling through a few offers keeps request building out of the loop.
	e := New(Options{Token: testToken, OperationDuration: time.Nanosecond})
	body := []byte(`{"metadata":{}}`)
	const offers = 1024
	reqs := make([]*http.Request, offers)
	readers := make([]*bytes.Reader, offers)
	for i := range reqs {
		readers[i] = bytes.NewReader(body)
		r := httptest.NewRequest(http.MethodPost,
			"/api/publishers/loadgen/offers/loadgen-offer-"+strconv.Itoa(i)+"/cancel?api-version="+apiVersion, nil)
		r.Body = io.NopCloser(readers[i])
		r.Header.Set("Authorization", "Bearer "+testToken)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json")
		r.Header.Set("User-Agent", "cpcancel")
		reqs[i] = r
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		readers[i].Reset(body)
		w := httptest.NewRecorder()
		e.ServeHTTP(w, reqs[i])
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d, body %s", w.Code, w.Body)
		}
		i = (i + 1) % offers
	}
}
