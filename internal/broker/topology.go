package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Topology is everything cpcancel keeps in JetStream (docs/contract.md §2–3): the request, result,
// dead-letter and follow streams, the consumers of requests and follow tasks, and the KeyValue
// bucket of per-request state. Provision creates it; Bind checks one someone else manages.
type Topology struct {
	RequestStream, RequestSubject       string
	ResultStream, ResultSubjectPrefix   string
	DeadLetterStream, DeadLetterSubject string
	// Consumer is the durable pull consumer of requests. AckWait is how long a delivered request
	// may stay unacknowledged (without progress reports) before it is redelivered.
	Consumer string
	AckWait  time.Duration
	// Replicas of each stream and of the bucket (and so of the consumers); 1 on a single server,
	// 3 on a cluster.
	Replicas int
	// Most bytes each stream holds (CPCANCEL_*_STREAM_MAX_BYTES): all must be positive. A full
	// request or follow stream refuses new messages; a full result or dead-letter stream drops its
	// oldest.
	RequestMaxBytes, ResultMaxBytes, DeadLetterMaxBytes int64

	// FollowStream, FollowSubject and FollowConsumer carry the follow tasks (CPCANCEL_FOLLOW);
	// FollowStream is empty when following is off, and then the other Follow fields are unused.
	FollowStream, FollowSubject, FollowConsumer string
	// FollowAckWait outlasts one poll of an operation.
	FollowAckWait time.Duration
	// FollowTimeout is CPCANCEL_FOLLOW_TIMEOUT: the follow stream keeps a task a day longer.
	FollowTimeout  time.Duration
	FollowMaxBytes int64

	// Bucket is the KeyValue bucket of per-request state. BucketTTL (CPCANCEL_IDEMPOTENCY_TTL) is
	// how long a request's state is kept, and also how long the request stream keeps a request: a
	// request is never delivered after its state may have expired.
	Bucket         string
	BucketTTL      time.Duration
	BucketMaxBytes int64
}

const (
	// requestDuplicates is the request stream's duplicate window (capped at its MaxAge).
	requestDuplicates = 2 * time.Minute
	// resultMaxAge and deadLetterMaxAge are how long results and dead letters are kept.
	resultMaxAge     = 7 * 24 * time.Hour
	deadLetterMaxAge = 30 * 24 * time.Hour
	// followMaxAgeMargin is how much longer than CPCANCEL_FOLLOW_TIMEOUT the follow stream keeps a
	// task, so that a task's deadline always passes while it is still there.
	followMaxAgeMargin = 24 * time.Hour

	// Unlimited is MaxDeliver and MaxAckPending of both consumers. JetStream must never give up on
	// a request (the handler counts attempts in the request's state, and infrastructure failures
	// must not use them up), and requests waiting out a long Retry-After must not hold slots that
	// stop new ones: the worker pools pull only as many messages as they have free workers.
	Unlimited = -1
	// MinMaxAckPending is the least MaxAckPending Bind accepts, besides Unlimited, on a consumer
	// someone else manages.
	MinMaxAckPending = 100000
)

// Following reports whether the topology includes the follow stream and consumer.
func (t Topology) Following() bool { return t.FollowStream != "" }

// Streams returns the configurations of the request, result and dead-letter streams, and of the
// follow stream when following is on, in that order.
func (t Topology) Streams() []jetstream.StreamConfig {
	specs := t.streams()
	out := make([]jetstream.StreamConfig, len(specs))
	for i, s := range specs {
		out[i] = s.cfg
	}
	return out
}

// streamSpec is a stream's configuration with the variables that name and size it, and what Bind
// insists on.
type streamSpec struct {
	cfg                           jetstream.StreamConfig
	subject                       string // that the stream must hold
	nameVar, subjectVar, bytesVar string
}

func (t Topology) streams() []streamSpec {
	replicas := max(t.Replicas, 1)
	specs := []streamSpec{{
		cfg: jetstream.StreamConfig{
			Name:        t.RequestStream,
			Description: "cpcancel: cancel requests, removed once handled",
			Subjects:    []string{t.RequestSubject},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      t.BucketTTL,
			MaxBytes:    t.RequestMaxBytes,
			// A publisher gets an error from a full stream instead of the oldest request being
			// dropped unanswered.
			Discard:    jetstream.DiscardNew,
			Duplicates: min(requestDuplicates, t.BucketTTL),
		},
		subject: t.RequestSubject, nameVar: "CPCANCEL_REQUEST_STREAM", subjectVar: "CPCANCEL_REQUEST_SUBJECT",
		bytesVar: "CPCANCEL_REQUEST_STREAM_MAX_BYTES",
	}, {
		cfg: jetstream.StreamConfig{
			Name:        t.ResultStream,
			Description: "cpcancel: result events",
			Subjects:    []string{t.ResultSubjectPrefix + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      resultMaxAge,
			MaxBytes:    t.ResultMaxBytes,
			Discard:     jetstream.DiscardOld,
			// Results are published with Nats-Msg-Id = event id: a re-publish inside this window is dropped.
			Duplicates: 10 * time.Minute,
		},
		subject: t.ResultSubjectPrefix + ".>", nameVar: "CPCANCEL_RESULT_STREAM", subjectVar: "CPCANCEL_RESULT_SUBJECT_PREFIX",
		bytesVar: "CPCANCEL_RESULT_STREAM_MAX_BYTES",
	}, {
		cfg: jetstream.StreamConfig{
			Name:        t.DeadLetterStream,
			Description: "cpcancel: messages that are not cancel requests",
			Subjects:    []string{t.DeadLetterSubject},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      deadLetterMaxAge,
			MaxBytes:    t.DeadLetterMaxBytes,
			Discard:     jetstream.DiscardOld,
			Duplicates:  10 * time.Minute,
		},
		subject: t.DeadLetterSubject, nameVar: "CPCANCEL_DEADLETTER_STREAM", subjectVar: "CPCANCEL_DEADLETTER_SUBJECT",
		bytesVar: "CPCANCEL_DEADLETTER_STREAM_MAX_BYTES",
	}}
	if t.Following() {
		specs = append(specs, streamSpec{
			cfg: jetstream.StreamConfig{
				Name:        t.FollowStream,
				Description: "cpcancel: operations to poll until they end",
				Subjects:    []string{t.FollowSubject},
				Retention:   jetstream.WorkQueuePolicy,
				Storage:     jetstream.FileStorage,
				Replicas:    replicas,
				MaxAge:      t.FollowTimeout + followMaxAgeMargin,
				MaxBytes:    t.FollowMaxBytes,
				Discard:     jetstream.DiscardNew,
				// A follow task is published with Nats-Msg-Id follow:<result id>: scheduled once.
				Duplicates: 10 * time.Minute,
			},
			subject: t.FollowSubject, nameVar: "CPCANCEL_FOLLOW_STREAM", subjectVar: "CPCANCEL_FOLLOW_SUBJECT",
			bytesVar: "CPCANCEL_FOLLOW_STREAM_MAX_BYTES",
		})
	}
	return specs
}

// ConsumerConfig is the durable pull consumer on the request stream.
func (t Topology) ConsumerConfig() jetstream.ConsumerConfig {
	return workConsumer(t.Consumer, "cpcancel workers", t.RequestSubject, t.AckWait)
}

// FollowConsumerConfig is the durable pull consumer of follow tasks: a task is polled until its
// operation ends or its deadline passes.
func (t Topology) FollowConsumerConfig() jetstream.ConsumerConfig {
	return workConsumer(t.FollowConsumer, "cpcancel operation followers", t.FollowSubject, t.FollowAckWait)
}

// workConsumer is a durable pull consumer whose every message is settled explicitly. Deliveries
// and pending acks are unlimited: attempts are counted in each request's state, and workers pull
// only what they can start.
func workConsumer(name, description, subject string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   description,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    Unlimited,
		MaxAckPending: Unlimited,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// BucketConfig is the KeyValue bucket of per-request state: one value per key, kept BucketTTL.
// Entries need no TTL of their own (LimitMarkerTTL 0); Provision keeps the limit marker TTL of a
// bucket created by an earlier version, which nats-server does not let it remove.
func (t Topology) BucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      t.Bucket,
		Description: "cpcancel: the state of each request",
		History:     1,
		TTL:         t.BucketTTL,
		MaxBytes:    t.BucketMaxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
	}
}

// check reports fields a caller left unset that would leave a stream or the bucket unbounded or
// misnamed: those are programming errors, not configuration ones.
func (t Topology) check() error {
	var missing []string
	need := func(field string, ok bool) {
		if !ok {
			missing = append(missing, field)
		}
	}
	need("RequestStream", t.RequestStream != "")
	need("RequestSubject", t.RequestSubject != "")
	need("ResultStream", t.ResultStream != "")
	need("ResultSubjectPrefix", t.ResultSubjectPrefix != "")
	need("DeadLetterStream", t.DeadLetterStream != "")
	need("DeadLetterSubject", t.DeadLetterSubject != "")
	need("Consumer", t.Consumer != "")
	need("AckWait", t.AckWait > 0)
	need("RequestMaxBytes", t.RequestMaxBytes > 0)
	need("ResultMaxBytes", t.ResultMaxBytes > 0)
	need("DeadLetterMaxBytes", t.DeadLetterMaxBytes > 0)
	need("Bucket", t.Bucket != "")
	need("BucketTTL", t.BucketTTL > 0)
	need("BucketMaxBytes", t.BucketMaxBytes > 0)
	if t.Following() {
		need("FollowSubject", t.FollowSubject != "")
		need("FollowConsumer", t.FollowConsumer != "")
		need("FollowAckWait", t.FollowAckWait > 0)
		need("FollowTimeout", t.FollowTimeout > 0)
		need("FollowMaxBytes", t.FollowMaxBytes > 0)
	}
	if len(missing) > 0 {
		return fmt.Errorf("broker: topology without %s", strings.Join(missing, ", "))
	}
	return nil
}

// Bound is the topology in use: the consumers to pull from and the bucket of request state.
type Bound struct {
	Requests jetstream.Consumer
	// Follow is nil when following is off.
	Follow jetstream.Consumer
	Bucket jetstream.KeyValue
}

// Provision creates or updates the streams, the bucket and the consumers (CPCANCEL_PROVISION=true).
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) (Bound, error) {
	if err := t.check(); err != nil {
		return Bound{}, err
	}
	for _, s := range t.streams() {
		if err := createOrUpdateStream(ctx, js, s.cfg); err != nil {
			return Bound{}, fmt.Errorf("provision stream %s (%s): %w", s.cfg.Name, s.nameVar, err)
		}
	}
	var b Bound
	var err error
	if b.Bucket, err = provisionBucket(ctx, js, t.BucketConfig()); err != nil {
		return Bound{}, fmt.Errorf("provision bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET): %w", t.Bucket, err)
	}
	if b.Requests, err = js.CreateOrUpdateConsumer(ctx, t.RequestStream, t.ConsumerConfig()); err != nil {
		return Bound{}, fmt.Errorf("provision consumer %s (CPCANCEL_CONSUMER) on stream %s: %w", t.Consumer, t.RequestStream, err)
	}
	if t.Following() {
		if b.Follow, err = js.CreateOrUpdateConsumer(ctx, t.FollowStream, t.FollowConsumerConfig()); err != nil {
			return Bound{}, fmt.Errorf("provision consumer %s (CPCANCEL_FOLLOW_CONSUMER) on stream %s: %w", t.FollowConsumer, t.FollowStream, err)
		}
	}
	return b, nil
}

// createOrUpdateStream creates the stream, or updates it when it exists with another
// configuration. It asks to create first, unlike jetstream's CreateOrUpdateStream: when replicas
// start together on a JetStream cluster, an update that reaches the meta leader while another
// replica's create of the same stream is still being proposed is never answered (nats-server
// 2.15), and the replica gives up at its deadline; a create of an equal stream is answered.
func createOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		_, err = js.UpdateStream(ctx, cfg)
	}
	return err
}

// provisionBucket creates the bucket, or updates it when it exists with another configuration,
// first asking to create for the reason createOrUpdateStream gives. An existing bucket keeps its
// limit marker TTL: earlier versions created the bucket with one (for per-key TTLs), which
// enabled per-message TTLs on its stream, and nats-server refuses to disable those.
func provisionBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return kv, err
	}
	existing, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, err
	}
	status, err := existing.Status(ctx)
	if err != nil {
		return nil, err
	}
	cfg.LimitMarkerTTL = status.LimitMarkerTTL()
	return js.UpdateKeyValue(ctx, cfg)
}

// Missing lists what of the topology does not exist (a stream, consumer or bucket deleted, or
// lost with a server's store), each as "stream NAME (VARIABLE)" and the like; an error means the
// server could not tell (unreachable, a leader being elected), and then nothing is listed.
func Missing(ctx context.Context, js jetstream.JetStream, t Topology) ([]string, error) {
	var missing []string
	gone := map[string]bool{}
	for _, s := range t.streams() {
		_, err := js.Stream(ctx, s.cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, fmt.Sprintf("stream %s (%s)", s.cfg.Name, s.nameVar))
			gone[s.cfg.Name] = true
		} else if err != nil {
			return nil, err
		}
	}
	consumers := [][3]string{{t.RequestStream, t.Consumer, "CPCANCEL_CONSUMER"}}
	if t.Following() {
		consumers = append(consumers, [3]string{t.FollowStream, t.FollowConsumer, "CPCANCEL_FOLLOW_CONSUMER"})
	}
	for _, c := range consumers {
		if gone[c[0]] {
			missing = append(missing, fmt.Sprintf("consumer %s (%s)", c[1], c[2]))
			continue
		}
		_, err := js.Consumer(ctx, c[0], c[1])
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			missing = append(missing, fmt.Sprintf("consumer %s (%s)", c[1], c[2]))
		} else if err != nil {
			return nil, err
		}
	}
	_, err := js.KeyValue(ctx, t.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		missing = append(missing, fmt.Sprintf("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET)", t.Bucket))
	} else if err != nil {
		return nil, err
	}
	return missing, nil
}

// Bind looks up a topology someone else manages (CPCANCEL_PROVISION=false, e.g. NACK) and checks
// that it is one cpcancel can run on safely. It reports every problem found, each naming the
// object, what is wrong and the variable to look at, in a fixed order: the streams, the consumers,
// the bucket.
func Bind(ctx context.Context, js jetstream.JetStream, t Topology) (Bound, error) {
	if err := t.check(); err != nil {
		return Bound{}, err
	}
	var problems []error
	problem := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }

	exists := map[string]bool{}
	for _, s := range t.streams() {
		stream, err := js.Stream(ctx, s.cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			problem("stream %s (%s) does not exist: create it or set CPCANCEL_PROVISION=true", s.cfg.Name, s.nameVar)
			continue
		}
		if err != nil {
			problem("look up stream %s (%s): %w", s.cfg.Name, s.nameVar, err)
			continue
		}
		exists[s.cfg.Name] = true
		checkStream(t, s, stream.CachedInfo().Config, problem)
	}

	var b Bound
	type consumerSpec struct {
		stream   string
		cfg      jetstream.ConsumerConfig
		variable string
		into     *jetstream.Consumer
	}
	consumers := []consumerSpec{{t.RequestStream, t.ConsumerConfig(), "CPCANCEL_CONSUMER", &b.Requests}}
	if t.Following() {
		consumers = append(consumers, consumerSpec{t.FollowStream, t.FollowConsumerConfig(), "CPCANCEL_FOLLOW_CONSUMER", &b.Follow})
	}
	for _, c := range consumers {
		if !exists[c.stream] {
			continue // reported with its stream
		}
		consumer, err := js.Consumer(ctx, c.stream, c.cfg.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			problem("consumer %s (%s) does not exist on stream %s: create it or set CPCANCEL_PROVISION=true", c.cfg.Durable, c.variable, c.stream)
			continue
		}
		if err != nil {
			problem("look up consumer %s (%s) on stream %s: %w", c.cfg.Durable, c.variable, c.stream, err)
			continue
		}
		*c.into = consumer
		checkConsumer(c.stream, c.cfg, c.variable, consumer.CachedInfo().Config, problem)
	}

	kv, err := js.KeyValue(ctx, t.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		problem("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET) does not exist: create it or set CPCANCEL_PROVISION=true", t.Bucket)
	case err != nil:
		problem("look up bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET): %w", t.Bucket, err)
	default:
		b.Bucket = kv
		status, err := kv.Status(ctx)
		if err != nil {
			problem("read bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET): %w", t.Bucket, err)
			break
		}
		checkBucket(t, status.Config(), problem)
	}

	if len(problems) > 0 {
		return Bound{}, errors.Join(problems...)
	}
	return b, nil
}

// checkStream reports what makes an existing stream unfit.
func checkStream(t Topology, s streamSpec, have jetstream.StreamConfig, problem func(string, ...any)) {
	name, want := s.cfg.Name, s.cfg
	if want.Retention == jetstream.WorkQueuePolicy && have.Retention != jetstream.WorkQueuePolicy {
		problem("stream %s (%s) has retention %s, want WorkQueue: a message must leave the stream once handled", name, s.nameVar, have.Retention)
	}
	if !slices.ContainsFunc(have.Subjects, func(filter string) bool { return covers(filter, s.subject) }) {
		problem("stream %s (%s) has subjects %q, none of which covers %s (%s)", name, s.nameVar, have.Subjects, s.subject, s.subjectVar)
	}
	if have.MaxBytes <= 0 {
		problem("stream %s (%s) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions %s = %d)", name, s.nameVar, s.bytesVar, want.MaxBytes)
	}
	if want.Discard == jetstream.DiscardNew && have.Discard != jetstream.DiscardNew {
		problem("stream %s (%s) has %s, want DiscardNew: when full it would drop its oldest messages unhandled instead of refusing new ones", name, s.nameVar, have.Discard)
	}
	if have.Storage != jetstream.FileStorage {
		problem("stream %s (%s) has %s storage, want File: a restart of nats-server would lose what it holds", name, s.nameVar, have.Storage)
	}
	if want.Retention == jetstream.WorkQueuePolicy && have.MaxMsgsPerSubject > 0 && !have.DiscardNewPerSubject {
		problem("stream %s (%s) keeps %d messages per subject and drops older ones: it would drop messages unhandled", name, s.nameVar, have.MaxMsgsPerSubject)
	}
	switch name {
	case t.RequestStream:
		if have.MaxAge <= 0 || have.MaxAge > t.BucketTTL {
			problem("stream %s (%s) keeps requests for %s, longer than CPCANCEL_IDEMPOTENCY_TTL %s: a request could be delivered after its state expired and call the API again; want a max age of at most %s",
				name, s.nameVar, maxAge(have.MaxAge), t.BucketTTL, t.BucketTTL)
		}
	case t.FollowStream:
		if have.MaxAge > 0 && have.MaxAge <= t.FollowTimeout {
			problem("stream %s (%s) keeps tasks for %s, not longer than CPCANCEL_FOLLOW_TIMEOUT %s: an operation could be forgotten before its deadline; want a max age above it (cpcancel provisions %s)",
				name, s.nameVar, have.MaxAge, t.FollowTimeout, want.MaxAge)
		}
	}
}

// maxAge writes a stream's MaxAge, 0 meaning no limit.
func maxAge(d time.Duration) string {
	if d <= 0 {
		return "ever"
	}
	return d.String()
}

// checkConsumer reports what makes an existing consumer unfit.
func checkConsumer(stream string, want jetstream.ConsumerConfig, variable string, have jetstream.ConsumerConfig, problem func(string, ...any)) {
	name := want.Durable
	if have.FilterSubject != want.FilterSubject && !slices.Equal(have.FilterSubjects, []string{want.FilterSubject}) {
		filter := have.FilterSubject
		if len(have.FilterSubjects) > 0 {
			filter = strings.Join(have.FilterSubjects, ",")
		}
		problem("consumer %s (%s) on stream %s filters %q, want %q", name, variable, stream, filter, want.FilterSubject)
	}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		problem("consumer %s (%s) on stream %s has ack policy %s, want AckExplicit", name, variable, stream, have.AckPolicy)
	}
	if have.MaxDeliver != Unlimited {
		problem("consumer %s (%s) on stream %s has MaxDeliver %d, want -1: JetStream must never give up on a message (cpcancel counts attempts itself)", name, variable, stream, have.MaxDeliver)
	}
	if have.MaxAckPending != Unlimited && have.MaxAckPending < MinMaxAckPending {
		problem("consumer %s (%s) on stream %s has MaxAckPending %d, want -1 (or at least %d): messages waiting out a retry delay must not stop new ones", name, variable, stream, have.MaxAckPending, MinMaxAckPending)
	}
}

// checkBucket reports what makes an existing bucket unfit.
func checkBucket(t Topology, have jetstream.KeyValueConfig, problem func(string, ...any)) {
	if have.History != 1 {
		problem("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET) keeps %d values per key, want 1 (history)", t.Bucket, have.History)
	}
	if have.TTL <= 0 || have.TTL < t.BucketTTL {
		problem("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET) keeps entries for %s, want a TTL of at least CPCANCEL_IDEMPOTENCY_TTL %s (and not for ever): a request's state must outlive the request in its stream, and must expire, or the bucket fills up",
			t.Bucket, maxAge(have.TTL), t.BucketTTL)
	}
	if have.Storage != jetstream.FileStorage {
		problem("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET) has %s storage, want File: a restart of nats-server would lose every request's state, and requests would be sent to the API again", t.Bucket, have.Storage)
	}
	if have.MaxBytes <= 0 {
		problem("bucket %s (CPCANCEL_IDEMPOTENCY_BUCKET) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions CPCANCEL_IDEMPOTENCY_MAX_BYTES = %d)", t.Bucket, t.BucketMaxBytes)
	}
}

// covers reports whether the subject filter matches every subject that subject (which may hold
// wildcards) matches.
func covers(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || s[i] == ">" {
			return false
		}
		if tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}
