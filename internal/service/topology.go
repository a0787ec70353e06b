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
	st := cfg.Streams
	t := broker.Topology{
		RequestStream: st.RequestStream, RequestSubject: st.RequestSubject,
		ResultStream: st.ResultStream, ResultSubjectPrefix: st.ResultSubjectPrefix,
		DeadLetterStream: st.DeadLetterStream, DeadLetterSubject: st.DeadLetterSubject,
		Consumer: st.Consumer,
		AckWait:  ackWait,
		Replicas: st.Replicas,

		RequestMaxBytes: st.RequestStreamMaxBytes, ResultMaxBytes: st.ResultStreamMaxBytes, DeadLetterMaxBytes: st.DeadLetterStreamMaxBytes,

		Bucket: cfg.Idempotency.Bucket, BucketTTL: cfg.Idempotency.TTL, BucketMaxBytes: cfg.Idempotency.MaxBytes,
	}
	if f := cfg.Follow; f.Enabled {
		t.FollowStream, t.FollowSubject, t.FollowConsumer = f.Stream, f.Subject, f.Consumer
		// One poll: an API call and its retry after a 401, and the final result's publish.
		t.FollowAckWait = 2*cfg.CloudPartner.HTTPTimeout + config.PublishTimeout + 10*time.Second
		t.FollowTimeout = f.Timeout
		t.FollowMaxBytes = f.StreamMaxBytes
	}
	return t
}
