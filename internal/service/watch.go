package service

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
)

// topologyCheck is how often a running cpcancel looks for a stream, consumer or bucket of its
// topology that has gone; watchTimeout bounds one look and provisioning again, which on a
// cluster creates replicated streams.
const topologyCheck, watchTimeout = 5 * time.Second, 30 * time.Second

// topologyWatch finds what of the topology has gone while cpcancel runs: deleted by hand, or lost
// with a nats-server's store. Meanwhile every request is handed back without using an attempt.
// With CPCANCEL_PROVISION it provisions the topology again, so the requests waiting are answered
// (a pool that finds its consumer gone does so at once, through restore); otherwise it logs what
// is missing, once a minute, for whoever manages it, and a pool whose consumer is gone stops the
// service.
type topologyWatch struct {
	js        jetstream.JetStream
	topology  broker.Topology
	provision bool
	log       *slog.Logger
	every     time.Duration
}

// run checks every w.every until ctx is done.
func (w topologyWatch) run(ctx context.Context) {
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var reported []string
	var reportedAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, watchTimeout)
		missing, err := broker.Missing(cctx, w.js, w.topology)
		switch {
		case err != nil || len(missing) == 0:
			// A server that cannot tell (restarting, electing a leader) is asked again next time.
		case w.provision:
			if err := w.reprovision(cctx, missing); err != nil {
				w.log.Error("provisioning again failed, trying at the next check", "err", err)
			}
		case !slices.Equal(missing, reported) || time.Since(reportedAt) >= time.Minute:
			w.log.Error("gone from JetStream, requests wait until it is created again (CPCANCEL_PROVISION=false)",
				"missing", strings.Join(missing, ", "))
			reported, reportedAt = missing, time.Now()
		}
		cancel()
	}
}

// restore provisions again what of the topology has gone, if anything has: for a pool that
// found its consumer gone.
func (w topologyWatch) restore(ctx context.Context) error {
	missing, err := broker.Missing(ctx, w.js, w.topology)
	if err != nil || len(missing) == 0 {
		return err
	}
	return w.reprovision(ctx, missing)
}

// reprovision creates again what is missing, saying what was lost with it.
func (w topologyWatch) reprovision(ctx context.Context, missing []string) error {
	lost := "what it held"
	if slices.ContainsFunc(missing, func(m string) bool { return strings.HasPrefix(m, "bucket ") }) {
		lost += "; with the bucket, the records of earlier requests: a request re-sent or redelivered now is sent to the API again"
	}
	w.log.Error("gone from JetStream, provisioning it again", "missing", strings.Join(missing, ", "), "lost", lost)
	_, err := broker.Provision(ctx, w.js, w.topology)
	return err
}
