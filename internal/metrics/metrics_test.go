package metrics

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestObserveAPIRequestByOperation(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Build{Version: "test", Revision: "test"})
	m.ObserveAPIRequest(context.Background(), "cancel", "202", 40*time.Millisecond)
	m.ObserveAPIRequest(context.Background(), "cancel", "503", 2*time.Second)
	m.ObserveAPIRequest(context.Background(), "status", "200", 10*time.Millisecond)
	m.ObserveAPIRequest(context.Background(), "status", "200", 20*time.Millisecond)
	m.ObserveAPIRequest(context.Background(), "status", "error", 30*time.Second)

	want := `
# HELP cpcancel_api_requests_total Cloud Partner API responses by operation ("cancel": the Cancel POST, "status": a poll of the operation it started) and HTTP status code (code="error" when no response was received).
# TYPE cpcancel_api_requests_total counter
cpcancel_api_requests_total{code="202",operation="cancel"} 1
cpcancel_api_requests_total{code="503",operation="cancel"} 1
cpcancel_api_requests_total{code="200",operation="status"} 2
cpcancel_api_requests_total{code="error",operation="status"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cpcancel_api_requests_total"); err != nil {
		t.Error(err)
	}
	counts := map[string]uint64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "cpcancel_api_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			var key []string
			for _, l := range s.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			counts[strings.Join(key, ",")] = s.GetHistogram().GetSampleCount()
		}
	}
	want2 := map[string]uint64{
		"code=202,operation=cancel": 1, "code=503,operation=cancel": 1,
		"code=200,operation=status": 2, "code=error,operation=status": 1,
	}
	if !maps.Equal(counts, want2) {
		t.Errorf("duration observations %v, want %v", counts, want2)
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Build{Version: "test", Revision: "test"}, "cancelled", "failed")
	m.ObserveAPIRequest(context.Background(), "cancel", "202", time.Millisecond)
	m.ObserveThrottle("rate", time.Millisecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, namespace+"_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func TestConcurrencyLimit(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		limit, floor, ceiling int
	}{
		{"adaptive", 300, 8, 2048},
		{"fixed", 128, 128, 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			limit := tc.floor
			RegisterConcurrencyLimit(reg, func() int { return limit }, tc.floor, tc.ceiling)
			limit = tc.limit // read at the scrape, not at registration
			want := fmt.Sprintf(`
# HELP cpcancel_concurrency_limit Requests that may be in flight now: the adaptive limit, between CPCANCEL_CONCURRENCY_MIN and CPCANCEL_CONCURRENCY.
# TYPE cpcancel_concurrency_limit gauge
cpcancel_concurrency_limit %d
# HELP cpcancel_concurrency_limit_max The ceiling of the adaptive concurrency limit (CPCANCEL_CONCURRENCY); equal to the floor when the limit is fixed.
# TYPE cpcancel_concurrency_limit_max gauge
cpcancel_concurrency_limit_max %d
# HELP cpcancel_concurrency_limit_min The floor of the adaptive concurrency limit, where it starts (CPCANCEL_CONCURRENCY_MIN, at most CPCANCEL_CONCURRENCY).
# TYPE cpcancel_concurrency_limit_min gauge
cpcancel_concurrency_limit_min %d
`, tc.limit, tc.ceiling, tc.floor)
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
				"cpcancel_concurrency_limit", "cpcancel_concurrency_limit_min", "cpcancel_concurrency_limit_max"); err != nil {
				t.Error(err)
			}
			problems, err := testutil.GatherAndLint(reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("%s: %s", p.Metric, p.Text)
			}
		})
	}
}
