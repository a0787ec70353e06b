package main

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// The nats_jetstream output behaves as Redpanda Connect's does: each message is published to its
// interpolated subject with js.PublishMsg, which waits for JetStream's PubAck; Benthos runs up to
// max_in_flight writes at once.
func jetStreamOutputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Summary("Writes messages to a NATS JetStream subject (a small stand-in for Redpanda Connect's nats_jetstream output).").
		Field(service.NewStringListField("urls").Description("NATS URLs; items holding commas are split.")).
		Field(service.NewInterpolatedStringField("subject")).
		Field(service.NewInterpolatedStringMapField("headers").Default(map[string]any{})).
		Field(service.NewIntField("max_in_flight").Default(1024))
}

func registerJetStreamOutput() {
	err := service.RegisterOutput("nats_jetstream", jetStreamOutputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.Output, int, error) {
			maxInFlight, err := conf.FieldInt("max_in_flight")
			if err != nil {
				return nil, 0, err
			}
			o := &jsOutput{log: mgr.Logger()}
			if o.urls, err = joinURLs(conf); err != nil {
				return nil, 0, err
			}
			if o.subject, err = conf.FieldInterpolatedString("subject"); err != nil {
				return nil, 0, err
			}
			if o.headers, err = conf.FieldInterpolatedStringMap("headers"); err != nil {
				return nil, 0, err
			}
			return o, maxInFlight, nil
		})
	if err != nil {
		panic(err)
	}
}

type jsOutput struct {
	urls    string
	subject *service.InterpolatedString
	headers map[string]*service.InterpolatedString
	log     *service.Logger

	mu   sync.Mutex
	conn *nats.Conn
	js   nats.JetStreamContext
}

func (o *jsOutput) Connect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		return nil
	}
	conn, err := nats.Connect(o.urls, nats.Name("peer-output"))
	if err != nil {
		return err
	}
	js, err := conn.JetStream()
	if err != nil {
		conn.Close()
		return err
	}
	o.conn, o.js = conn, js
	return nil
}

func (o *jsOutput) Write(ctx context.Context, msg *service.Message) error {
	o.mu.Lock()
	js := o.js
	o.mu.Unlock()
	if js == nil {
		return service.ErrNotConnected
	}
	subject, err := o.subject.TryString(msg)
	if err != nil {
		return err
	}
	out := nats.NewMsg(subject)
	if out.Data, err = msg.AsBytes(); err != nil {
		return err
	}
	for k, v := range o.headers {
		s, err := v.TryString(msg)
		if err != nil {
			return err
		}
		out.Header.Add(k, s)
	}
	_, err = js.PublishMsg(out) // as Connect: waits for the PubAck, the context's default 5s timeout
	return err
}

func (o *jsOutput) Close(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		o.conn.Close()
		o.conn, o.js = nil, nil
	}
	return nil
}
