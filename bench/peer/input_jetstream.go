package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// The nats_jetstream input behaves as Redpanda Connect's does (legacy nats.go JetStream API):
//   - bind: true with stream and durable names an existing consumer; a pull consumer is read with
//     Fetch(1) per message, a push consumer with a synchronous subscription bound to it;
//   - otherwise a push subscription (SubscribeSync / QueueSubscribeSync) on subject, creating or
//     reusing the durable consumer, with deliver policy, ack_wait and max_ack_pending, bound to
//     stream when one is named.
//
// Each message is acked when Benthos reports it delivered (after the output's write returned) and
// nacked when Benthos reports an error. Headers become metadata, with the nats_* fields.
func jetStreamInputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Summary("Reads messages from NATS JetStream (a small stand-in for Redpanda Connect's nats_jetstream input).").
		Field(service.NewStringListField("urls").Description("NATS URLs; items holding commas are split.")).
		Field(service.NewStringField("queue").Optional()).
		Field(service.NewStringField("subject").Optional()).
		Field(service.NewStringField("durable").Optional()).
		Field(service.NewStringField("stream").Optional()).
		Field(service.NewBoolField("bind").Optional()).
		Field(service.NewStringEnumField("deliver", "all", "last", "last_per_subject", "new").Default("all")).
		Field(service.NewDurationField("ack_wait").Default("30s")).
		Field(service.NewIntField("max_ack_pending").Default(1024))
}

func registerJetStreamInput() {
	err := service.RegisterInput("nats_jetstream", jetStreamInputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.Input, error) {
			return newJSInput(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type jsInput struct {
	urls                            string
	queue, subject, durable, stream string
	bind                            bool
	deliver                         nats.SubOpt
	ackWait                         nats.SubOpt
	maxAckPending                   int
	log                             *service.Logger

	mu   sync.Mutex
	conn *nats.Conn
	sub  *nats.Subscription
	pull bool
}

func optString(conf *service.ParsedConfig, name string) (string, error) {
	if !conf.Contains(name) {
		return "", nil
	}
	return conf.FieldString(name)
}

func joinURLs(conf *service.ParsedConfig) (string, error) {
	list, err := conf.FieldStringList("urls")
	if err != nil {
		return "", err
	}
	if len(list) == 0 {
		return "", errors.New("urls: at least one URL is required")
	}
	return strings.Join(list, ","), nil
}

func newJSInput(conf *service.ParsedConfig, mgr *service.Resources) (*jsInput, error) {
	in := &jsInput{log: mgr.Logger()}
	var err error
	if in.urls, err = joinURLs(conf); err != nil {
		return nil, err
	}
	for name, dst := range map[string]*string{"queue": &in.queue, "subject": &in.subject, "durable": &in.durable, "stream": &in.stream} {
		if *dst, err = optString(conf, name); err != nil {
			return nil, err
		}
	}
	if conf.Contains("bind") {
		if in.bind, err = conf.FieldBool("bind"); err != nil {
			return nil, err
		}
	}
	if in.bind && in.stream == "" && in.durable == "" {
		return nil, errors.New("bind needs stream or durable")
	}
	if !in.bind && in.subject == "" {
		return nil, errors.New("subject is required unless bind is true")
	}
	deliver, err := conf.FieldString("deliver")
	if err != nil {
		return nil, err
	}
	switch deliver {
	case "all":
		in.deliver = nats.DeliverAll()
	case "last":
		in.deliver = nats.DeliverLast()
	case "last_per_subject":
		in.deliver = nats.DeliverLastPerSubject()
	case "new":
		in.deliver = nats.DeliverNew()
	}
	wait, err := conf.FieldDuration("ack_wait")
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		in.ackWait = nats.AckWait(wait)
	}
	if in.maxAckPending, err = conf.FieldInt("max_ack_pending"); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *jsInput) Connect(ctx context.Context) (err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.conn != nil {
		return nil
	}
	conn, err := nats.Connect(in.urls, nats.Name("peer-input"))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	js, err := conn.JetStream()
	if err != nil {
		return err
	}
	subject, pull := in.subject, false
	if in.bind && in.stream != "" && in.durable != "" {
		info, err := js.ConsumerInfo(in.stream, in.durable, nats.Context(ctx))
		if err != nil {
			return fmt.Errorf("consumer %s on %s: %w", in.durable, in.stream, err)
		}
		if subject == "" {
			subject = info.Config.DeliverSubject
			if subject == "" {
				subject = info.Config.FilterSubject
			}
		}
		pull = info.Config.DeliverSubject == ""
	}
	opts := []nats.SubOpt{nats.ManualAck()}
	var sub *nats.Subscription
	if pull {
		sub, err = js.PullSubscribe(subject, in.durable, append(opts, nats.Bind(in.stream, in.durable))...)
	} else {
		if in.durable != "" {
			opts = append(opts, nats.Durable(in.durable))
		}
		opts = append(opts, in.deliver)
		if in.ackWait != nil {
			opts = append(opts, in.ackWait)
		}
		if in.maxAckPending != 0 {
			opts = append(opts, nats.MaxAckPending(in.maxAckPending))
		}
		switch {
		case in.bind && in.stream != "" && in.durable != "":
			opts = append(opts, nats.Bind(in.stream, in.durable))
		case in.stream != "":
			opts = append(opts, nats.BindStream(in.stream))
		}
		if in.queue == "" {
			sub, err = js.SubscribeSync(subject, opts...)
		} else {
			sub, err = js.QueueSubscribeSync(subject, in.queue, opts...)
		}
	}
	if err != nil {
		return err
	}
	in.conn, in.sub, in.pull = conn, sub, pull
	return nil
}

func (in *jsInput) Read(ctx context.Context) (*service.Message, service.AckFunc, error) {
	in.mu.Lock()
	sub, pull := in.sub, in.pull
	in.mu.Unlock()
	if sub == nil {
		return nil, nil, service.ErrNotConnected
	}
	if !pull {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
				in.disconnect()
				return nil, nil, service.ErrNotConnected
			}
			return nil, nil, err
		}
		return toMessage(m)
	}
	for {
		msgs, err := sub.Fetch(1, nats.Context(ctx))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				if ctx.Err() != nil {
					return nil, nil, ctx.Err()
				}
				continue // the library's own fetch deadline, not the caller's
			}
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
				in.disconnect()
				return nil, nil, service.ErrNotConnected
			}
			return nil, nil, err
		}
		if len(msgs) > 0 {
			return toMessage(msgs[0])
		}
	}
}

func toMessage(m *nats.Msg) (*service.Message, service.AckFunc, error) {
	msg := service.NewMessage(m.Data)
	msg.MetaSetMut("nats_subject", m.Subject)
	if md, err := m.Metadata(); err == nil {
		msg.MetaSetMut("nats_sequence_stream", strconv.FormatUint(md.Sequence.Stream, 10))
		msg.MetaSetMut("nats_sequence_consumer", strconv.FormatUint(md.Sequence.Consumer, 10))
		msg.MetaSetMut("nats_num_delivered", strconv.FormatUint(md.NumDelivered, 10))
		msg.MetaSetMut("nats_num_pending", strconv.FormatUint(md.NumPending, 10))
		msg.MetaSetMut("nats_domain", md.Domain)
		msg.MetaSetMut("nats_timestamp_unix_nano", strconv.FormatInt(md.Timestamp.UnixNano(), 10))
	}
	for k, vs := range m.Header {
		if len(vs) > 0 && vs[0] != "" {
			msg.MetaSetMut(k, vs[0])
		}
	}
	return msg, func(_ context.Context, res error) error {
		if res != nil {
			return m.Nak()
		}
		return m.Ack()
	}, nil
}

func (in *jsInput) disconnect() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sub != nil {
		_ = in.sub.Drain()
		in.sub = nil
	}
	if in.conn != nil {
		in.conn.Close()
		in.conn = nil
	}
}

func (in *jsInput) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { in.disconnect(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
