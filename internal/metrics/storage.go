package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StreamUsage is what one JetStream stream holds, and the most it may hold.
type StreamUsage struct {
	Stream   string
	Bytes    uint64 // stored, as JetStream counts them (payload, headers, subjects, overhead)
	MaxBytes uint64 // the stream's limit; 0 when it has none
	Messages uint64
}

// storageTimeout bounds one read of the usage at scrape time: a slow or absent JetStream must not
// hold up the rest of /metrics.
const storageTimeout = 2 * time.Second

// storageCollector reads stream usage when scraped.
type storageCollector struct {
	usage                     func(context.Context) ([]StreamUsage, error)
	bytes, maxBytes, messages *prometheus.Desc
	errors                    prometheus.Counter
}

// RegisterStorage registers, on reg, gauges of how full the streams are, read through usage at
// each scrape (within 2s): cpcancel_stream_bytes, cpcancel_stream_max_bytes (0 when unlimited)
// and cpcancel_stream_messages, labelled by stream. When usage fails that scrape exports none of
// them and cpcancel_stream_usage_errors_total counts it.
func RegisterStorage(reg prometheus.Registerer, usage func(ctx context.Context) ([]StreamUsage, error)) {
	labels := []string{"stream"}
	reg.MustRegister(&storageCollector{
		usage: usage,
		bytes: prometheus.NewDesc(namespace+"_stream_bytes",
			"Bytes stored in a JetStream stream cpcancel uses (the idempotency bucket's is KV_<bucket>).", labels, nil),
		maxBytes: prometheus.NewDesc(namespace+"_stream_max_bytes",
			"The stream's limit on stored bytes; 0 when it has none.", labels, nil),
		messages: prometheus.NewDesc(namespace+"_stream_messages",
			"Messages stored in the stream.", labels, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "stream_usage_errors_total",
			Help: "Scrapes whose read of the streams' usage failed or timed out; they exported no cpcancel_stream_* gauges.",
		}),
	})
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.maxBytes
	ch <- c.messages
	c.errors.Describe(ch)
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	streams, err := c.usage(ctx)
	if err != nil {
		c.errors.Inc()
	} else {
		for _, s := range streams {
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes), s.Stream)
			ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(s.MaxBytes), s.Stream)
			ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(s.Messages), s.Stream)
		}
	}
	ch <- c.errors
}
