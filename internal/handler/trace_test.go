package handler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/handler"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/tracing"
	"github.com/cpcancel/cpcancel/internal/worker"
)

const (
	producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	producerSpan  = "00f067aa0ba902b7"
	producerTP    = "00-" + producerTrace + "-" + producerSpan + "-01"
)

// tracedHandler is e's handler with tracing on, its spans in the returned exporter.
func (e *env) tracedHandler(api handler.Canceller) (*handler.Handler, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tracer := tracing.NewWithProcessor(sdktrace.NewSimpleSpanProcessor(exp)).Tracer()
	cfg := e.cfg
	cfg.Tracer = tracer
	out := results.New(results.Config{SubjectPrefix: "res", DeadLetterSubject: "dl", Mode: natsce.Binary, Timeout: 5 * time.Second, Tracer: tracer}, e.js, e.rec)
	return handler.New(cfg, api, e.store, out, e.rec), exp
}

// publishTraced stores a request carrying the producer's trace context the way named by how:
// binary (ce-traceparent), structured (the traceparent attribute) or header (a plain traceparent
// NATS header, as nats.net writes it, on a binary request without the extension).
func (e *env) publishTraced(how, id, data string) {
	e.t.Helper()
	ev, err := cancelevent.NewRequest("/test", id, cancelevent.RequestData{}, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ev.SetData("application/json", []byte(data)); err != nil {
		e.t.Fatal(err)
	}
	mode := natsce.Binary
	switch how {
	case "structured":
		mode = natsce.Structured
		ev.SetExtension("traceparent", producerTP)
		ev.SetExtension("tracestate", "congo=t61rcWkgMzE")
	case "binary":
		ev.SetExtension("traceparent", producerTP)
	}
	msg, err := natsce.NewMsg(context.Background(), "req", ev, mode)
	if err != nil {
		e.t.Fatal(err)
	}
	if how == "header" {
		msg.Header.Set("traceparent", producerTP)
	}
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		e.t.Fatal(err)
	}
}

func attrs(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// TestTraceSpans checks the spans of every outcome, with the producer's context in each way a
// request may carry it: names, kinds, parents, attributes, the settle event, status, and that the
// result's traceparent continues the trace from the processing span.
func TestTraceSpans(t *testing.T) {
	ok200 := answer(cloudpartner.Accepted{StatusCode: 200, CorrelationID: "c"}, nil)
	ok202 := answer(cloudpartner.Accepted{StatusCode: 202, Location: location, OperationID: "56615b67"}, nil)
	notFound := answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 404, Code: "NotFound", Message: "no offer"})
	unavailable := answer(cloudpartner.Accepted{}, &cloudpartner.Error{StatusCode: 503, Code: "ServiceUnavailable", Transient: true})
	for _, tc := range []struct {
		name    string
		api     func(int) (cloudpartner.Accepted, error)
		data    string
		raw     bool // not a CloudEvent: dead-lettered
		settle  string
		outcome string // "" when no result is published
		err     bool   // the process span's status is Error
	}{
		{name: "cancelled", api: ok200, data: valid, settle: "ack", outcome: "cancelled"},
		{name: "cancelling", api: ok202, data: valid, settle: "ack", outcome: "cancelling"},
		{name: "failed", api: notFound, data: valid, settle: "ack", outcome: "failed", err: true},
		{name: "invalid request", api: ok200, data: `{"publisherId":"../etc","offerId":"x"}`, settle: "ack", outcome: "failed", err: true},
		{name: "retried", api: unavailable, data: valid, settle: "nak"},
		{name: "dead letter", raw: true, settle: "term", err: true},
	} {
		for _, how := range []string{"binary", "structured", "header"} {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				e := newEnv(t)
				h, exp := e.tracedHandler(&apiFunc{answer: tc.api})
				if tc.raw {
					if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: "req",
						Header: nats.Header{"traceparent": {producerTP}}, Data: []byte("not an event")}); err != nil {
						t.Fatal(err)
					}
				} else {
					e.publishTraced(how, "r1", tc.data)
				}
				d := h.Decide(context.Background(), e.next())
				if got := d.Kind.String(); got != tc.settle {
					t.Fatalf("settled %s, want %s (%s)", got, tc.settle, d.Reason)
				}
				spans := exp.GetSpans()
				var process, publish *tracetest.SpanStub
				for i := range spans {
					switch spans[i].SpanKind {
					case trace.SpanKindConsumer:
						process = &spans[i]
					case trace.SpanKindProducer:
						publish = &spans[i]
					}
				}
				if process == nil {
					t.Fatalf("no process span in %d spans", len(spans))
				}
				if process.Name != "process req" {
					t.Errorf("process span named %q", process.Name)
				}
				if process.Parent.TraceID().String() != producerTrace || process.Parent.SpanID().String() != producerSpan || !process.Parent.IsRemote() {
					t.Errorf("process span's parent %v, want the producer's %s", process.Parent, producerTP)
				}
				a := attrs(process.Attributes)
				want := map[string]string{"messaging.system": "nats", "messaging.destination.name": "req",
					"messaging.operation.type": "process", "messaging.message.id": "REQ:1",
					"messaging.nats.message.delivery_count": "1", "messaging.consumer.group.name": "h"}
				if !tc.raw {
					want["cloudevents.event_id"] = "r1"
					want["cloudevents.event_source"] = "/test"
					want["cloudevents.event_type"] = cancelevent.RequestType
				}
				if tc.outcome != "" {
					want["cpcancel.outcome"] = tc.outcome
				}
				for k, v := range want {
					if a[k] != v {
						t.Errorf("process span attribute %s = %q, want %q", k, a[k], v)
					}
				}
				if len(process.Events) != 1 || process.Events[0].Name != "settle" || attrs(process.Events[0].Attributes)["cpcancel.settle"] != tc.settle {
					t.Errorf("events %+v, want one settle %s", process.Events, tc.settle)
				}
				if tc.settle == "nak" && attrs(process.Events[0].Attributes)["cpcancel.settle.delay"] == "" {
					t.Errorf("nak without its delay: %+v", process.Events[0].Attributes)
				}
				if (process.Status.Code == codes.Error) != tc.err {
					t.Errorf("status %v, want error %v", process.Status, tc.err)
				}
				switch {
				case tc.raw:
					if publish == nil || publish.Name != "publish dl" || publish.Parent.SpanID() != process.SpanContext.SpanID() {
						t.Errorf("publish span %+v, want the dead letter's, a child of the process span", publish)
					}
					return
				case tc.outcome == "":
					if publish != nil {
						t.Errorf("publish span %q without a result", publish.Name)
					}
					return
				}
				if publish == nil || publish.Name != "publish res."+tc.outcome || publish.Parent.SpanID() != process.SpanContext.SpanID() {
					t.Fatalf("publish span %+v, want a child of the process span", publish)
				}
				if a := attrs(publish.Attributes); a["messaging.destination.name"] != "res."+tc.outcome || a["messaging.system"] != "nats" {
					t.Errorf("publish attributes %v", a)
				}
				rs := e.results()
				if len(rs) != 1 {
					t.Fatalf("%d results", len(rs))
				}
				wantTP := "00-" + producerTrace + "-" + process.SpanContext.SpanID().String() + "-01"
				if tp := rs[0].Extensions()["traceparent"]; tp != wantTP {
					t.Errorf("result traceparent %v, want the process span's %s", tp, wantTP)
				}
				if tc.outcome != "cancelling" {
					return
				}
				if st := e.state("r1"); st.TraceParent != wantTP {
					t.Errorf("record's traceparent %q, want %q", st.TraceParent, wantTP)
				}
			})
		}
	}
}

// TestTraceRoot: a request without any trace context gets a root span, and its result the
// process span's context.
func TestTraceRoot(t *testing.T) {
	e := newEnv(t)
	h, exp := e.tracedHandler(&apiFunc{answer: answer(cloudpartner.Accepted{StatusCode: 200}, nil)})
	e.publish("r1", valid)
	if d := h.Decide(context.Background(), e.next()); d.Kind != worker.KindAck {
		t.Fatalf("decision %+v", d)
	}
	var process tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindConsumer {
			process = s
		}
	}
	if process.Parent.IsValid() {
		t.Errorf("parent %v, want a root span", process.Parent)
	}
	tp, _ := e.results()[0].Extensions()["traceparent"].(string)
	if !strings.Contains(tp, process.SpanContext.TraceID().String()+"-"+process.SpanContext.SpanID().String()) {
		t.Errorf("result traceparent %q, want the process span %v", tp, process.SpanContext)
	}
}
