package broker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// topology is a complete topology with cpcancel's default names and small limits.
func topology(following bool) broker.Topology {
	t := broker.Topology{
		RequestStream: "CPCANCEL_REQUESTS", RequestSubject: "cloudpartner.cancel.requests",
		ResultStream: "CPCANCEL_RESULTS", ResultSubjectPrefix: "cloudpartner.cancel.results",
		DeadLetterStream: "CPCANCEL_DEADLETTER", DeadLetterSubject: "cloudpartner.cancel.deadletter",
		Consumer: "cpcancel", AckWait: 30 * time.Second, Replicas: 1,
		RequestMaxBytes: 1 << 20, ResultMaxBytes: 4 << 20, DeadLetterMaxBytes: 2 << 20,
		Bucket: "CPCANCEL_IDEMPOTENCY", BucketTTL: 24 * time.Hour, BucketMaxBytes: 3 << 20,
	}
	if following {
		t.FollowStream, t.FollowSubject, t.FollowConsumer = "CPCANCEL_FOLLOW", "cloudpartner.cancel.follow", "cpcancel-follow"
		t.FollowAckWait, t.FollowTimeout, t.FollowMaxBytes = 75*time.Second, 2*time.Hour, 256<<10
	}
	return t
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(testContext(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func consumerConfig(t *testing.T, js jetstream.JetStream, stream, name string) jetstream.ConsumerConfig {
	t.Helper()
	c, err := js.Consumer(testContext(t), stream, name)
	if err != nil {
		t.Fatalf("consumer %s on %s: %v", name, stream, err)
	}
	return c.CachedInfo().Config
}

func bucketStatus(t *testing.T, js jetstream.JetStream, name string) jetstream.KeyValueStatus {
	t.Helper()
	ctx := testContext(t)
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	return st
}

// checkProvisioned reads back everything Provision made and compares it with the settings cpcancel
// depends on.
func checkProvisioned(t *testing.T, js jetstream.JetStream, topo broker.Topology) {
	t.Helper()
	type streamWant struct {
		name      string
		subjects  string
		retention jetstream.RetentionPolicy
		maxAge    time.Duration
		maxBytes  int64
		discard   jetstream.DiscardPolicy
		dupes     time.Duration
	}
	wants := []streamWant{
		{topo.RequestStream, topo.RequestSubject, jetstream.WorkQueuePolicy, topo.BucketTTL, topo.RequestMaxBytes, jetstream.DiscardNew, 2 * time.Minute},
		{topo.ResultStream, topo.ResultSubjectPrefix + ".>", jetstream.LimitsPolicy, 7 * 24 * time.Hour, topo.ResultMaxBytes, jetstream.DiscardOld, 10 * time.Minute},
		{topo.DeadLetterStream, topo.DeadLetterSubject, jetstream.LimitsPolicy, 30 * 24 * time.Hour, topo.DeadLetterMaxBytes, jetstream.DiscardOld, 10 * time.Minute},
	}
	if topo.Following() {
		wants = append(wants, streamWant{topo.FollowStream, topo.FollowSubject, jetstream.WorkQueuePolicy, topo.FollowTimeout + 24*time.Hour, topo.FollowMaxBytes, jetstream.DiscardNew, 10 * time.Minute})
	}
	if got := len(topo.Streams()); got != len(wants) {
		t.Errorf("Streams() has %d streams, want %d", got, len(wants))
	}
	for _, w := range wants {
		c := streamConfig(t, js, w.name)
		for _, f := range []struct {
			field     string
			got, want any
		}{
			{"subjects", strings.Join(c.Subjects, ","), w.subjects},
			{"retention", c.Retention, w.retention},
			{"storage", c.Storage, jetstream.FileStorage},
			{"replicas", c.Replicas, topo.Replicas},
			{"max age", c.MaxAge, w.maxAge},
			{"max bytes", c.MaxBytes, w.maxBytes},
			{"discard", c.Discard, w.discard},
			{"duplicate window", c.Duplicates, w.dupes},
		} {
			if f.got != f.want {
				t.Errorf("stream %s: %s = %v, want %v", w.name, f.field, f.got, f.want)
			}
		}
	}

	type consumerWant struct {
		stream, name, filter string
		ackWait              time.Duration
	}
	cwants := []consumerWant{{topo.RequestStream, topo.Consumer, topo.RequestSubject, topo.AckWait}}
	if topo.Following() {
		cwants = append(cwants, consumerWant{topo.FollowStream, topo.FollowConsumer, topo.FollowSubject, topo.FollowAckWait})
	}
	for _, w := range cwants {
		c := consumerConfig(t, js, w.stream, w.name)
		for _, f := range []struct {
			field     string
			got, want any
		}{
			{"durable", c.Durable, w.name},
			{"filter subject", c.FilterSubject, w.filter},
			{"ack policy", c.AckPolicy, jetstream.AckExplicitPolicy},
			{"ack wait", c.AckWait, w.ackWait},
			{"max deliver", c.MaxDeliver, -1},
			{"max ack pending", c.MaxAckPending, -1},
			{"deliver policy", c.DeliverPolicy, jetstream.DeliverAllPolicy},
		} {
			if f.got != f.want {
				t.Errorf("consumer %s on %s: %s = %v, want %v", w.name, w.stream, f.field, f.got, f.want)
			}
		}
	}

	st := bucketStatus(t, js, topo.Bucket)
	c := st.Config()
	for _, f := range []struct {
		field     string
		got, want any
	}{
		{"history", c.History, uint8(1)},
		{"ttl", c.TTL, topo.BucketTTL},
		{"max bytes", c.MaxBytes, topo.BucketMaxBytes},
		{"storage", c.Storage, jetstream.FileStorage},
		{"replicas", c.Replicas, topo.Replicas},
		{"limit marker ttl", st.LimitMarkerTTL(), time.Duration(0)},
	} {
		if f.got != f.want {
			t.Errorf("bucket %s: %s = %v, want %v", topo.Bucket, f.field, f.got, f.want)
		}
	}
}

func TestProvision(t *testing.T) {
	for _, following := range []bool{false, true} {
		t.Run(fmt.Sprintf("following=%t", following), func(t *testing.T) {
			_, js := natstest.Start(t).Connect(t)
			topo := topology(following)
			b, err := broker.Provision(testContext(t), js, topo)
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			checkProvisioned(t, js, topo)
			if b.Requests == nil || b.Bucket == nil {
				t.Fatalf("Provision returned %+v, want the request consumer and the bucket", b)
			}
			if name := b.Requests.CachedInfo().Name; name != topo.Consumer {
				t.Errorf("Bound.Requests is consumer %s, want %s", name, topo.Consumer)
			}
			if b.Bucket.Bucket() != topo.Bucket {
				t.Errorf("Bound.Bucket is %s, want %s", b.Bucket.Bucket(), topo.Bucket)
			}
			switch {
			case following && b.Follow == nil:
				t.Error("Bound.Follow is nil with following on")
			case following && b.Follow.CachedInfo().Name != topo.FollowConsumer:
				t.Errorf("Bound.Follow is consumer %s, want %s", b.Follow.CachedInfo().Name, topo.FollowConsumer)
			case !following && b.Follow != nil:
				t.Error("Bound.Follow is set with following off")
			}
			if !following {
				if _, err := js.Stream(testContext(t), "CPCANCEL_FOLLOW"); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Errorf("follow stream with following off: %v", err)
				}
			}
		})
	}
}

// A short CPCANCEL_IDEMPOTENCY_TTL shortens the request stream's duplicate window with its max
// age: JetStream refuses a window longer than the age.
func TestProvisionShortTTL(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	topo := topology(false)
	topo.BucketTTL = 90 * time.Second
	if _, err := broker.Provision(testContext(t), js, topo); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if c := streamConfig(t, js, topo.RequestStream); c.MaxAge != 90*time.Second || c.Duplicates != 90*time.Second {
		t.Errorf("request stream: max age %s, duplicate window %s; want 1m30s for both", c.MaxAge, c.Duplicates)
	}
}

// Every replica provisions at start: a second Provision of the same topology changes nothing, and
// one with new limits updates them in place, keeping the messages.
func TestProvisionTwice(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx := testContext(t)
	topo := topology(true)
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatalf("first Provision: %v", err)
	}
	if _, err := js.Publish(ctx, topo.RequestSubject, []byte("request")); err != nil {
		t.Fatal(err)
	}
	b, err := broker.Provision(ctx, js, topo)
	if err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	checkProvisioned(t, js, topo)
	if n := b.Requests.CachedInfo().NumPending; n != 1 {
		t.Errorf("after the second Provision the consumer has %d requests pending, want 1", n)
	}

	topo.RequestMaxBytes, topo.BucketMaxBytes, topo.BucketTTL, topo.FollowTimeout = 2<<20, 5<<20, 48*time.Hour, 3*time.Hour
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatalf("Provision with new limits: %v", err)
	}
	checkProvisioned(t, js, topo)
	if s := streamConfig(t, js, topo.RequestStream); s.MaxBytes != 2<<20 {
		t.Errorf("request stream max bytes %d after the update", s.MaxBytes)
	}
}

// An earlier version created the streams without byte limits, the consumer with bounded
// deliveries and pending acks, and the bucket with per-key TTLs (LimitMarkerTTL 1m), which
// nats-server does not let anyone turn off. Provision must upgrade all of it without failing.
func TestProvisionUpgradesEarlierTopology(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx := testContext(t)
	topo := topology(true)
	for _, sc := range topo.Streams() {
		sc.MaxBytes, sc.Discard, sc.MaxAge, sc.Duplicates = 0, jetstream.DiscardOld, 7*24*time.Hour, 2*time.Minute
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	old := topo.ConsumerConfig()
	old.MaxDeliver, old.MaxAckPending = 15, 1000
	if _, err := js.CreateConsumer(ctx, topo.RequestStream, old); err != nil {
		t.Fatal(err)
	}
	oldFollow := topo.FollowConsumerConfig()
	oldFollow.MaxAckPending = 1000
	if _, err := js.CreateConsumer(ctx, topo.FollowStream, oldFollow); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: topo.Bucket, Description: "cpcancel: per-request leases and recorded results",
		History: 1, TTL: 24 * time.Hour, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("recorded")); err != nil {
		t.Fatal(err)
	}

	b, err := broker.Provision(ctx, js, topo)
	if err != nil {
		t.Fatalf("Provision over the earlier topology: %v", err)
	}
	for _, s := range topo.Streams() {
		c := streamConfig(t, js, s.Name)
		if c.MaxBytes != s.MaxBytes || c.Discard != s.Discard || c.MaxAge != s.MaxAge {
			t.Errorf("stream %s not upgraded: max bytes %d, %s, max age %s", s.Name, c.MaxBytes, c.Discard, c.MaxAge)
		}
	}
	for _, c := range []jetstream.ConsumerConfig{
		consumerConfig(t, js, topo.RequestStream, topo.Consumer), consumerConfig(t, js, topo.FollowStream, topo.FollowConsumer),
	} {
		if c.MaxDeliver != -1 || c.MaxAckPending != -1 {
			t.Errorf("consumer %s not upgraded: MaxDeliver %d, MaxAckPending %d", c.Durable, c.MaxDeliver, c.MaxAckPending)
		}
	}
	st := bucketStatus(t, js, topo.Bucket)
	if c := st.Config(); c.MaxBytes != topo.BucketMaxBytes || c.TTL != topo.BucketTTL || c.History != 1 || c.Description != topo.BucketConfig().Description {
		t.Errorf("bucket not upgraded: %+v", c)
	}
	if st.LimitMarkerTTL() != time.Minute {
		t.Errorf("bucket's limit marker TTL %s, want the earlier 1m kept", st.LimitMarkerTTL())
	}
	if e, err := b.Bucket.Get(ctx, "k"); err != nil || string(e.Value()) != "recorded" {
		t.Errorf("the earlier record is gone: %v", err)
	}
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Errorf("Provision again over the upgraded bucket: %v", err)
	}
	if _, err := broker.Bind(ctx, js, topo); err != nil {
		t.Errorf("Bind to the upgraded topology: %v", err)
	}
}

// Provision and Bind refuse a topology with a field left unset rather than create something
// unbounded.
func TestIncompleteTopology(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	topo := topology(true)
	topo.RequestMaxBytes, topo.BucketTTL, topo.FollowMaxBytes = 0, 0, 0
	for name, f := range map[string]func(context.Context, jetstream.JetStream, broker.Topology) (broker.Bound, error){
		"Provision": broker.Provision, "Bind": broker.Bind,
	} {
		_, err := f(testContext(t), js, topo)
		if err == nil || err.Error() != "broker: topology without RequestMaxBytes, BucketTTL, FollowMaxBytes" {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := js.Stream(testContext(t), topo.RequestStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("Provision of an incomplete topology created the request stream: %v", err)
	}
}

// TestMissing lists what of a provisioned topology has gone, and nothing once it is provisioned
// again.
func TestMissing(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx := testContext(t)
	topo := topology(true)
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if missing, err := broker.Missing(ctx, js, topo); err != nil || len(missing) != 0 {
		t.Fatalf("Missing on a provisioned topology = %q, %v; want none", missing, err)
	}
	if err := js.DeleteConsumer(ctx, topo.RequestStream, topo.Consumer); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, topo.FollowStream); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, topo.Bucket); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"stream " + topo.FollowStream + " (CPCANCEL_FOLLOW_STREAM)",
		"consumer " + topo.Consumer + " (CPCANCEL_CONSUMER)",
		"consumer " + topo.FollowConsumer + " (CPCANCEL_FOLLOW_CONSUMER)", // gone with its stream
		"bucket " + topo.Bucket + " (CPCANCEL_IDEMPOTENCY_BUCKET)",
	}
	if missing, err := broker.Missing(ctx, js, topo); err != nil || !slices.Equal(missing, want) {
		t.Fatalf("Missing = %q, %v; want %q", missing, err, want)
	}
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if missing, err := broker.Missing(ctx, js, topo); err != nil || len(missing) != 0 {
		t.Errorf("Missing after provisioning again = %q, %v; want none", missing, err)
	}
}

func TestBindProvisioned(t *testing.T) {
	for _, following := range []bool{false, true} {
		t.Run(fmt.Sprintf("following=%t", following), func(t *testing.T) {
			_, js := natstest.Start(t).Connect(t)
			topo := topology(following)
			if _, err := broker.Provision(testContext(t), js, topo); err != nil {
				t.Fatal(err)
			}
			b, err := broker.Bind(testContext(t), js, topo)
			if err != nil {
				t.Fatalf("Bind: %v", err)
			}
			if b.Requests == nil || b.Bucket == nil || (b.Follow != nil) != following {
				t.Errorf("Bind returned %+v", b)
			}
		})
	}
	// Following turned off: the follow stream and consumer may stay, and are not looked at.
	t.Run("following off over a following topology", func(t *testing.T) {
		_, js := natstest.Start(t).Connect(t)
		if _, err := broker.Provision(testContext(t), js, topology(true)); err != nil {
			t.Fatal(err)
		}
		if b, err := broker.Bind(testContext(t), js, topology(false)); err != nil || b.Follow != nil {
			t.Errorf("Bind: %+v, %v", b, err)
		}
	})
}

// TestBind changes one thing at a time in a provisioned topology, the way a hand-written NACK
// resource might differ, and wants Bind to refuse it with exactly these messages.
func TestBind(t *testing.T) {
	topo := topology(true)
	type env struct {
		ctx context.Context
		js  jetstream.JetStream
	}
	updateStream := func(name string, change func(*jetstream.StreamConfig)) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			c := streamConfig(t, e.js, name)
			change(&c)
			if _, err := e.js.UpdateStream(e.ctx, c); err != nil {
				t.Fatalf("update stream %s: %v", name, err)
			}
		}
	}
	updateConsumer := func(stream, name string, change func(*jetstream.ConsumerConfig)) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			c := consumerConfig(t, e.js, stream, name)
			change(&c)
			if _, err := e.js.UpdateConsumer(e.ctx, stream, c); err != nil {
				t.Fatalf("update consumer %s: %v", name, err)
			}
		}
	}
	updateBucket := func(change func(*jetstream.KeyValueConfig)) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			c := bucketStatus(t, e.js, topo.Bucket).Config()
			change(&c)
			if _, err := e.js.UpdateKeyValue(e.ctx, c); err != nil {
				t.Fatalf("update bucket: %v", err)
			}
		}
	}
	deleteStream := func(name string) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			if err := e.js.DeleteStream(e.ctx, name); err != nil {
				t.Fatal(err)
			}
		}
	}
	// recreateStream replaces a stream (and so its consumers) by one changed in a way no update
	// may make.
	recreateStream := func(name, consumer string, change func(*jetstream.StreamConfig)) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			s := streamConfig(t, e.js, name)
			c := consumerConfig(t, e.js, name, consumer)
			deleteStream(name)(t, e)
			change(&s)
			if _, err := e.js.CreateStream(e.ctx, s); err != nil {
				t.Fatal(err)
			}
			if _, err := e.js.CreateConsumer(e.ctx, name, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		change func(*testing.T, env)
		want   []string
	}{
		{"request stream missing", deleteStream(topo.RequestStream), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
		}},
		{"follow stream missing", deleteStream(topo.FollowStream), []string{
			"stream CPCANCEL_FOLLOW (CPCANCEL_FOLLOW_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
		}},
		{"request stream in memory", recreateStream(topo.RequestStream, topo.Consumer, func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has Memory storage, want File: a restart of nats-server would lose what it holds",
		}},
		{"bucket in memory", func(t *testing.T, e env) {
			c := bucketStatus(t, e.js, topo.Bucket).Config()
			c.Storage = jetstream.MemoryStorage
			if err := e.js.DeleteKeyValue(e.ctx, topo.Bucket); err != nil {
				t.Fatal(err)
			}
			if _, err := e.js.CreateKeyValue(e.ctx, c); err != nil {
				t.Fatal(err)
			}
		}, []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) has Memory storage, want File: a restart of nats-server would lose every request's state, and requests would be sent to the API again",
		}},
		{"request stream keeping one message per subject", updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) keeps 1 messages per subject and drops older ones: it would drop messages unhandled",
		}},
		{"request stream not a work queue", recreateStream(topo.RequestStream, topo.Consumer, func(c *jetstream.StreamConfig) { c.Retention = jetstream.LimitsPolicy }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has retention Limits, want WorkQueue: a message must leave the stream once handled",
		}},
		{"follow stream not a work queue", recreateStream(topo.FollowStream, topo.FollowConsumer, func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }), []string{
			"stream CPCANCEL_FOLLOW (CPCANCEL_FOLLOW_STREAM) has retention Interest, want WorkQueue: a message must leave the stream once handled",
		}},
		{"request stream without MaxBytes", updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions CPCANCEL_REQUEST_STREAM_MAX_BYTES = 1048576)",
		}},
		{"result stream without MaxBytes", updateStream(topo.ResultStream, func(c *jetstream.StreamConfig) { c.MaxBytes = 0 }), []string{
			"stream CPCANCEL_RESULTS (CPCANCEL_RESULT_STREAM) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions CPCANCEL_RESULT_STREAM_MAX_BYTES = 4194304)",
		}},
		{"request stream discards old", updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has DiscardOld, want DiscardNew: when full it would drop its oldest messages unhandled instead of refusing new ones",
		}},
		{"follow stream discards old", updateStream(topo.FollowStream, func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }), []string{
			"stream CPCANCEL_FOLLOW (CPCANCEL_FOLLOW_STREAM) has DiscardOld, want DiscardNew: when full it would drop its oldest messages unhandled instead of refusing new ones",
		}},
		{"request stream outlives the state", updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.MaxAge = 7 * 24 * time.Hour }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) keeps requests for 168h0m0s, longer than CPCANCEL_IDEMPOTENCY_TTL 24h0m0s: a request could be delivered after its state expired and call the API again; want a max age of at most 24h0m0s",
		}},
		{"request stream keeps requests for ever", updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.MaxAge = 0 }), []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) keeps requests for ever, longer than CPCANCEL_IDEMPOTENCY_TTL 24h0m0s: a request could be delivered after its state expired and call the API again; want a max age of at most 24h0m0s",
		}},
		{"follow stream drops tasks before their deadline", updateStream(topo.FollowStream, func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }), []string{
			"stream CPCANCEL_FOLLOW (CPCANCEL_FOLLOW_STREAM) keeps tasks for 1h0m0s, not longer than CPCANCEL_FOLLOW_TIMEOUT 2h0m0s: an operation could be forgotten before its deadline; want a max age above it (cpcancel provisions 26h0m0s)",
		}},
		{"result stream misses an outcome", updateStream(topo.ResultStream, func(c *jetstream.StreamConfig) {
			c.Subjects = []string{"cloudpartner.cancel.results.cancelled", "cloudpartner.cancel.results.failed"}
		}), []string{
			`stream CPCANCEL_RESULTS (CPCANCEL_RESULT_STREAM) has subjects ["cloudpartner.cancel.results.cancelled" "cloudpartner.cancel.results.failed"], none of which covers cloudpartner.cancel.results.> (CPCANCEL_RESULT_SUBJECT_PREFIX)`,
		}},
		{"result stream covers one token only", updateStream(topo.ResultStream, func(c *jetstream.StreamConfig) { c.Subjects = []string{"cloudpartner.cancel.results.*"} }), []string{
			`stream CPCANCEL_RESULTS (CPCANCEL_RESULT_STREAM) has subjects ["cloudpartner.cancel.results.*"], none of which covers cloudpartner.cancel.results.> (CPCANCEL_RESULT_SUBJECT_PREFIX)`,
		}},
		{"dead-letter stream on another subject", updateStream(topo.DeadLetterStream, func(c *jetstream.StreamConfig) { c.Subjects = []string{"cloudpartner.cancel.dlq"} }), []string{
			`stream CPCANCEL_DEADLETTER (CPCANCEL_DEADLETTER_STREAM) has subjects ["cloudpartner.cancel.dlq"], none of which covers cloudpartner.cancel.deadletter (CPCANCEL_DEADLETTER_SUBJECT)`,
		}},
		{"request consumer missing", func(t *testing.T, e env) {
			if err := e.js.DeleteConsumer(e.ctx, topo.RequestStream, topo.Consumer); err != nil {
				t.Fatal(err)
			}
		}, []string{
			"consumer cpcancel (CPCANCEL_CONSUMER) does not exist on stream CPCANCEL_REQUESTS: create it or set CPCANCEL_PROVISION=true",
		}},
		{"request consumer gives up", updateConsumer(topo.RequestStream, topo.Consumer, func(c *jetstream.ConsumerConfig) { c.MaxDeliver = 5 }), []string{
			"consumer cpcancel (CPCANCEL_CONSUMER) on stream CPCANCEL_REQUESTS has MaxDeliver 5, want -1: JetStream must never give up on a message (cpcancel counts attempts itself)",
		}},
		{"request consumer with few pending acks", updateConsumer(topo.RequestStream, topo.Consumer, func(c *jetstream.ConsumerConfig) { c.MaxAckPending = 1000 }), []string{
			"consumer cpcancel (CPCANCEL_CONSUMER) on stream CPCANCEL_REQUESTS has MaxAckPending 1000, want -1 (or at least 100000): messages waiting out a retry delay must not stop new ones",
		}},
		{"request consumer with many pending acks", updateConsumer(topo.RequestStream, topo.Consumer, func(c *jetstream.ConsumerConfig) { c.MaxAckPending = 100000 }), nil},
		{"follow consumer gives up", updateConsumer(topo.FollowStream, topo.FollowConsumer, func(c *jetstream.ConsumerConfig) { c.MaxDeliver = 100 }), []string{
			"consumer cpcancel-follow (CPCANCEL_FOLLOW_CONSUMER) on stream CPCANCEL_FOLLOW has MaxDeliver 100, want -1: JetStream must never give up on a message (cpcancel counts attempts itself)",
		}},
		// JetStream insists on explicit acks on a work queue only.
		{"request consumer acks all", func(t *testing.T, e env) {
			recreateStream(topo.RequestStream, topo.Consumer, func(c *jetstream.StreamConfig) { c.Retention = jetstream.LimitsPolicy })(t, e)
			c := consumerConfig(t, e.js, topo.RequestStream, topo.Consumer)
			if err := e.js.DeleteConsumer(e.ctx, topo.RequestStream, topo.Consumer); err != nil {
				t.Fatal(err)
			}
			c.AckPolicy = jetstream.AckAllPolicy
			if _, err := e.js.CreateConsumer(e.ctx, topo.RequestStream, c); err != nil {
				t.Fatal(err)
			}
		}, []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has retention Limits, want WorkQueue: a message must leave the stream once handled",
			"consumer cpcancel (CPCANCEL_CONSUMER) on stream CPCANCEL_REQUESTS has ack policy AckAll, want AckExplicit",
		}},
		{"request consumer filters another subject", func(t *testing.T, e env) {
			updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.Subjects = append(c.Subjects, "cloudpartner.cancel.other") })(t, e)
			updateConsumer(topo.RequestStream, topo.Consumer, func(c *jetstream.ConsumerConfig) { c.FilterSubject = "cloudpartner.cancel.other" })(t, e)
		}, []string{
			`consumer cpcancel (CPCANCEL_CONSUMER) on stream CPCANCEL_REQUESTS filters "cloudpartner.cancel.other", want "cloudpartner.cancel.requests"`,
		}},
		{"bucket missing", func(t *testing.T, e env) {
			if err := e.js.DeleteKeyValue(e.ctx, topo.Bucket); err != nil {
				t.Fatal(err)
			}
		}, []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) does not exist: create it or set CPCANCEL_PROVISION=true",
		}},
		{"bucket TTL too short", updateBucket(func(c *jetstream.KeyValueConfig) { c.TTL = time.Hour }), []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) keeps entries for 1h0m0s, want a TTL of at least CPCANCEL_IDEMPOTENCY_TTL 24h0m0s (and not for ever): a request's state must outlive the request in its stream, and must expire, or the bucket fills up",
		}},
		{"bucket keeps entries for ever", updateBucket(func(c *jetstream.KeyValueConfig) { c.TTL = 0 }), []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) keeps entries for ever, want a TTL of at least CPCANCEL_IDEMPOTENCY_TTL 24h0m0s (and not for ever): a request's state must outlive the request in its stream, and must expire, or the bucket fills up",
		}},
		{"bucket TTL longer", updateBucket(func(c *jetstream.KeyValueConfig) { c.TTL = 48 * time.Hour }), nil},
		{"bucket with history", updateBucket(func(c *jetstream.KeyValueConfig) { c.History = 5 }), []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) keeps 5 values per key, want 1 (history)",
		}},
		{"bucket without MaxBytes", updateBucket(func(c *jetstream.KeyValueConfig) { c.MaxBytes = -1 }), []string{
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions CPCANCEL_IDEMPOTENCY_MAX_BYTES = 3145728)",
		}},
		{"wider subjects", func(t *testing.T, e env) {
			updateStream(topo.ResultStream, func(c *jetstream.StreamConfig) { c.Subjects = []string{"cloudpartner.cancel.results.>", "x.y"} })(t, e)
			updateStream(topo.DeadLetterStream, func(c *jetstream.StreamConfig) { c.Subjects = []string{"cloudpartner.*.deadletter"} })(t, e)
		}, nil},
		// Everything wrong at once comes in one error, in a fixed order: streams, consumers, bucket.
		{"several problems", func(t *testing.T, e env) {
			updateBucket(func(c *jetstream.KeyValueConfig) { c.History = 2 })(t, e)
			updateConsumer(topo.FollowStream, topo.FollowConsumer, func(c *jetstream.ConsumerConfig) { c.MaxAckPending = 10 })(t, e)
			updateConsumer(topo.RequestStream, topo.Consumer, func(c *jetstream.ConsumerConfig) { c.MaxDeliver = 5 })(t, e)
			deleteStream(topo.DeadLetterStream)(t, e)
			updateStream(topo.RequestStream, func(c *jetstream.StreamConfig) { c.MaxBytes, c.Discard = -1, jetstream.DiscardOld })(t, e)
		}, []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has no MaxBytes: a full disk would stop the pipeline (cpcancel provisions CPCANCEL_REQUEST_STREAM_MAX_BYTES = 1048576)",
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) has DiscardOld, want DiscardNew: when full it would drop its oldest messages unhandled instead of refusing new ones",
			"stream CPCANCEL_DEADLETTER (CPCANCEL_DEADLETTER_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
			"consumer cpcancel (CPCANCEL_CONSUMER) on stream CPCANCEL_REQUESTS has MaxDeliver 5, want -1: JetStream must never give up on a message (cpcancel counts attempts itself)",
			"consumer cpcancel-follow (CPCANCEL_FOLLOW_CONSUMER) on stream CPCANCEL_FOLLOW has MaxAckPending 10, want -1 (or at least 100000): messages waiting out a retry delay must not stop new ones",
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) keeps 2 values per key, want 1 (history)",
		}},
		{"nothing there", func(t *testing.T, e env) {
			for _, s := range topo.Streams() {
				deleteStream(s.Name)(t, e)
			}
			if err := e.js.DeleteKeyValue(e.ctx, topo.Bucket); err != nil {
				t.Fatal(err)
			}
		}, []string{
			"stream CPCANCEL_REQUESTS (CPCANCEL_REQUEST_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
			"stream CPCANCEL_RESULTS (CPCANCEL_RESULT_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
			"stream CPCANCEL_DEADLETTER (CPCANCEL_DEADLETTER_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
			"stream CPCANCEL_FOLLOW (CPCANCEL_FOLLOW_STREAM) does not exist: create it or set CPCANCEL_PROVISION=true",
			"bucket CPCANCEL_IDEMPOTENCY (CPCANCEL_IDEMPOTENCY_BUCKET) does not exist: create it or set CPCANCEL_PROVISION=true",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, js := natstest.Start(t).Connect(t)
			e := env{testContext(t), js}
			if _, err := broker.Provision(e.ctx, js, topo); err != nil {
				t.Fatal(err)
			}
			tt.change(t, e)
			b, err := broker.Bind(e.ctx, js, topo)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Bind: %v", err)
				}
				if b.Requests == nil || b.Follow == nil || b.Bucket == nil {
					t.Errorf("Bind returned %+v", b)
				}
				return
			}
			if err == nil {
				t.Fatalf("Bind succeeded, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if got := err.Error(); got != strings.Join(tt.want, "\n") {
				t.Errorf("Bind error:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
			if b != (broker.Bound{}) {
				t.Errorf("Bind failed but returned %+v", b)
			}
		})
	}
}

// A full request stream refuses a new request (discard new): the publisher gets an error and can
// retry, and no request already stored is dropped unanswered to make room.
func TestFullRequestStreamRefusesPublish(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	ctx := testContext(t)
	topo := topology(false)
	topo.RequestMaxBytes = 4 << 10
	if _, err := broker.Provision(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 512)
	var stored int
	var refused error
	for i := range 100 {
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: topo.RequestSubject, Data: body}, jetstream.WithMsgID(fmt.Sprintf("request-%d", i)))
		if err != nil {
			refused = err
			break
		}
		stored++
	}
	if refused == nil {
		t.Fatalf("100 requests of %d bytes all stored in a stream of %d bytes", len(body), topo.RequestMaxBytes)
	}
	t.Logf("request %d refused: %v", stored+1, refused)
	var apiErr *jetstream.APIError
	if !errors.As(refused, &apiErr) || apiErr.Description != "maximum bytes exceeded" {
		t.Errorf("publish to a full stream: %v, want JetStream's maximum bytes exceeded", refused)
	}
	s, err := js.Stream(ctx, topo.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) {
		t.Errorf("stream holds messages %d to %d (%d), want the first %d requests, none dropped", info.State.FirstSeq, info.State.LastSeq, info.State.Msgs, stored)
	}
}

// A denied publish makes the server send an error for each message: the log gets at most one
// line a second, saying how many more came, not one line each.
func TestAsyncErrorsLoggedAtMostOnceASecond(t *testing.T) {
	ns := natstest.StartWith(t, &server.Options{Users: []*server.User{{
		Username: "client", Password: "secret",
		Permissions: &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"denied.>"}}},
	}}})
	out := &natstest.Buffer{}
	nc, err := broker.Connect(ns.ClientURL(), "test", slog.New(slog.NewTextHandler(out, nil)), nats.UserInfo("client", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	deny := func(n int) {
		t.Helper()
		for range n {
			if err := nc.Publish("denied.x", nil); err != nil {
				t.Fatal(err)
			}
		}
		// The server answers every publish before the flush's PONG; the handler runs just after.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	lines := func() []string { return strings.Split(strings.TrimSpace(out.String()), "\n") }

	first := time.Now()
	deny(50)
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], "Permissions Violation") || !strings.Contains(got[0], "more_since_last_logged=0") {
		t.Fatalf("after 50 denied publishes the log holds %d lines, want 1 saying what was denied:\n%s", len(got), out)
	}
	time.Sleep(time.Until(first.Add(1100 * time.Millisecond)))
	deny(1)
	if got := lines(); len(got) != 2 || !strings.Contains(got[1], "more_since_last_logged=49") {
		t.Fatalf("a second later the log holds %d lines, want 2, the second counting the 49 not logged:\n%s", len(got), out)
	}
}

// A NATS URL that does not parse is reported without the URL: it may hold a password.
func TestConnectNeverEchoesTheURL(t *testing.T) {
	_, err := broker.Connect("nats://cpcancel:p%zzs3cret@127.0.0.1:1", "test", slog.New(slog.DiscardHandler))
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "does not parse") {
		t.Errorf("error %v, want one that says the URL does not parse, without the password", err)
	}
}
