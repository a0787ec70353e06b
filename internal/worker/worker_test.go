package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	streamName   = "REQUESTS"
	consumerName = "workers"
	subject      = "requests.test"
)

// env is a work-queue stream with a durable pull consumer, on an embedded server or cluster.
type env struct {
	ns       *natstest.Server // nil on a cluster
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	consumer jetstream.Consumer
	dropped  atomic.Int32 // slow-consumer errors: messages nats.go dropped
}

// newEnv starts a server with a stream and a consumer whose AckWait is ackWait.
func newEnv(t *testing.T, ackWait time.Duration) *env {
	t.Helper()
	ns := natstest.Start(t)
	e := connectEnv(t, ns.ClientURL(), 1, ackWait)
	e.ns = ns
	return e
}

// connectEnv connects to urls, reconnecting for ever, and creates the stream and the consumer with
// replicas copies each.
func connectEnv(t *testing.T, urls string, replicas int, ackWait time.Duration) *env {
	t.Helper()
	e := &env{}
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				e.dropped.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"requests.>"}, Replicas: replicas,
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: consumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1,
		Replicas: replicas,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.nc, e.js, e.stream, e.consumer = nc, js, stream, consumer
	return e
}

func (e *env) publish(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		if _, err := e.js.Publish(ctx, subject, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// msgsInStream is how many messages the stream holds: in a work queue, those not acked or termed.
func (e *env) msgsInStream(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *env) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.consumer.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// running is a pool's Run in its own goroutine; the test's end stops it and waits for it.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, p *worker.Pool, decide worker.DecideFunc) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx, decide) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// wait returns Run's result, failing the test if it takes longer than timeout.
func (r *running) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %s", timeout)
		return nil
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func meta(t *testing.T, msg jetstream.Msg) *jetstream.MsgMetadata {
	t.Helper()
	md, err := msg.Metadata()
	if err != nil {
		t.Error(err)
		return &jetstream.MsgMetadata{}
	}
	return md
}

// settlement is one call of Config.Settled.
type settlement struct {
	seq          uint64
	numDelivered uint64
	d            worker.Decision
	err          error
}

// recorder collects settlements.
type recorder struct {
	mu  sync.Mutex
	all []settlement
}

func (r *recorder) settled(msg jetstream.Msg, d worker.Decision, err error) {
	md, _ := msg.Metadata()
	s := settlement{d: d, err: err}
	if md != nil {
		s.seq, s.numDelivered = md.Sequence.Stream, md.NumDelivered
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, s)
}

func (r *recorder) list() []settlement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]settlement(nil), r.all...)
}

func TestDecisionsSettle(t *testing.T) {
	const ackWait = time.Second
	for _, tc := range []struct {
		name  string
		first worker.Decision
		// redelivered: whether a second delivery must come, at least delay after the first.
		redelivered bool
		delay       time.Duration
	}{
		{name: "ack", first: worker.Ack()},
		{name: "nak with delay", first: worker.Nak(300*time.Millisecond, "later"), redelivered: true, delay: 300 * time.Millisecond},
		{name: "nak at once", first: worker.Nak(0, "again"), redelivered: true},
		{name: "term", first: worker.Term("unfit")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, ackWait)
			rec := &recorder{}
			p := worker.New(e.consumer, worker.Config{Concurrency: 2, Grace: time.Second, Settled: rec.settled})
			type delivery struct {
				at           time.Time
				numDelivered uint64
			}
			deliveries := make(chan delivery, 10)
			run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
				md := meta(t, msg)
				deliveries <- delivery{time.Now(), md.NumDelivered}
				if md.NumDelivered == 1 {
					return tc.first
				}
				return worker.Ack()
			})
			e.publish(t, 1)

			var first delivery
			select {
			case first = <-deliveries:
			case <-time.After(10 * time.Second):
				t.Fatal("not delivered")
			}
			if tc.redelivered {
				select {
				case second := <-deliveries:
					if second.numDelivered != 2 {
						t.Errorf("second delivery has NumDelivered %d, want 2", second.numDelivered)
					}
					if gap := second.at.Sub(first.at); gap < tc.delay {
						t.Errorf("redelivered %s after the first delivery, before the %s delay", gap, tc.delay)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("not redelivered")
				}
			} else {
				// Past AckWait, so a message not settled would have been delivered again.
				select {
				case d := <-deliveries:
					t.Fatalf("delivered again (NumDelivered %d)", d.numDelivered)
				case <-time.After(ackWait + 500*time.Millisecond):
				}
			}
			waitFor(t, 5*time.Second, "message removed from the work queue", func() bool { return e.msgsInStream(t) == 0 })

			got := rec.list()
			if len(got) == 0 || !same(got[0].d, tc.first) || got[0].err != nil {
				t.Fatalf("settlements %+v, want first %+v without error", got, tc.first)
			}
			if info := e.consumerInfo(t); info.NumAckPending != 0 || info.NumPending != 0 {
				t.Errorf("consumer still has %d pending acks, %d pending messages", info.NumAckPending, info.NumPending)
			}
		})
	}
}

func TestConcurrencyBound(t *testing.T) {
	t.Parallel()
	const concurrency, total = 4, 50
	e := newEnv(t, 30*time.Second)
	e.publish(t, total)
	var acked atomic.Int32
	p := worker.New(e.consumer, worker.Config{Concurrency: concurrency, Grace: time.Second,
		Settled: func(_ jetstream.Msg, d worker.Decision, err error) {
			if d.Kind == worker.KindAck && err == nil {
				acked.Add(1)
			}
		}})
	var now, most atomic.Int32
	var mu sync.Mutex
	goroutines := map[string]bool{}
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		mu.Lock()
		goroutines[goroutineID()] = true
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		return worker.Ack()
	})
	waitFor(t, 30*time.Second, "all messages acked", func() bool { return acked.Load() == total })
	if m := most.Load(); m > concurrency || m < 2 {
		t.Errorf("at most %d decisions ran at once, want 2..%d", m, concurrency)
	}
	// Goroutines stay for the next message rather than one being started per message.
	mu.Lock()
	defer mu.Unlock()
	if len(goroutines) > concurrency {
		t.Errorf("%d goroutines decided %d messages, want at most %d", len(goroutines), total, concurrency)
	}
	waitFor(t, 5*time.Second, "work queue empty", func() bool { return e.msgsInStream(t) == 0 })
}

// goroutineID is the calling goroutine's number, from the first line of its stack trace.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// limit is a Limiter whose limit the test sets.
type limit struct{ n atomic.Int32 }

func (l *limit) Limit() int   { return int(l.n.Load()) }
func (l *limit) InFlight(int) {}

// The pool takes no more messages than the limit lets it have in flight, below its Concurrency,
// and follows the limit when it changes; the rest wait in the stream, not in the client.
func TestLimitBoundsInFlight(t *testing.T) {
	t.Parallel()
	const concurrency, total = 16, 120
	e := newEnv(t, 30*time.Second)
	e.publish(t, total)
	lim := &limit{}
	lim.n.Store(3)
	var acked atomic.Int32
	p := worker.New(e.consumer, worker.Config{Concurrency: concurrency, Grace: time.Second, Limit: lim,
		Settled: func(_ jetstream.Msg, d worker.Decision, err error) {
			if d.Kind == worker.KindAck && err == nil {
				acked.Add(1)
			}
		}})
	var now, most atomic.Int32
	var over atomic.Value // a string saying when in-flight work exceeded the limit
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		n := now.Add(1)
		defer now.Add(-1)
		if l := lim.n.Load(); n > l {
			over.CompareAndSwap(nil, fmt.Sprintf("%d decisions at once at limit %d", n, l))
		}
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		// Confirmed, as cpcancel's handler acks: the slot is freed once the server has applied
		// the ack. A plain ack may still wait in the server's queue when the freed slot's pull is
		// served, so the server briefly counts 4 pending at limit 3 (it did, every run without
		// -race), although no more than 3 decisions ran.
		return worker.AckConfirmed(func(error) {})
	})
	waitFor(t, 30*time.Second, "a third of the messages acked", func() bool {
		if pending := e.consumerInfo(t).NumAckPending; pending > 3 {
			over.CompareAndSwap(nil, fmt.Sprintf("%d messages taken at limit 3", pending))
		}
		return acked.Load() >= total/3
	})
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d decisions ran at once at limit 3, want 3", m)
	}
	lim.n.Store(8) // only grows from here, so a decision never sees a limit below the one it started under
	waitFor(t, 30*time.Second, "all messages acked", func() bool { return acked.Load() == total })
	if m := most.Load(); m <= 3 || m > 8 {
		t.Errorf("at most %d decisions ran at once after the limit grew to 8, want 4..8", m)
	}
	if o := over.Load(); o != nil {
		t.Error(o)
	}
	waitFor(t, 5*time.Second, "work queue empty", func() bool { return e.msgsInStream(t) == 0 })
}

// Regression: after a server restart, messages that the client had taken but not started were
// lost (nats.go's Messages iterator pulled a full batch again while its buffer was still full, and
// the overflow was dropped as a slow consumer); they came back only after AckWait, 30s here. With
// 2 goroutines and a decision that outlasts the restart, the old pool lost one every time.
func TestServerRestartLosesNoMessage(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	testLosesNoMessage(t, e, func() { e.ns.Restart(t) })
}

// A consumer leader change ends the pull requests parked at the old leader, as a restart does.
func TestConsumerLeaderChangeLosesNoMessage(t *testing.T) {
	cluster := natstest.StartCluster(t, 3)
	e := connectEnv(t, cluster.ClientURLs(), 3, 30*time.Second)
	testLosesNoMessage(t, e, func() {
		before := e.consumerInfo(t).Cluster.Leader
		subj := fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", streamName, consumerName)
		if _, err := e.nc.Request(subj, nil, 10*time.Second); err != nil {
			t.Fatalf("consumer leader stepdown: %v", err)
		}
		waitFor(t, 10*time.Second, "a new consumer leader", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			info, err := e.consumer.Info(ctx)
			return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != before
		})
	})
}

// testLosesNoMessage disrupts the server side twice: while a pool of 2 waits idle for messages,
// and again halfway through 200 messages that it decides in 30ms each. Every message must still
// be decided within 20s, before AckWait (30s) would bring back one that the client lost, and none more
// than twice.
func testLosesNoMessage(t *testing.T, e *env, disrupt func()) {
	const total, concurrency = 200, 2
	var mu sync.Mutex
	decided := map[uint64]int{} // stream sequence -> decisions
	half := make(chan struct{})
	p := worker.New(e.consumer, worker.Config{Concurrency: concurrency, Grace: time.Second})
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		seq := meta(t, msg).Sequence.Stream
		mu.Lock()
		decided[seq]++
		if len(decided) == total/2 && decided[seq] == 1 {
			close(half)
		}
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		return worker.Ack()
	})
	waitFor(t, 10*time.Second, "a pull request waiting", func() bool { return e.consumerInfo(t).NumWaiting > 0 })
	disrupt()

	start := time.Now()
	e.publish(t, total)
	select {
	case <-half:
	case <-time.After(15 * time.Second):
		t.Fatal("half the messages not decided")
	}
	disrupt()

	waitFor(t, time.Until(start.Add(20*time.Second)), "every message decided", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(decided) == total
	})
	t.Logf("all decided %s after publishing began", time.Since(start).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	for seq, n := range decided {
		if n > 2 {
			t.Errorf("message %d decided %d times", seq, n)
		}
	}
	if n := e.dropped.Load(); n != 0 {
		t.Errorf("the client dropped %d messages as a slow consumer", n)
	}
	if !p.Consuming() {
		t.Error("pool not consuming after the disruptions")
	}
}

// Shutdown with every goroutine busy: nothing more starts, the work in flight ends and is acked,
// and the rest is in the stream, deliverable at once. (With 4 goroutines the old pool had pulled
// messages ahead and started them after ctx was done.)
func TestShutdown(t *testing.T) {
	for _, concurrency := range []int{2, 4} {
		t.Run(fmt.Sprint(concurrency), func(t *testing.T) {
			t.Parallel()
			testShutdown(t, concurrency)
		})
	}
}

func testShutdown(t *testing.T, concurrency int) {
	total := 5 * concurrency
	e := newEnv(t, 30*time.Second)
	e.publish(t, total)
	rec := &recorder{}
	p := worker.New(e.consumer, worker.Config{Concurrency: concurrency, Grace: 30 * time.Second, Settled: rec.settled})
	started := make(chan uint64, total)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var cancelled atomic.Bool
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		started <- meta(t, msg).Sequence.Stream
		select {
		case <-release:
		case <-ctx.Done():
			cancelled.Store(true)
		}
		return worker.Ack()
	})

	inFlight := map[uint64]bool{}
	for range concurrency {
		select {
		case seq := <-started:
			inFlight[seq] = true
		case <-time.After(10 * time.Second):
			t.Fatal("decisions did not start")
		}
	}
	if !p.Consuming() {
		t.Error("Consuming false while running")
	}
	time.Sleep(200 * time.Millisecond) // for whatever a pool pulls ahead to arrive
	r.cancel()
	if p.Consuming() {
		t.Error("Consuming still true after ctx is done")
	}
	select {
	case seq := <-started:
		t.Fatalf("message %d started after ctx was done", seq)
	case <-time.After(300 * time.Millisecond):
	}
	releaseOnce.Do(func() { close(release) })
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(started) != 0 {
		t.Errorf("%d more messages started after ctx was done", len(started))
	}
	if cancelled.Load() {
		t.Error("in-flight work cancelled within the grace period")
	}
	got := rec.list()
	if len(got) != concurrency {
		t.Fatalf("settlements %+v, want the %d in flight", got, concurrency)
	}
	for _, s := range got {
		if !inFlight[s.seq] || s.d.Kind != worker.KindAck || s.err != nil {
			t.Errorf("settlement %+v, want an ack of one of %v", s, inFlight)
		}
	}

	// The rest are still there, and deliverable now: none waits for AckWait in a lost buffer.
	waitFor(t, 5*time.Second, "the acks applied", func() bool { return e.msgsInStream(t) == uint64(total-concurrency) })
	batch, err := e.consumer.Fetch(total-concurrency, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		md := meta(t, msg)
		if inFlight[md.Sequence.Stream] {
			t.Errorf("acked message %d delivered again", md.Sequence.Stream)
		}
		if md.NumDelivered > 2 {
			t.Errorf("message %d delivered %d times", md.Sequence.Stream, md.NumDelivered)
		}
		if err := msg.Ack(); err != nil {
			t.Error(err)
		}
	}
	if n != total-concurrency {
		t.Errorf("fetched %d messages after shutdown, want %d (batch error %v)", n, total-concurrency, batch.Error())
	}
}

// A message that a pull sent before shutdown brings after it is handed back without being
// started, and delivered only once more.
func TestShutdownHandsBackLateMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30*time.Second)
	rec := &recorder{}
	p := worker.New(e.consumer, worker.Config{Concurrency: 4, Grace: 30 * time.Second, Settled: rec.settled})
	var decided atomic.Int32
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		decided.Add(1)
		return worker.Ack()
	})
	waitFor(t, 5*time.Second, "a pull request waiting", func() bool { return e.consumerInfo(t).NumWaiting > 0 })
	r.cancel()
	e.publish(t, 1)
	if err := r.wait(t, 15*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := decided.Load(); n != 0 {
		t.Fatalf("%d messages decided after ctx was done", n)
	}
	got := rec.list()
	if len(got) != 1 || got[0].d.Kind != worker.KindNak || got[0].d.Delay != 0 || got[0].err != nil || got[0].numDelivered != 1 {
		t.Fatalf("settlements %+v, want one Nak(0) of a first delivery", got)
	}
	batch, err := e.consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("handed-back message not redelivered (batch error %v)", batch.Error())
	}
	if md := meta(t, msg); md.NumDelivered != 2 {
		t.Errorf("handed-back message redelivered with NumDelivered %d, want 2", md.NumDelivered)
	}
}

func TestGraceCancelsInFlightWork(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	e := newEnv(t, 30*time.Second)
	e.publish(t, 1)
	rec := &recorder{}
	p := worker.New(e.consumer, worker.Config{Concurrency: 1, Grace: grace, Settled: rec.settled})
	started := make(chan struct{}, 10)
	cancelledAt := make(chan time.Time, 10)
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		started <- struct{}{}
		<-ctx.Done() // never released
		cancelledAt <- time.Now()
		return worker.Nak(0, "cancelled")
	})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("decision did not start")
	}
	stoppedAt := time.Now()
	r.cancel()
	if err := r.wait(t, 15*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if gap := (<-cancelledAt).Sub(stoppedAt); gap < grace {
		t.Errorf("in-flight work cancelled %s after shutdown began, within the %s grace", gap, grace)
	}
	if got := rec.list(); len(got) != 1 || got[0].d.Kind != worker.KindNak {
		t.Errorf("settlements %+v, want the one Nak", got)
	}
}

func TestHeartbeatKeepsSlowWork(t *testing.T) {
	t.Parallel()
	const ackWait = time.Second
	e := newEnv(t, ackWait)
	e.publish(t, 1)
	var decided atomic.Int32
	done := make(chan struct{}, 10)
	p := worker.New(e.consumer, worker.Config{Concurrency: 2, Grace: time.Second, Heartbeat: 200 * time.Millisecond,
		Settled: func(jetstream.Msg, worker.Decision, error) { done <- struct{}{} }})
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		decided.Add(1)
		time.Sleep(3 * ackWait)
		return worker.Ack()
	})
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("not settled")
	}
	if n := decided.Load(); n != 1 {
		t.Errorf("decided %d times: redelivered while in progress", n)
	}
}

func TestPanicNaksAndPoolGoesOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30*time.Second)
	e.publish(t, 3)
	var logs natstest.Buffer
	rec := &recorder{}
	p := worker.New(e.consumer, worker.Config{Concurrency: 1, Grace: time.Second, Settled: rec.settled,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		if meta(t, msg).Sequence.Stream == 1 {
			panic("boom")
		}
		return worker.Ack()
	})
	waitFor(t, 10*time.Second, "all settled", func() bool { return len(rec.list()) == 3 })
	for _, s := range rec.list() {
		want := worker.Ack()
		if s.seq == 1 {
			want = worker.Nak(30*time.Second, "panic")
		}
		if !same(s.d, want) || s.err != nil {
			t.Errorf("message %d settled %+v (%v), want %+v", s.seq, s.d, s.err, want)
		}
	}
	if !p.Consuming() {
		t.Error("pool stopped after a panic")
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "boom") || !strings.Contains(out, "worker_test.go") {
		t.Errorf("panic not logged at Error with its stack:\n%s", out)
	}
}

func TestRunEndsWhenConsumerDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30*time.Second)
	p := worker.New(e.consumer, worker.Config{Concurrency: 2, Grace: time.Second})
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision { return worker.Ack() })
	waitFor(t, 5*time.Second, "a pull request waiting", func() bool { return e.consumerInfo(t).NumWaiting > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.stream.DeleteConsumer(ctx, consumerName); err != nil {
		t.Fatal(err)
	}
	err := r.wait(t, 20*time.Second)
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("Run returned %v, want consumer not found", err)
	}
	if p.Consuming() {
		t.Error("Consuming true after Run returned")
	}
}

// With Recreate set, a consumer that is gone is created again and pulling goes on: a message
// published afterwards is decided and acked, and Run ends only when asked to.
func TestRunRecreatesConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30*time.Second)
	cfg := e.consumer.CachedInfo().Config
	var recreated atomic.Int32
	p := worker.New(e.consumer, worker.Config{Concurrency: 2, Grace: time.Second, Recreate: func(ctx context.Context) error {
		recreated.Add(1)
		_, err := e.stream.CreateOrUpdateConsumer(ctx, cfg)
		return err
	}})
	decided := make(chan struct{}, 1)
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		decided <- struct{}{}
		return worker.Ack()
	})
	waitFor(t, 5*time.Second, "a pull request waiting", func() bool { return e.consumerInfo(t).NumWaiting > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.stream.DeleteConsumer(ctx, consumerName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the consumer created again", func() bool { return recreated.Load() > 0 })
	e.publish(t, 1)
	select {
	case <-decided:
	case <-time.After(20 * time.Second):
		t.Fatal("no message decided after the consumer was created again")
	}
	waitFor(t, 10*time.Second, "message acked", func() bool { return e.msgsInStream(t) == 0 })
	if !p.Consuming() {
		t.Error("pool not consuming after the consumer was created again")
	}
	if n := recreated.Load(); n != 1 {
		t.Errorf("Recreate called %d times, want 1", n)
	}
	r.cancel()
	if err := r.wait(t, 20*time.Second); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

func TestRunEndsWhenConnectionClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30*time.Second)
	p := worker.New(e.consumer, worker.Config{Concurrency: 2, Grace: time.Second})
	r := run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision { return worker.Ack() })
	waitFor(t, 5*time.Second, "a pull request waiting", func() bool { return e.consumerInfo(t).NumWaiting > 0 })
	e.nc.Close()
	if err := r.wait(t, 20*time.Second); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("Run returned %v, want connection closed", err)
	}
}

// same compares decisions by what settles a message.
func same(a, b worker.Decision) bool {
	return a.Kind == b.Kind && a.Delay == b.Delay && a.Reason == b.Reason && (a.Unconfirmed == nil) == (b.Unconfirmed == nil)
}

// TestAckConfirmed: a confirmed Ack removes the message and calls nothing more; an Ack JetStream
// cannot confirm (the consumer is gone) calls Unconfirmed with the error.
func TestAckConfirmed(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	p := worker.New(e.consumer, worker.Config{Concurrency: 1, Grace: time.Second})
	var calls atomic.Int32
	decided := make(chan struct{}, 1)
	run(t, p, func(context.Context, jetstream.Msg) worker.Decision {
		decided <- struct{}{}
		return worker.AckConfirmed(func(error) { calls.Add(1) })
	})
	e.publish(t, 1)
	<-decided
	waitFor(t, 10*time.Second, "message acked", func() bool { return e.msgsInStream(t) == 0 })
	if calls.Load() != 0 {
		t.Errorf("Unconfirmed called %d times after a confirmed ack", calls.Load())
	}
}

// TestAckUnconfirmed: an Ack JetStream cannot confirm (its consumer is gone by then) calls
// Unconfirmed with the error, once.
func TestAckUnconfirmed(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	p := worker.New(e.consumer, worker.Config{Concurrency: 1, Grace: time.Second})
	errs := make(chan error, 2)
	run(t, p, func(ctx context.Context, msg jetstream.Msg) worker.Decision {
		if err := e.stream.DeleteConsumer(ctx, e.consumer.CachedInfo().Name); err != nil {
			t.Error(err)
		}
		return worker.AckConfirmed(func(err error) { errs <- err })
	})
	e.publish(t, 1)
	select {
	case err := <-errs:
		if err == nil {
			t.Error("Unconfirmed called without an error")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Unconfirmed not called within 15s")
	}
}
