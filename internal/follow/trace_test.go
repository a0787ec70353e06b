package follow

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cloudpartner"
	"github.com/cpcancel/cpcancel/internal/tracing"
	"github.com/cpcancel/cpcancel/internal/worker"
)

// TestTraceContinuesFromRecord: a Follower started after the request was answered (a restart, or
// another replica) continues the trace of the span that answered, as the record keeps it; a
// record written without it continues the first result's. The final result's traceparent is the
// follow task's span.
func TestTraceContinuesFromRecord(t *testing.T) {
	const answeringTrace, answeringSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	for _, tc := range []struct {
		name                  string
		recorded              string // the record's traceparent; "" for a record from before tracing
		wantTrace, wantParent string
	}{
		{"recorded", "00-" + answeringTrace + "-" + answeringSpan + "-01", answeringTrace, answeringSpan},
		{"record without one", "", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"}, // request(id)'s
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeAPI{origin: apiOrigin, answer: answer(cloudpartner.Operation{Status: "Canceled"}, nil)}
			e := newEnv(t, api)
			exp := tracetest.NewInMemoryExporter()
			e.f.cfg.Tracer = tracing.NewWithProcessor(sdktrace.NewSimpleSpanProcessor(exp)).Tracer()
			bg := context.Background()
			loc := apiOrigin + "/ops/traced"
			key := e.following(t, "traced", loc, time.Now().Add(-time.Second), time.Now().Add(time.Hour))
			if tc.recorded != "" {
				cur, err := e.store.Get(bg, key)
				must(t, err)
				cur.TraceParent = tc.recorded
				_, err = e.store.Update(bg, key, cur.State, cur.Revision)
				must(t, err)
			}

			if d := e.f.Decide(bg, e.deliver(t, taskBody(key, loc), "")); d.Kind != worker.KindAck {
				t.Fatalf("decision %+v", d)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want the task's process span", len(spans))
			}
			s := spans[0]
			if s.Name != "process "+followSubject || s.SpanKind != trace.SpanKindConsumer {
				t.Errorf("span %q %v", s.Name, s.SpanKind)
			}
			if s.Parent.TraceID().String() != tc.wantTrace || s.Parent.SpanID().String() != tc.wantParent {
				t.Errorf("parent %s/%s, want %s/%s", s.Parent.TraceID(), s.Parent.SpanID(), tc.wantTrace, tc.wantParent)
			}
			if len(s.Events) != 1 || s.Events[0].Name != "settle" {
				t.Errorf("events %+v, want the settle event", s.Events)
			}
			rs := e.results(t)
			if len(rs) != 1 {
				t.Fatalf("%d results", len(rs))
			}
			want := "00-" + tc.wantTrace + "-" + s.SpanContext.SpanID().String() + "-01"
			if tp := rs[0].ev.Extensions()["traceparent"]; tp != want {
				t.Errorf("final result's traceparent %v, want %s", tp, want)
			}
			if st, err := e.store.Get(bg, key); err != nil || st.TraceParent != tc.recorded {
				t.Errorf("record's traceparent %q %v, want it kept as %q", st.TraceParent, err, tc.recorded)
			}
		})
	}
}
