package cloudpartner

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestClientSpans checks the HTTP CLIENT span of each exchange: one per request sent (the retry
// after a 401 is a resend), method, status, url without the query, and never the token.
func TestClientSpans(t *testing.T) {
	const old, fresh = "old-token-5be1", "fresh-token-9c2d"
	for _, tc := range []struct {
		name   string
		status []int // answers in order
		call   string
		want   []string // name status resend error of each span
	}{
		{name: "cancel 202", status: []int{202}, call: "cancel", want: []string{"POST 202 0 false"}},
		{name: "cancel 401 then 200", status: []int{401, 200}, call: "cancel", want: []string{"POST 401 0 true", "POST 200 1 false"}},
		{name: "cancel 503", status: []int{503}, call: "cancel", want: []string{"POST 503 0 true"}},
		{name: "poll 200", status: []int{200}, call: "poll", want: []string{"GET 200 0 false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				status := tc.status[min(n, len(tc.status)-1)]
				n++
				w.Header().Set("Location", "/api/operations/op-1?api-version=2017-10-31")
				w.WriteHeader(status)
				fmt.Fprintf(w, `{"status":"running","error":{"code":"E","message":"token %s"}}`, r.Header.Get("Authorization"))
			}))
			t.Cleanup(srv.Close)
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			c, err := New(Config{BaseURL: srv.URL, Tokens: &scriptedTokens{old: old, fresh: fresh}, Timeout: 5 * time.Second,
				Tracer: tp.Tracer("test")})
			if err != nil {
				t.Fatal(err)
			}
			ctx, parent := tp.Tracer("test").Start(context.Background(), "process")
			if tc.call == "cancel" {
				c.Cancel(ctx, CancelRequest{PublisherID: "contoso", OfferID: "offer", Attempt: 2})
			} else {
				c.Operation(ctx, srv.URL+"/api/operations/op-1?api-version=2017-10-31&sig=secret")
			}
			parent.End()
			var got []string
			for _, s := range exp.GetSpans() {
				if s.SpanKind != trace.SpanKindClient {
					continue
				}
				a := map[string]string{}
				for _, kv := range s.Attributes {
					a[string(kv.Key)] = kv.Value.Emit()
					if strings.Contains(kv.Value.Emit(), "token") || strings.Contains(kv.Value.Emit(), "?") {
						t.Errorf("attribute %s = %q holds a token or a query", kv.Key, kv.Value.Emit())
					}
				}
				if s.Parent.SpanID() != parent.SpanContext().SpanID() {
					t.Errorf("span %s not a child of the caller's", s.Name)
				}
				if !strings.HasPrefix(a["url.full"], srv.URL+"/api/") || a["server.address"] != "127.0.0.1" || a["server.port"] == "" {
					t.Errorf("url.full %q server %q:%q", a["url.full"], a["server.address"], a["server.port"])
				}
				if tc.call == "cancel" && a["cpcancel.attempt"] != "2" {
					t.Errorf("cpcancel.attempt %q, want the request's 2", a["cpcancel.attempt"])
				}
				resend := a["http.request.resend_count"]
				if resend == "" {
					resend = "0"
				}
				got = append(got, fmt.Sprintf("%s %s %s %v", s.Name, a["http.response.status_code"], resend, s.Status.Code == codes.Error))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("client spans %v, want %v", got, tc.want)
			}
		})
	}
}
