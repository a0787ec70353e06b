// Package loadgen measures cpcancel end to end: it publishes cancel requests, waits until every
// result is stored, and reports throughput, latency percentiles, lost and duplicated results.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
)

// Options describes one load run.
type Options struct {
	// Requests is how many requests to publish (bounded: at most 10 million).
	Requests int
	// Rate is the offered load in requests/s; 0 publishes as fast as possible.
	Rate float64
	// Timeout bounds the whole run.
	Timeout time.Duration
	// RequestSubject and ResultStream are where requests go and results are read.
	RequestSubject, ResultStream string
	// Offer prefixes every request's offer id (the emulator's catalogue decides the outcome).
	Offer string
	// StartConsumer, when set, is called once every request is stored (all publishes
	// acknowledged), to start what consumes them: the run then measures a pre-filled stream.
	StartConsumer func() error
	// ConsumerExited, when closed, ends the run: what consumes has exited.
	ConsumerExited <-chan struct{}
}

// Report is what a run measured.
type Report struct {
	Requests, Results, Lost, Duplicates int
	// Outcomes counts the first result of each request by its outcome (the last part of its type).
	Outcomes map[string]int
	// Elapsed runs from the first publish, or from StartConsumer's call when set, to the last
	// result stored; 0 when no result was.
	Elapsed time.Duration
	// Latencies run from each request's publish to its first result stored: with StartConsumer,
	// they include the wait in the stream.
	P50, P90, P99, Max time.Duration
}

// Throughput is results stored per second; 0 when no result was.
func (r Report) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Results) / r.Elapsed.Seconds()
}

// Print writes the report for a person.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "requests %d  results %d  lost %d  duplicated %d\n", r.Requests, r.Results, r.Lost, r.Duplicates)
	outcomes := slices.Sorted(maps.Keys(r.Outcomes))
	for i, o := range outcomes {
		outcomes[i] = fmt.Sprintf("%s %d", o, r.Outcomes[o])
	}
	fmt.Fprintf(w, "outcomes: %s\n", strings.Join(outcomes, ", "))
	fmt.Fprintf(w, "elapsed %s  throughput %.0f requests/s\n", r.Elapsed.Round(time.Millisecond), r.Throughput())
	fmt.Fprintf(w, "latency published -> result stored: p50 %s  p90 %s  p99 %s  max %s\n",
		r.P50.Round(10*time.Microsecond), r.P90.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond))
}

// Run publishes the requests on js and waits for their results. Each request names its own offer,
// <Offer>-<run>-<n>, so that results are matched by their subject attribute: the ce-subject header
// of a binary-mode result, read without decoding, or the subject of a structured one.
func Run(ctx context.Context, js jetstream.JetStream, o Options) (Report, error) {
	if o.Requests < 1 || o.Requests > 10_000_000 {
		return Report{}, fmt.Errorf("requests must be 1 to 10000000, got %d", o.Requests)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	run := strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	offerPrefix := "publishers/loadgen/offers/" + o.Offer + "-" + run + "-"

	var mu sync.Mutex
	sent := make([]time.Time, o.Requests)
	seen := make([]int, o.Requests)
	latencies := make([]time.Duration, 0, o.Requests)
	outcomes := map[string]int{}
	var last time.Time
	all := make(chan struct{})
	results := 0

	c, err := js.OrderedConsumer(ctx, o.ResultStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return Report{}, fmt.Errorf("watch results: %w", err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		subject, typ := m.Headers().Get("ce-subject"), m.Headers().Get("ce-type")
		if subject == "" {
			// A structured result (CPCANCEL_RESULT_MODE=structured) has its attributes in the body.
			var ev struct{ Subject, Type string }
			if json.Unmarshal(m.Data(), &ev) != nil {
				return
			}
			subject, typ = ev.Subject, ev.Type
		}
		n, ok := strings.CutPrefix(subject, offerPrefix)
		if !ok {
			return
		}
		i, err := strconv.Atoi(n)
		if err != nil || i < 0 || i >= o.Requests {
			return
		}
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[i]++; seen[i] > 1 {
			return
		}
		latencies = append(latencies, meta.Timestamp.Sub(sent[i]))
		outcomes[string(cancelevent.OutcomeOf(typ))]++
		last = meta.Timestamp
		if results++; results == o.Requests {
			close(all)
		}
	})
	if err != nil {
		return Report{}, fmt.Errorf("watch results (is the result stream %s there?): %w", o.ResultStream, err)
	}
	defer cc.Stop()

	start := time.Now()
	if err := publish(ctx, js, o, run, func(i int, t time.Time) {
		mu.Lock()
		sent[i] = t
		mu.Unlock()
	}); err != nil {
		return Report{}, err
	}
	if o.StartConsumer != nil {
		start = time.Now()
		if err := o.StartConsumer(); err != nil {
			return Report{}, err
		}
	}
	exited := false
	select {
	case <-all:
	case <-ctx.Done():
	case <-o.ConsumerExited:
		exited = true
	}
	// Let late duplicates show up before counting.
	time.Sleep(200 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	// A result arriving while the caller reads the report must not touch its outcomes: Run's
	// consumer may still be delivering until its deferred Stop.
	r := Report{Requests: o.Requests, Results: results, Outcomes: maps.Clone(outcomes)}
	if results > 0 {
		r.Elapsed = last.Sub(start)
	}
	for _, n := range seen {
		if n == 0 {
			r.Lost++
		} else {
			r.Duplicates += n - 1
		}
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		at := func(q float64) time.Duration { return latencies[min(len(latencies)-1, int(q*float64(len(latencies))))] }
		r.P50, r.P90, r.P99, r.Max = at(.50), at(.90), at(.99), latencies[len(latencies)-1]
	}
	switch {
	case r.Lost > 0 && exited:
		return r, fmt.Errorf("%d of %d results missing: the consumer exited (its error is above)", r.Lost, o.Requests)
	case r.Lost > 0:
		return r, fmt.Errorf("%d of %d results missing after %s", r.Lost, o.Requests, o.Timeout)
	}
	return r, nil
}

// publish sends binary-mode request events asynchronously, with a bounded window of
// unacknowledged publishes, paced to o.Rate when it is set.
func publish(ctx context.Context, js jetstream.JetStream, o Options, run string, sentAt func(int, time.Time)) error {
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	source := "/cpcancel/loadgen/" + run
	start := time.Now()
	for i := range o.Requests {
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
		id := strconv.Itoa(i)
		msg := &nats.Msg{
			Subject: o.RequestSubject,
			Header: nats.Header{
				"ce-specversion":     {"1.0"},
				"ce-type":            {cancelevent.RequestType},
				"ce-source":          {source},
				"ce-id":              {id},
				"ce-datacontenttype": {"application/json"},
			},
			Data: []byte(`{"publisherId":"loadgen","offerId":"` + o.Offer + "-" + run + "-" + id + `"}`),
		}
		sentAt(i, time.Now())
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publish request %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return errors.New("publish acks did not all arrive in time")
	}
}
