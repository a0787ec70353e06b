// Package worker runs a bounded pool of goroutines over a JetStream pull consumer.
//
// The pool takes a message from JetStream only for a goroutine that is free to start it, so no
// message waits in a client-side buffer, where a reconnect or a consumer leader change could lose
// it until AckWait. Every delivery is settled exactly once, by the pool, from the Decision that the
// DecideFunc returns.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Decision says how one delivered message is settled; exactly one per delivery.
type Decision struct {
	Kind   Kind          // Ack, Nak or Term
	Delay  time.Duration // Nak: redeliver after this
	Reason string        // Term: the reason sent to JetStream; Nak: logged
	// Unconfirmed, set by AckConfirmed, is called when JetStream did not confirm the Ack.
	Unconfirmed func(err error)
}

// Kind is how a message is settled.
type Kind int

// The kinds start at 1, so that a Decision left at its zero value is invalid (the pool logs it
// and hands the message back) rather than an Ack.
const (
	// KindAck acknowledges the message: JetStream does not deliver it again.
	KindAck Kind = iota + 1
	// KindNak hands the message back: JetStream delivers it again after Decision.Delay.
	KindNak
	// KindTerm ends the message's deliveries for good, with Decision.Reason in JetStream's advisory.
	KindTerm
)

func (k Kind) String() string {
	switch k {
	case KindAck:
		return "ack"
	case KindNak:
		return "nak"
	case KindTerm:
		return "term"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Ack settles a message as done.
func Ack() Decision { return Decision{Kind: KindAck} }

// AckConfirmed settles a message as done and waits for JetStream to confirm it: once confirmed,
// the message is never delivered again. When no confirmation comes (the Ack may or may not have
// been applied), unconfirmed is called with the error before the pool moves on, for the caller
// to record what a redelivery must know.
func AckConfirmed(unconfirmed func(err error)) Decision {
	return Decision{Kind: KindAck, Unconfirmed: unconfirmed}
}

// confirmTimeout bounds the wait for JetStream's confirmation of an AckConfirmed.
const confirmTimeout = 5 * time.Second

// Nak hands a message back for redelivery after delay (at once when delay <= 0); reason is logged.
func Nak(delay time.Duration, reason string) Decision {
	return Decision{Kind: KindNak, Delay: delay, Reason: reason}
}

// Term stops a message's redelivery for good; reason is sent to JetStream.
func Term(reason string) Decision { return Decision{Kind: KindTerm, Reason: reason} }

// DecideFunc works out how to settle msg. ctx is cancelled only when the shutdown grace period
// has run out. It must not settle msg itself (it may call msg.InProgress).
type DecideFunc func(ctx context.Context, msg jetstream.Msg) Decision

// Config configures a Pool.
type Config struct {
	Concurrency int           // messages processed at once (>=1)
	Grace       time.Duration // how long in-flight work may go on after Run's ctx is done
	Heartbeat   time.Duration // InProgress every Heartbeat while deciding; 0 = none
	Logger      *slog.Logger  // nil discards
	Name        string        // for logs, e.g. "requests" / "follow"
	// Settled, when set, is called after each settle with the decision (for metrics/logs).
	Settled func(msg jetstream.Msg, d Decision, err error)
	// Limit, when set, bounds the messages in flight below Concurrency, which stays the ceiling.
	Limit Limiter
	// Recreate, when set, is called when the consumer is found gone: pulling goes on once it
	// returns nil (the consumer exists again), and Run ends with the error otherwise. When nil,
	// a consumer that is gone ends Run.
	Recreate func(ctx context.Context) error
}

// Limiter says how many messages may be in flight now. Its methods are called by the pulling
// goroutine only: Limit before each pull (a limit that falls lets the messages already started
// end), InFlight with the number of messages in flight each time one starts.
type Limiter interface {
	Limit() int
	InFlight(n int)
}

const (
	// fetchExpiry is how long one pull request waits at the server for messages. It also bounds how
	// long shutdown waits for a pull already sent, whose late messages are handed back.
	fetchExpiry = 3 * time.Second
	// fetchHeartbeat is how often the server confirms a pull request it holds with nothing to send.
	// A pull request no server holds any more (server restarted, consumer leader gone or not yet
	// elected) is never answered: the pool notices after two missed heartbeats and pulls again.
	fetchHeartbeat = time.Second
	// Failed pulls are retried after a delay that doubles from backoffMin to backoffMax.
	backoffMin, backoffMax = 50 * time.Millisecond, 2 * time.Second
	// infoTimeout bounds asking the server whether the consumer still exists, recreateTimeout
	// Config.Recreate.
	infoTimeout, recreateTimeout = 5 * time.Second, 30 * time.Second
	// panicDelay is how long a message whose DecideFunc panicked waits before its redelivery.
	panicDelay = 30 * time.Second
)

// Pool pulls messages for a bounded number of goroutines and settles what they decide.
type Pool struct {
	c        jetstream.Consumer
	cfg      Config
	log      *slog.Logger
	pulling  atomic.Pointer[context.Context] // Run's pulling context, while Run runs
	inFlight atomic.Int64                    // messages started and not yet settled
	ended    chan struct{}                   // a message ended (buffered 1), for a pull waiting on the limit
}

// New returns a pool over c; it pulls nothing until Run. A Concurrency below 1 counts as 1.
func New(c jetstream.Consumer, cfg Config) *Pool {
	cfg.Concurrency = max(cfg.Concurrency, 1)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{c: c, cfg: cfg, log: log.With("pool", cfg.Name), ended: make(chan struct{}, 1)}
}

// Consuming reports whether the pool is taking messages: true from Run's start until its ctx is
// done or pulling has stopped for good.
func (p *Pool) Consuming() bool {
	ctx := p.pulling.Load()
	return ctx != nil && (*ctx).Err() == nil
}

// Run takes messages for free goroutines, at most Concurrency at once (and no more than Limit
// allows, when set), and has decide work out how each is settled; the pool then settles it. Call
// it once.
//
// When ctx is done, Run stops pulling at once. Messages that a pull already sent still brings are
// not started but handed back (Nak) when that pull ends, within a few seconds (so the redelivery
// goes to another pull). In-flight decisions run to their end; once the Grace period is over their
// ctx is cancelled, and Run waits for them. Run then returns nil.
//
// Failed pulls are retried with backoff. Run returns an error only when pulling can never succeed
// again: the consumer no longer exists, or the connection is closed; it still lets in-flight work
// end as on shutdown.
func (p *Pool) Run(ctx context.Context, decide DecideFunc) error {
	pullCtx, stopPulling := context.WithCancel(ctx)
	defer stopPulling()
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	p.pulling.Store(&pullCtx)
	stopGrace := context.AfterFunc(pullCtx, func() {
		time.AfterFunc(p.cfg.Grace, func() {
			if workCtx.Err() == nil { // Run has not returned yet
				p.log.Warn("shutdown grace period over, cancelling in-flight work", "grace", p.cfg.Grace)
				cancelWork()
			}
		})
	})
	defer stopGrace()

	// free holds one token per goroutine that may start a message.
	free := make(chan struct{}, p.cfg.Concurrency)
	for range p.cfg.Concurrency {
		free <- struct{}{}
	}
	// A message goes to a goroutine that waits for one, or to a new goroutine while fewer than
	// Concurrency run. Goroutines stay for the next message until Run ends: a new goroutine per
	// message would grow a new stack to the handler's depth each time.
	var wg sync.WaitGroup
	work := make(chan jetstream.Msg)
	goroutines := 0
	start := func(msg jetstream.Msg) {
		n := p.inFlight.Add(1)
		if p.cfg.Limit != nil {
			p.cfg.Limit.InFlight(int(n))
		}
		select {
		case work <- msg:
			return
		default:
		}
		if goroutines == p.cfg.Concurrency {
			// Every goroutine is started and this message holds a free token, so one of them has
			// ended its message and is on its way back for the next.
			work <- msg
			return
		}
		goroutines++
		wg.Go(func() {
			for ; msg != nil; msg = <-work {
				p.process(workCtx, msg, decide)
				p.inFlight.Add(-1)
				free <- struct{}{}
				select {
				case p.ended <- struct{}{}:
				default:
				}
			}
		})
	}
	err := p.pull(pullCtx, free, start)
	stopPulling() // starts the grace period when pulling failed for good
	close(work)
	wg.Wait()
	return err
}

// pull takes messages for free goroutines and starts them, until ctx is done (nil) or pulling
// can never succeed again (the error).
func (p *Pool) pull(ctx context.Context, free chan struct{}, start func(jetstream.Msg)) error {
	backoff := backoffMin
	for {
		// Wait for one free goroutine, then take all that are free.
		select {
		case <-ctx.Done():
			return nil
		case <-free:
		}
		n := 1
	more:
		for n < cap(free) {
			select {
			case <-free:
				n++
			default:
				break more
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if allowed := p.allowed(); n > allowed {
			for range n - max(allowed, 0) {
				free <- struct{}{}
			}
			if allowed < 1 {
				p.waitForLimit(ctx)
				continue
			}
			n = allowed
		}

		batch, err := p.c.Fetch(n, jetstream.FetchMaxWait(fetchExpiry), jetstream.FetchHeartbeat(fetchHeartbeat))
		got := 0
		if err == nil {
			var late []jetstream.Msg
			for msg := range batch.Messages() {
				got++
				if ctx.Err() != nil {
					late = append(late, msg)
					continue
				}
				start(msg)
			}
			err = batch.Error()
			// Handed back only now that the pull has ended, so that the redelivery cannot come back
			// to this same pull and use up deliveries.
			for _, msg := range late {
				p.settle(msg, Nak(0, "shutting down: handed back, not started"))
			}
			got -= len(late)
		}
		for range n - got {
			free <- struct{}{}
		}

		if err == nil || ctx.Err() != nil {
			backoff = backoffMin
			continue
		}
		if err := p.fatal(ctx, err); err != nil {
			return err
		}
		p.log.Warn("pull failed, retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// limitRecheck is how often a pull held back by the limit looks at it again when no message ends.
const limitRecheck = 100 * time.Millisecond

// allowed is how many more messages the limit lets the pool start now.
func (p *Pool) allowed() int {
	if p.cfg.Limit == nil {
		return p.cfg.Concurrency
	}
	return p.cfg.Limit.Limit() - int(p.inFlight.Load())
}

// waitForLimit waits until a message ends, the limit may have grown, or ctx is done.
func (p *Pool) waitForLimit(ctx context.Context) {
	t := time.NewTimer(limitRecheck)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-p.ended:
	case <-t.C:
	}
}

// fatal returns an error when pullErr means that pulling can never succeed again: the connection
// is closed, or the consumer is gone and Config.Recreate is unset or failed. The server is asked
// about the consumer, as a pull without responders or a deleted consumer is also what a restart or
// a re-created consumer looks like.
func (p *Pool) fatal(ctx context.Context, pullErr error) error {
	switch {
	case errors.Is(pullErr, nats.ErrConnectionClosed), errors.Is(pullErr, jetstream.ErrConnectionClosed):
		return fmt.Errorf("pulling from consumer: %w", pullErr)
	case errors.Is(pullErr, jetstream.ErrConsumerDeleted), errors.Is(pullErr, jetstream.ErrConsumerNotFound),
		errors.Is(pullErr, nats.ErrNoResponders):
		ictx, cancel := context.WithTimeout(ctx, infoTimeout)
		defer cancel()
		_, err := p.c.Info(ictx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			gone := fmt.Errorf("consumer gone: %w", errors.Join(pullErr, err))
			if p.cfg.Recreate == nil {
				return gone
			}
			rctx, cancel := context.WithTimeout(ctx, recreateTimeout)
			defer cancel()
			switch err := p.cfg.Recreate(rctx); {
			case err == nil:
				p.log.Warn("consumer was gone and is created again", "err", pullErr)
			case ctx.Err() == nil:
				return errors.Join(gone, fmt.Errorf("could not create it again: %w", err))
			}
		}
	}
	return nil
}

// process decides how to settle msg, reporting it in progress meanwhile, and settles it.
func (p *Pool) process(ctx context.Context, msg jetstream.Msg, decide DecideFunc) {
	stop := p.keepAlive(msg)
	d := p.decide(ctx, msg, decide)
	stop()
	p.settle(msg, d)
}

// decide calls decide, turning a panic into a delayed Nak.
func (p *Pool) decide(ctx context.Context, msg jetstream.Msg, decide DecideFunc) (d Decision) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("deciding panicked; message handed back", "subject", msg.Subject(),
				"panic", r, "stack", string(debug.Stack()))
			d = Nak(panicDelay, "panic")
		}
	}()
	return decide(ctx, msg)
}

// settle is the one place where messages are settled.
func (p *Pool) settle(msg jetstream.Msg, d Decision) {
	var err error
	switch {
	case d.Kind == KindAck && d.Unconfirmed != nil:
		ctx, cancel := context.WithTimeout(context.Background(), confirmTimeout)
		err = msg.DoubleAck(ctx)
		cancel()
		if err != nil {
			d.Unconfirmed(err)
		}
	case d.Kind == KindAck:
		err = msg.Ack()
	case d.Kind == KindNak:
		p.log.Debug("handing message back", "subject", msg.Subject(), "delay", d.Delay, "reason", d.Reason)
		if d.Delay > 0 {
			err = msg.NakWithDelay(d.Delay)
		} else {
			err = msg.Nak()
		}
	case d.Kind == KindTerm:
		p.log.Debug("terminating message", "subject", msg.Subject(), "reason", d.Reason)
		err = msg.TermWithReason(d.Reason)
	default:
		p.log.Error("invalid decision; message handed back", "subject", msg.Subject(), "kind", d.Kind)
		d = Nak(panicDelay, fmt.Sprintf("invalid decision kind %d", int(d.Kind)))
		err = msg.NakWithDelay(d.Delay)
	}
	if err != nil {
		p.log.Warn("could not settle message; JetStream redelivers it after AckWait",
			"subject", msg.Subject(), "decision", d.Kind, "err", err)
	}
	if p.cfg.Settled != nil {
		p.cfg.Settled(msg, d, err)
	}
}

// keepAlive reports msg in progress every Heartbeat until the returned func is called.
func (p *Pool) keepAlive(msg jetstream.Msg) (stop func()) {
	return Every(p.cfg.Heartbeat, func() bool {
		if err := msg.InProgress(); err != nil {
			p.log.Debug("in-progress report failed", "subject", msg.Subject(), "err", err)
		}
		return true
	})
}

// Every calls fn every d until the returned stop is called or fn returns false; d <= 0 never
// calls it. For work that must be kept alive while a message is decided (progress reports, a
// lease). A timer, not a goroutine, waits between calls: most messages are decided before the
// first one. After stop returns, fn is not called again.
func Every(d time.Duration, fn func() bool) (stop func()) {
	if d <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // the callback must not see t before it is set
	defer mu.Unlock()
	t = time.AfterFunc(d, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped && fn() {
			t.Reset(d)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
