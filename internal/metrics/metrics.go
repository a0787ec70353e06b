// Package metrics defines every Prometheus metric cpcancel exports (docs/contract.md §6). Metrics live on a
// registry passed in, so tests read them from a fresh one; ids are never label values.
package metrics

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

const namespace = "cpcancel"

// Build identifies the running binary in cpcancel_build_info.
type Build struct {
	Version, Revision string
}

// Metrics records what the service does. All methods are safe for concurrent use.
type Metrics struct {
	apiRequests  *prometheus.CounterVec
	apiDuration  *prometheus.HistogramVec
	results      *prometheus.CounterVec
	deadLetters  prometheus.Counter
	duplicates   prometheus.Counter
	retries      prometheus.Counter
	redeliveries prometheus.Counter
	throttled    *prometheus.CounterVec
	throttleWait *prometheus.HistogramVec
	inFlight     prometheus.Gauge
	processing   prometheus.Histogram
}

// New creates the metrics and registers them, with the build info and the Go and process
// collectors, on reg. outcomes are pre-set to zero so dashboards show them from the start.
func New(reg prometheus.Registerer, build Build, outcomes ...string) *Metrics {
	m := &Metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_requests_total",
			Help: "Cloud Partner API responses by operation (\"cancel\": the Cancel POST, \"status\": a poll of the operation it started) and HTTP status code (code=\"error\" when no response was received).",
		}, []string{"operation", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "api_request_duration_seconds",
			Help:    "Duration of Cloud Partner API calls by operation (\"cancel\" or \"status\") and HTTP status code.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"operation", "code"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_total",
			Help: "Result events stored in the result stream, by outcome.",
		}, []string{"outcome"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "dead_letters_total",
			Help: "Messages moved to the dead-letter subject because they are not cancel requests.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "duplicates_total",
			Help: "Requests answered from their idempotency record, without calling the API.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "retries_total",
			Help: "Requests handed back to JetStream for a delayed retry after a transient failure.",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "redeliveries_total",
			Help: "Request messages received more than once.",
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_throttled_total",
			Help: "API calls held back by cpcancel's own limits (limit=\"rate\": CPCANCEL_API_RATE_LIMIT, \"concurrency\": CPCANCEL_API_CONCURRENCY).",
		}, []string{"limit"}),
		throttleWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "api_throttle_wait_seconds",
			Help:    "Time API calls waited for cpcancel's own limits.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"limit"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "in_flight_requests",
			Help: "Requests being processed now.",
		}),
		processing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "processing_duration_seconds",
			Help:    "Time from receiving a request message to settling it (ack, nak or term).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; labels identify the running build.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	for _, o := range outcomes {
		m.results.WithLabelValues(o)
	}
	reg.MustRegister(m.apiRequests, m.apiDuration, m.results, m.deadLetters, m.duplicates, m.retries, m.redeliveries,
		m.throttled, m.throttleWait, m.inFlight, m.processing, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveAPIRequest counts one API exchange. operation is "cancel" for the Cancel POST and
// "status" for a poll of the operation it started (a GET of the 202's Location); code is the HTTP
// status or "error" when no response was received. When ctx carries a sampled span, its trace id
// is the observation's exemplar.
func (m *Metrics) ObserveAPIRequest(ctx context.Context, operation, code string, elapsed time.Duration) {
	m.apiRequests.WithLabelValues(operation, code).Inc()
	observe(ctx, m.apiDuration.WithLabelValues(operation, code), elapsed.Seconds())
}

// observe observes v, with ctx's trace id as the exemplar when ctx carries a sampled span.
func observe(ctx context.Context, o prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}

// ObserveThrottle counts an API call held back by a limit, and how long it waited.
func (m *Metrics) ObserveThrottle(limit string, waited time.Duration) {
	m.throttled.WithLabelValues(limit).Inc()
	m.throttleWait.WithLabelValues(limit).Observe(waited.Seconds())
}

// ResultStored counts a result event whose publish was acknowledged by JetStream.
func (m *Metrics) ResultStored(outcome string) { m.results.WithLabelValues(outcome).Inc() }

// DeadLettered counts a message moved to the dead-letter subject.
func (m *Metrics) DeadLettered() { m.deadLetters.Inc() }

// Duplicate counts a request answered from its idempotency record.
func (m *Metrics) Duplicate() { m.duplicates.Inc() }

// Retried counts a request handed back for a delayed retry.
func (m *Metrics) Retried() { m.retries.Inc() }

// Received notes a request message being taken up; it returns a func to call once it is settled,
// with the context of its span when it is traced (the exemplar of the processing time).
func (m *Metrics) Received(numDelivered uint64) (done func(ctx context.Context)) {
	if numDelivered > 1 {
		m.redeliveries.Inc()
	}
	m.inFlight.Inc()
	start := time.Now()
	return func(ctx context.Context) {
		m.inFlight.Dec()
		observe(ctx, m.processing, time.Since(start).Seconds())
	}
}

// Handler serves the metrics gathered from g in the Prometheus exposition format, or in
// OpenMetrics when the scraper asks for it (the format that carries exemplars).
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// RegisterConcurrencyLimit registers, on reg, the gauge cpcancel_concurrency_limit: how many
// requests may be in flight now, read through limit at each scrape; and beside it the gauges
// cpcancel_concurrency_limit_min and cpcancel_concurrency_limit_max, the floor and ceiling the
// limit stays between (equal when the limit is fixed), so that a rule can tell a limit held at its
// floor from one that is fixed there.
func RegisterConcurrencyLimit(reg prometheus.Registerer, limit func() int, floor, ceiling int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "concurrency_limit",
		Help: "Requests that may be in flight now: the adaptive limit, between CPCANCEL_CONCURRENCY_MIN and CPCANCEL_CONCURRENCY.",
	}, func() float64 { return float64(limit()) }))
	bound := func(name, help string, v int) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
		g.Set(float64(v))
		return g
	}
	reg.MustRegister(
		bound("concurrency_limit_min", "The floor of the adaptive concurrency limit, where it starts (CPCANCEL_CONCURRENCY_MIN, at most CPCANCEL_CONCURRENCY).", floor),
		bound("concurrency_limit_max", "The ceiling of the adaptive concurrency limit (CPCANCEL_CONCURRENCY); equal to the floor when the limit is fixed.", ceiling),
	)
}
