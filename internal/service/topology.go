package service

import (
	"time"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
)

// Topology derives everything cpcancel keeps in JetStream from the configuration: the streams
// with their byte limits, the consumers, and the bucket of request state. The request stream
// keeps a request as long as the bucket keeps its state (CPCANCEL_IDEMPOTENCY_TTL); deliveries
// and pending acks are unlimited, since the handler counts attempts in the request's state.
func Topology(cfg config.Config) broker.Topology {
	t := broker.Topology{
		RequestStream: cfg.RequestStream, RequestSubject: cfg.RequestSubject,
		ResultStream: cfg.ResultStream, ResultSubjectPrefix: cfg.ResultSubject,
		DeadLetterStream: cfg.DeadLetterStrm, DeadLetterSubject: cfg.DeadLetter,
		Consumer: cfg.Consumer,
		AckWait:  ackWait,
		Replicas: cfg.Replicas,

		RequestMaxBytes: cfg.RequestMaxBytes, ResultMaxBytes: cfg.ResultMaxBytes, DeadLetterMaxBytes: cfg.DeadLetterMaxBytes,

		Bucket: cfg.IdempotencyKV, BucketTTL: cfg.IdempotencyTTL, BucketMaxBytes: cfg.IdempotencyMaxBytes,
	}
	if cfg.Follow {
		t.FollowStream, t.FollowSubject, t.FollowConsumer = cfg.FollowStream, cfg.FollowSubject, cfg.FollowConsumer
		// One poll: an API call and its retry after a 401, and the final result's publish.
		t.FollowAckWait = 2*cfg.HTTPTimeout + config.PublishTimeout + 10*time.Second
		t.FollowTimeout = cfg.FollowTimeout
		t.FollowMaxBytes = cfg.FollowMaxBytes
	}
	return t
}
