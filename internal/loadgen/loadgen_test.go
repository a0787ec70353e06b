package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/loadgen"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// The names cpcancel uses by default, which a Stack's child therefore uses too.
var (
	defaults       = config.Default()
	requestStream  = defaults.Streams.RequestStream
	requestSubject = defaults.Streams.RequestSubject
	resultStream   = defaults.Streams.ResultStream
	resultPrefix   = defaults.Streams.ResultSubjectPrefix
)

// TestStackRun measures a real cpcancel child through the load tool's own stack: every request
// gets exactly one result, with the outcome the emulator's catalogue gives its offer.
func TestStackRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, js, stop := startStack(ctx, t)
	t.Run("accepted (202) is cancelling", func(t *testing.T) { runAll(ctx, t, js, "loadgen-offer", 300, "cancelling") })
	t.Run("synchronous (200) is cancelled", func(t *testing.T) { runAll(ctx, t, js, "sync-lg", 50, "cancelled") })

	if runtime.GOOS != "linux" {
		return // ChildPeakRSS reads /proc
	}
	rss, ok := s.ChildPeakRSS()
	t.Logf("cpcancel child peak RSS %.1f MiB", float64(rss)/(1<<20))
	// A Go process holding a NATS connection, an HTTP server and 8 workers needs more than 1 MiB
	// and, for a few hundred requests, far less than 1 GiB (even with -race).
	if !ok || rss < 1<<20 || rss > 1<<30 {
		t.Errorf("ChildPeakRSS() = %d, %t while the child runs; want 1 MiB to 1 GiB, true", rss, ok)
	}
	stop()
	if rss, ok := s.ChildPeakRSS(); ok {
		t.Errorf("ChildPeakRSS() = %d, true after stop; want false: the child should be gone", rss)
	}
}

// TestStackSeparateNATS runs nats-server as a child process of its own, as -nats-process does:
// the run works as with the embedded server, and each process's CPU is measured apart.
func TestStackSeparateNATS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU reads /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &loadgen.Stack{Concurrency: 8, SeparateNATS: true}
	js, stop, err := s.Start(ctx)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(stop)
	runAll(ctx, t, js, "loadgen-offer", 100, "cancelling")
	cpcancel, natsServer, self, ok := s.CPU()
	t.Logf("CPU: cpcancel %s, nats-server %s, this process %s", cpcancel, natsServer, self)
	// Every process did work for 100 requests; nats-server's is its own, not this process's.
	if !ok || cpcancel <= 0 || natsServer <= 0 || self <= 0 {
		t.Errorf("CPU() = %s, %s, %s, %t; want each positive, true", cpcancel, natsServer, self, ok)
	}
}

// TestStackRunStructuredResults is the -env CPCANCEL_RESULT_MODE=structured run the load tool
// offers: results carry their attributes in the body, not in ce- headers, and must count alike.
func TestStackRunStructuredResults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js, _ := startStack(ctx, t, "CPCANCEL_RESULT_MODE=structured")
	runAll(ctx, t, js, "loadgen-offer", 50, "cancelling")
}

// startStack starts a Stack of concurrency 8 whose cpcancel child gets env; stop (idempotent)
// stops it, and runs when the test ends in any case.
func startStack(ctx context.Context, t *testing.T, env ...string) (s *loadgen.Stack, js jetstream.JetStream, stop func()) {
	t.Helper()
	s = &loadgen.Stack{Concurrency: 8, Env: env}
	js, stopStack, err := s.Start(ctx)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	stop = sync.OnceFunc(stopStack)
	t.Cleanup(stop)
	return s, js, stop
}

// runAll runs requests for offer and checks that each got exactly one result, of outcome.
func runAll(ctx context.Context, t *testing.T, js jetstream.JetStream, offer string, requests int, outcome string) {
	t.Helper()
	const timeout = 20 * time.Second
	r, err := loadgen.Run(ctx, js, loadgen.Options{
		Requests: requests, Timeout: timeout, Offer: offer,
		RequestSubject: requestSubject, ResultStream: resultStream,
	})
	var printed strings.Builder
	r.Print(&printed)
	t.Logf("report:\n%s", printed.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkAll(t, r, requests, outcome)
	checkTimes(t, r, timeout)
}

// checkAll checks that each of requests got exactly one result, of outcome.
func checkAll(t *testing.T, r loadgen.Report, requests int, outcome string) {
	t.Helper()
	if r.Requests != requests || r.Results != requests || r.Lost != 0 || r.Duplicates != 0 {
		t.Errorf("requests %d results %d lost %d duplicated %d, want %d %d 0 0",
			r.Requests, r.Results, r.Lost, r.Duplicates, requests, requests)
	}
	if want := map[string]int{outcome: requests}; !maps.Equal(r.Outcomes, want) {
		t.Errorf("outcomes %v, want %v", r.Outcomes, want)
	}
}

// TestStackPrefill is -prefill: the load tool creates the streams and stores every request before
// cpcancel starts; cpcancel takes the streams as they are and answers every request once.
func TestStackPrefill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &loadgen.Stack{Concurrency: 8, Prefill: true, Env: []string{"CPCANCEL_RESULT_MODE=structured"}}
	js, stop, err := s.Start(ctx)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(stop)
	runPrefilled(ctx, t, s, js, 300)
}

// A consumer that exits (here cpcancel refusing its configuration) ends the run at once, saying
// so, instead of leaving it to wait for its timeout.
func TestConsumerExitEndsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bad := []string{"CPCANCEL_MAX_ATTEMPTS=0"}
	s := &loadgen.Stack{Concurrency: 8, Env: bad}
	if _, stop, err := s.Start(ctx); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Start with a consumer that exits: %v, want it to say the consumer exited", err)
		stop()
	}

	s = &loadgen.Stack{Concurrency: 8, Prefill: true, Env: bad}
	js, stop, err := s.Start(ctx)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(stop)
	_, err = loadgen.Run(ctx, js, loadgen.Options{
		Requests: 10, Timeout: time.Hour, Offer: "sync-exit", RequestSubject: requestSubject, ResultStream: resultStream,
		StartConsumer: s.StartConsumer, ConsumerExited: s.ConsumerExited(),
	})
	if err == nil || !strings.Contains(err.Error(), "consumer exited") {
		t.Errorf("Run with a consumer that exits: %v, want it to say the consumer exited", err)
	}
}

// TestStackPeer is -peer: another program, given only its environment, consumes the pre-filled
// requests instead of cpcancel, with a consumer of its own, and its structured results count.
func TestStackPeer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU reads /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The peer runs under sh -c: the test binary, quoted, run again as runPeer.
	s := &loadgen.Stack{Concurrency: 8, SeparateNATS: true, Env: []string{peerEnv + "=1"},
		Peer: "'" + strings.ReplaceAll(self, "'", `'\''`) + "'"}
	js, stop, err := s.Start(ctx)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(stop)
	if !s.Prefill {
		t.Error("Prefill unset after Start with a Peer; a peer implies it")
	}
	runPrefilled(ctx, t, s, js, 300)

	// The peer's own consumer holds the work queue; cpcancel's was never left there to compete.
	if _, err := js.Consumer(ctx, requestStream, loadgen.PeerConsumer); err != nil {
		t.Errorf("peer's consumer %s: %v", loadgen.PeerConsumer, err)
	}
	if _, err := js.Consumer(ctx, requestStream, defaults.Streams.Consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("cpcancel's consumer %s: error %v, want %v", defaults.Streams.Consumer, err, jetstream.ErrConsumerNotFound)
	}
	// The peer runs under a shell, which uses next to no CPU and memory itself: what is measured
	// must be the peer's too (a Go program that answered 300 requests).
	consumer, natsServer, _, ok := s.CPU()
	rss, rssOK := s.ChildPeakRSS()
	t.Logf("peer CPU %s, peak RSS %.1f MiB; nats-server CPU %s", consumer, float64(rss)/(1<<20), natsServer)
	if !ok || consumer <= 0 || natsServer <= 0 {
		t.Errorf("CPU() = %s (peer), %s (nats-server), ok %t; want each positive, true", consumer, natsServer, ok)
	}
	if !rssOK || rss < 4<<20 || rss > 1<<30 {
		t.Errorf("ChildPeakRSS() = %d, %t; want 4 MiB to 1 GiB, true", rss, rssOK)
	}
	if s.ConsumerName() != "peer" {
		t.Errorf("ConsumerName() = %q, want peer", s.ConsumerName())
	}
}

// runPrefilled runs requests on a Stack with Prefill: every request must be in the request stream
// when the consumer starts, and get exactly one result (the emulator accepts: cancelling).
func runPrefilled(ctx context.Context, t *testing.T, s *loadgen.Stack, js jetstream.JetStream, requests int) {
	t.Helper()
	const timeout = 20 * time.Second
	var stored uint64
	r, err := loadgen.Run(ctx, js, loadgen.Options{
		Requests: requests, Timeout: timeout, Offer: "loadgen-offer",
		RequestSubject: requestSubject, ResultStream: resultStream,
		StartConsumer: func() error {
			stored = requestStreamState(t, js).Msgs
			return s.StartConsumer()
		},
	})
	var printed strings.Builder
	r.Print(&printed)
	t.Logf("report:\n%s", printed.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if stored != uint64(requests) {
		t.Errorf("%d requests in the stream when the consumer started, want all %d", stored, requests)
	}
	checkAll(t, r, requests, "cancelling")
	// Elapsed runs from the consumer's start, after every publish: the last result's latency,
	// which ran from its publish, is longer.
	if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max && r.Max < timeout) {
		t.Errorf("latencies p50 %s p90 %s p99 %s max %s, want 0 < p50 <= p90 <= p99 <= max < %s",
			r.P50, r.P90, r.P99, r.Max, timeout)
	}
	if r.Elapsed <= 0 || r.Elapsed > r.Max {
		t.Errorf("elapsed %s, want in (0, max latency %s]", r.Elapsed, r.Max)
	}
}

// checkTimes checks that the report's latencies and throughput are those of a run that worked.
func checkTimes(t *testing.T, r loadgen.Report, timeout time.Duration) {
	t.Helper()
	if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max && r.Max < timeout) {
		t.Errorf("latencies p50 %s p90 %s p99 %s max %s, want 0 < p50 <= p90 <= p99 <= max < %s",
			r.P50, r.P90, r.P99, r.Max, timeout)
	}
	if r.Elapsed <= 0 || r.Elapsed > timeout || r.Max > r.Elapsed {
		t.Errorf("elapsed %s (max latency %s), want in [max latency, %s]", r.Elapsed, r.Max, timeout)
	}
	if r.Throughput() <= 0 {
		t.Errorf("throughput %f, want > 0", r.Throughput())
	}
}

// startBroker runs a JetStream server with cpcancel's streams and consumer provisioned and
// nothing consuming; it returns the consumer for a test to play cpcancel with, if it likes.
func startBroker(t *testing.T) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bound, err := broker.Provision(ctx, js, broker.Topology{
		RequestStream: requestStream, RequestSubject: requestSubject,
		ResultStream: resultStream, ResultSubjectPrefix: resultPrefix,
		DeadLetterStream: defaults.Streams.DeadLetterStream, DeadLetterSubject: defaults.Streams.DeadLetterSubject,
		Consumer: defaults.Streams.Consumer, AckWait: 30 * time.Second,
		RequestMaxBytes: 64 << 20, ResultMaxBytes: 64 << 20, DeadLetterMaxBytes: 64 << 20,
		Bucket: defaults.Idempotency.Bucket, BucketTTL: time.Hour, BucketMaxBytes: 64 << 20,
	})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return js, bound.Requests
}

// published is how many requests ever reached the request stream (a work queue: its last
// sequence, not its current count).
func published(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	return requestStreamState(t, js).LastSeq
}

// requestStreamState is the request stream's state now.
func requestStreamState(t *testing.T, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, requestStream)
	if err != nil {
		t.Fatalf("request stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("request stream info: %v", err)
	}
	return info.State
}

func TestRunRejectsRequestCount(t *testing.T) {
	t.Parallel()
	js, _ := startBroker(t)
	for _, n := range []int{-1, 0, 10_000_001} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			// A Timeout this long would show as a hung test if Run waited instead of refusing.
			r, err := loadgen.Run(context.Background(), js, loadgen.Options{
				Requests: n, Timeout: time.Minute, Offer: "sync-lg",
				RequestSubject: requestSubject, ResultStream: resultStream,
			})
			if err == nil {
				t.Errorf("Run with %d requests: no error, report %+v", n, r)
			}
		})
	}
	if n := published(t, js); n != 0 {
		t.Errorf("%d requests published, want none", n)
	}
}

// TestRunReportsLoss runs with nothing consuming the requests: Run gives up at its Timeout and
// reports every result lost, with no throughput and no latency.
func TestRunReportsLoss(t *testing.T) {
	t.Parallel()
	js, _ := startBroker(t)
	const requests, timeout = 5, time.Second
	start := time.Now()
	r, err := loadgen.Run(context.Background(), js, loadgen.Options{
		Requests: requests, Timeout: timeout, Offer: "sync-lg",
		RequestSubject: requestSubject, ResultStream: resultStream,
	})
	took := time.Since(start)
	if err == nil {
		t.Error("Run: no error although no result came")
	}
	if r.Requests != requests || r.Results != 0 || r.Lost != requests || r.Duplicates != 0 || len(r.Outcomes) != 0 {
		t.Errorf("report %+v, want %d requests, all lost, nothing else", r, requests)
	}
	if r.P50 != 0 || r.Max != 0 || r.Elapsed < 0 || r.Throughput() != 0 {
		t.Errorf("p50 %s max %s elapsed %s throughput %f, want 0, 0, >= 0, 0", r.P50, r.Max, r.Elapsed, r.Throughput())
	}
	if n := published(t, js); n != requests {
		t.Errorf("%d requests published, want %d", n, requests)
	}
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("Run took %s, want its Timeout %s and a little more", took, timeout)
	}
}

// TestRunCountsResults plays cpcancel on a real JetStream server, misbehaving on purpose: some
// requests get no result, some two, and results that are not the run's are in the stream too.
// The report must count each case exactly.
func TestRunCountsResults(t *testing.T) {
	t.Parallel()
	js, c := startBroker(t)
	const requests = 20
	// Request i: i%10 == 3 gets no result, i%10 == 7 gets two; even ones are cancelled, odd failed.
	wantOutcomes := map[string]int{"cancelled": 10, "failed": 8}
	const wantLost, wantDuplicates = 2, 2

	var mu sync.Mutex
	var responderErr error
	cc, err := c.Consume(func(m jetstream.Msg) {
		err := respond(js, m)
		if err == nil {
			err = m.Ack()
		}
		if err != nil {
			mu.Lock()
			responderErr = err
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("consume requests: %v", err)
	}
	defer cc.Stop()

	r, err := loadgen.Run(context.Background(), js, loadgen.Options{
		Requests: requests, Timeout: time.Second, Offer: "counted",
		RequestSubject: requestSubject, ResultStream: resultStream,
	})
	mu.Lock()
	if responderErr != nil {
		t.Fatalf("responder: %v", responderErr)
	}
	mu.Unlock()
	if err == nil {
		t.Error("Run: no error although results are missing")
	}
	if r.Requests != requests || r.Results != requests-wantLost || r.Lost != wantLost || r.Duplicates != wantDuplicates {
		t.Errorf("requests %d results %d lost %d duplicated %d, want %d %d %d %d",
			r.Requests, r.Results, r.Lost, r.Duplicates, requests, requests-wantLost, wantLost, wantDuplicates)
	}
	if !maps.Equal(r.Outcomes, wantOutcomes) {
		t.Errorf("outcomes %v, want %v", r.Outcomes, wantOutcomes)
	}
	checkTimes(t, r, time.Second)
}

// respond publishes the result(s) TestRunCountsResults wants for the request m, as cpcancel
// would in binary mode.
func respond(js jetstream.JetStream, m jetstream.Msg) error {
	i, err := strconv.Atoi(m.Headers().Get("ce-id"))
	if err != nil {
		return err
	}
	var req struct{ PublisherID, OfferID string }
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		return err
	}
	outcome := "cancelled"
	if i%2 == 1 {
		outcome = "failed"
	}
	result := func(subject string) *nats.Msg {
		return &nats.Msg{Subject: resultPrefix + "." + outcome, Header: nats.Header{
			"ce-specversion": {"1.0"},
			"ce-type":        {"cloudpartner.offer.cancel." + outcome},
			"ce-source":      {"/cpcancel"},
			"ce-id":          {nats.NewInbox()},
			"ce-subject":     {subject},
		}, Data: []byte("{}")}
	}
	own := "publishers/" + req.PublisherID + "/offers/" + req.OfferID
	var out []*nats.Msg
	switch i % 10 {
	case 3:
	case 7:
		out = append(out, result(own), result(own))
	default:
		out = append(out, result(own))
	}
	if i == 0 {
		// Not this run's: another publisher, an index past the run's end, an index that is no number.
		prefix := strings.TrimSuffix(own, "0")
		out = append(out, result("publishers/someone-else/offers/"+req.OfferID),
			result(prefix+strconv.Itoa(20)), result(prefix+"x"), result(prefix+"-1"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, msg := range out {
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return err
		}
	}
	return nil
}

func TestPrint(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    loadgen.Report
		want string
	}{{
		name: "results",
		r: loadgen.Report{
			Requests: 300, Results: 299, Lost: 1, Duplicates: 2,
			Outcomes: map[string]int{"cancelling": 290, "cancelled": 8, "failed": 1},
			Elapsed:  2 * time.Second,
			P50:      1234567 * time.Nanosecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, Max: 40 * time.Millisecond,
		},
		want: "requests 300  results 299  lost 1  duplicated 2\n" +
			"outcomes: cancelled 8, cancelling 290, failed 1\n" +
			"elapsed 2s  throughput 150 requests/s\n" +
			"latency published -> result stored: p50 1.23ms  p90 2ms  p99 3ms  max 40ms\n",
	}, {
		name: "nothing came",
		r:    loadgen.Report{Requests: 5, Lost: 5},
		want: "requests 5  results 0  lost 5  duplicated 0\n" +
			"outcomes: \n" +
			"elapsed 0s  throughput 0 requests/s\n" +
			"latency published -> result stored: p50 0s  p90 0s  p99 0s  max 0s\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tc.r.Print(&b)
			if b.String() != tc.want {
				t.Errorf("Print wrote\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestPrintProcesses(t *testing.T) {
	f := loadgen.Figures{Consumer: "cpcancel", PeakRSS: 55 << 20, CPU: []loadgen.ProcessCPU{
		{"cpcancel", 121549 * time.Nanosecond}, {"nats-server", 76500 * time.Nanosecond}, {"load tool and emulator", 58 * time.Microsecond},
	}}
	var b bytes.Buffer
	f.PrintProcesses(&b)
	want := "cpcancel peak RSS 55.0 MiB\n" +
		"CPU per result: cpcancel 121.5µs  nats-server 76.5µs  load tool and emulator 58µs\n"
	if b.String() != want {
		t.Errorf("PrintProcesses wrote\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	loadgen.Figures{Consumer: "peer"}.PrintProcesses(&b)
	if b.Len() != 0 {
		t.Errorf("PrintProcesses of nothing measured wrote %q, want nothing", b.String())
	}
}
