package service_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

// TestAdaptiveLimitInThrottleStorm checks that when the API throttles half of the calls, the
// adaptive limit backs off to its floor and sends the API far fewer calls per second than a
// fixed limit at the same ceiling, which keeps every worker calling into the storm.
func TestAdaptiveLimitInThrottleStorm(t *testing.T) {
	const ceiling = "128"
	storm := func(t *testing.T, env map[string]string, wantFloor, wantCeiling float64) (callsPerSecond, limit float64) {
		st := newStack(t, emulator.Options{Latency: 50 * time.Millisecond})
		st.emu.SetRates(emulator.Rates{Throttle: 0.5, RetryAfter: "1"})
		st.svc = startService(t, st.env(env))
		// The bounds the alert CpcancelConcurrencyAtFloor compares the limit with.
		for name, want := range map[string]float64{"cpcancel_concurrency_limit_min": wantFloor, "cpcancel_concurrency_limit_max": wantCeiling} {
			if got := metricValue(t, st.svc.Registry(), name); got != want {
				t.Errorf("%s = %v with %v, want %v", name, got, env, want)
			}
		}
		for i := range 3000 {
			hdr, body, err := natsce.Encode(context.Background(), request(t, "/test", fmt.Sprintf("storm-%d", i), "contoso", "sync-offer"), natsce.Binary)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.js.PublishMsgAsync(&nats.Msg{Subject: "cloudpartner.cancel.requests", Header: hdr, Data: body}); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-st.js.PublishAsyncComplete():
		case <-time.After(20 * time.Second):
			t.Fatal("requests not stored within 20s")
		}
		time.Sleep(500 * time.Millisecond) // the limit has found its level
		from := time.Now()
		time.Sleep(2 * time.Second)
		to := time.Now()
		n := 0
		for _, c := range st.emu.Calls() {
			if !c.At.Before(from) && c.At.Before(to) {
				n++
			}
		}
		return float64(n) / to.Sub(from).Seconds(), metricValue(t, st.svc.Registry(), "cpcancel_concurrency_limit")
	}
	var fixed, adaptive, fixedLimit, adaptiveLimit float64
	t.Run("fixed", func(t *testing.T) {
		fixed, fixedLimit = storm(t, map[string]string{"CPCANCEL_CONCURRENCY": ceiling, "CPCANCEL_CONCURRENCY_MIN": ceiling}, 128, 128)
	})
	t.Run("adaptive", func(t *testing.T) {
		adaptive, adaptiveLimit = storm(t, map[string]string{"CPCANCEL_CONCURRENCY": ceiling}, 8, 128)
	})
	t.Logf("API calls per second in the storm: fixed limit %.0f (limit %v), adaptive %.0f (limit %v)",
		fixed, fixedLimit, adaptive, adaptiveLimit)
	if fixedLimit != 128 {
		t.Errorf("cpcancel_concurrency_limit = %v with CPCANCEL_CONCURRENCY_MIN = CPCANCEL_CONCURRENCY = 128, want 128", fixedLimit)
	}
	if adaptiveLimit < 8 || adaptiveLimit > 32 {
		t.Errorf("cpcancel_concurrency_limit = %v in the storm, want near the floor 8", adaptiveLimit)
	}
	if adaptive == 0 || adaptive > fixed/2 {
		t.Errorf("adaptive limit sent %.0f calls/s into the storm, fixed %.0f: want fewer than half", adaptive, fixed)
	}
}
