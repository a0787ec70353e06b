package service

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// storageStreams names the streams cpcancel stores into: requests, results, dead letters, follow
// tasks when following, and the stream behind the idempotency bucket (KV_<bucket>).
func storageStreams(cfg config.Config) []string {
	names := []string{cfg.Streams.RequestStream, cfg.Streams.ResultStream, cfg.Streams.DeadLetterStream}
	if cfg.Follow.Enabled {
		names = append(names, cfg.Follow.Stream)
	}
	return append(names, "KV_"+cfg.Idempotency.Bucket)
}

// streamUsage returns a reader of the streams' usage for metrics.RegisterStorage: one stream
// info request per stream, within ctx. Any failure fails the whole read, so that a scrape never
// shows some streams and silently lacks others.
func streamUsage(js jetstream.JetStream, streams []string) func(context.Context) ([]metrics.StreamUsage, error) {
	return func(ctx context.Context) ([]metrics.StreamUsage, error) {
		usage := make([]metrics.StreamUsage, 0, len(streams))
		for _, name := range streams {
			// js.Stream fetches the stream's info; CachedInfo is that answer, no second request.
			s, err := js.Stream(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", name, err)
			}
			info := s.CachedInfo()
			u := metrics.StreamUsage{Stream: name, Bytes: info.State.Bytes, Messages: info.State.Msgs}
			if info.Config.MaxBytes > 0 { // -1 (or 0) is no limit
				u.MaxBytes = uint64(info.Config.MaxBytes)
			}
			usage = append(usage, u)
		}
		return usage, nil
	}
}
