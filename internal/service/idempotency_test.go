package service_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

// TestDuplicateRequests publishes one request three times at once, then once more after its
// result: the API is called once and there is one result, with one id.
func TestDuplicateRequests(t *testing.T) {
	st := startStack(t, nil)
	st.emu.Inject(emulator.Fault{Delay: 300 * time.Millisecond}) // keep the first call in flight
	req := request(t, "/test", "same-request", "contoso", "contoso-offer")
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { st.publish(t, natsce.Binary, req) })
	}
	wg.Wait()
	waitMetric(t, st, "cpcancel_duplicates_total", 2)
	first := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]

	st.publish(t, natsce.Structured, req)
	waitMetric(t, st, "cpcancel_duplicates_total", 3)
	results := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)
	if results[0].ev.ID() != first.ev.ID() {
		t.Errorf("result id changed: %s then %s", first.ev.ID(), results[0].ev.ID())
	}
	if n := st.emu.CancelCount("contoso", "contoso-offer"); n != 1 {
		t.Errorf("API called %d times for one request, want 1", n)
	}
	waitEmpty(t, st, "CPCANCEL_REQUESTS")
	// The republished copies were dropped by the result stream: one result stored.
	if got := metricValue(t, st.svc.Registry(), "cpcancel_results_total", "outcome", "cancelling"); got != 1 {
		t.Errorf("cpcancel_results_total{outcome=cancelling} = %v, want 1", got)
	}
}

// TestTwoConsumersOneRequest runs two cpcancel instances on one durable consumer and gives them
// the same request twice at once: the API is called once.
func TestTwoConsumersOneRequest(t *testing.T) {
	st := startStack(t, map[string]string{"CPCANCEL_CONCURRENCY": "1"})
	second := startService(t, st.env(map[string]string{"CPCANCEL_CONCURRENCY": "1"}))
	st.emu.Inject(emulator.Fault{Delay: 500 * time.Millisecond})
	for round := range 5 {
		req := request(t, "/test", "raced-"+string(rune('a'+round)), "contoso", "race-offer-"+string(rune('a'+round)))
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { st.publish(t, natsce.Binary, req) })
		}
		wg.Wait()
	}
	waitEmpty(t, st, "CPCANCEL_REQUESTS") // every message settled
	st.waitStream(t, "CPCANCEL_RESULTS", 5, 30*time.Second)
	for round := range 5 {
		if n := st.emu.CancelCount("contoso", "race-offer-"+string(rune('a'+round))); n != 1 {
			t.Errorf("round %d: API called %d times, want 1", round, n)
		}
	}
	dups := metricValue(t, st.svc.Registry(), "cpcancel_duplicates_total") + metricValue(t, second.Registry(), "cpcancel_duplicates_total")
	if dups != 5 {
		t.Errorf("duplicates answered from the record = %v, want 5", dups)
	}
	t.Logf("messages handled: first instance %v, second %v",
		metricValue(t, st.svc.Registry(), "cpcancel_processing_duration_seconds"),
		metricValue(t, second.Registry(), "cpcancel_processing_duration_seconds"))
}

// waitMetric waits until a metric of the stack's service reaches want.
func waitMetric(t *testing.T, st *stack, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := metricValue(t, st.svc.Registry(), name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 20s, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
