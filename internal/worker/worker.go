// Package worker runs a bounded pool of goroutines over a JetStream pull consumer.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// HandleFunc processes and settles one message. ctx is cancelled only when the shutdown grace
// period ran out.
type HandleFunc func(ctx context.Context, msg jetstream.Msg)

// pullHeartbeat is how often the consumer leader confirms a waiting pull request. A pull request
// that no leader holds is never answered: one sent while a just-created consumer of a JetStream
// cluster has no leader yet, or one parked at a leader that went away with its NATS node. The pool
// notices only when heartbeats stop, after two of them, and pulls again; nats.go's default (half
// the 30s expiry) would leave the replica idle for 30s.
const pullHeartbeat = 2 * time.Second

// Pool pulls messages and hands each to one of its goroutines.
type Pool struct {
	it          jetstream.MessagesContext
	concurrency int
	grace       time.Duration
	log         *slog.Logger
	consuming   atomic.Bool
}

// Start begins pulling from c for a pool of concurrency goroutines. grace is how long in-flight
// work may go on once Run's ctx is done.
func Start(c jetstream.Consumer, concurrency int, grace time.Duration, log *slog.Logger) (*Pool, error) {
	// Pull no more than the pool can start soon, so a message never ages in a buffer past AckWait.
	it, err := c.Messages(jetstream.PullMaxMessages(concurrency), jetstream.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("start pulling: %w", err)
	}
	p := &Pool{it: it, concurrency: concurrency, grace: grace, log: log}
	p.consuming.Store(true)
	return p, nil
}

// Consuming reports whether the pool is pulling messages now.
func (p *Pool) Consuming() bool { return p.consuming.Load() }

// Run hands messages to handle until ctx is done. It then stops pulling, lets the workers take
// the messages already buffered, and waits for in-flight work for up to the grace period before
// cancelling it. Messages never taken up are redelivered by JetStream. Run returns an error when
// pulling stopped for another reason (connection closed, consumer deleted).
func (p *Pool) Run(ctx context.Context, handle HandleFunc) error {
	it := p.it
	defer p.consuming.Store(false)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		p.consuming.Store(false)
		it.Drain()
	})
	defer stop()

	var wg sync.WaitGroup
	var lastErr error
	slots := make(chan struct{}, p.concurrency)
	for {
		slots <- struct{}{}
		msg, err := it.Next()
		if err != nil {
			<-slots
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				lastErr = errors.Join(lastErr, err)
				break
			}
			lastErr = err
			p.log.Warn("pull failed", "err", err)
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			handle(workCtx, msg)
		})
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.grace):
		p.log.Warn("shutdown grace period over, cancelling in-flight requests", "grace", p.grace)
		cancelWork()
		<-done
	}
	if ctx.Err() == nil {
		return fmt.Errorf("pulling stopped: %w", lastErr)
	}
	return nil
}
