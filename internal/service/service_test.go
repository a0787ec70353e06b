package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestOutcomes publishes one request per outcome in both content modes and checks the exact
// result events and the metrics per status code.
func TestOutcomes(t *testing.T) {
	st := startStack(t, nil)
	const source = "//orders.example/publisher-service"
	cases := []struct {
		name, publisher, offer string
		emails                 []string
		outcome                cancelevent.Outcome
		status                 int
		location               string // relative to the emulator; "" for none
		operationID            string // "uuid" for any UUID
		errCode                string
	}{
		{name: "sync", publisher: "contoso", offer: "sync-offer", outcome: cancelevent.Cancelled, status: 200},
		{name: "migrated", publisher: "contoso", offer: "contoso-offer", emails: []string{"jondoe@contoso.com", "ops@contoso.com"},
			outcome: cancelevent.Cancelling, status: 202,
			location: "/api/publishers/contoso/offers/contoso-offer/operations/", operationID: "uuid"},
		{name: "legacy", publisher: "contoso", offer: "legacy-offer", outcome: cancelevent.Cancelling, status: 202,
			location: "/api/operations/contoso$legacy-offer$2$preview?api-version=2017-10-31", operationID: "contoso$legacy-offer$2$preview"},
		{name: "unknown offer", publisher: "contoso", offer: "unknown-offer", outcome: cancelevent.Failed, status: 404, errCode: "OfferNotFound"},
		{name: "forbidden", publisher: "forbidden-pub", offer: "x", outcome: cancelevent.Failed, status: 403, errCode: "Forbidden"},
		{name: "invalid", publisher: "contoso", offer: "a/b", outcome: cancelevent.Failed, status: 0, errCode: cancelevent.CodeInvalidRequest},
	}
	modes := []natsce.Mode{natsce.Binary, natsce.Structured}
	for _, c := range cases {
		for _, mode := range modes {
			ev := request(t, source, c.name+"/"+mode.String(), c.publisher, c.offer, c.emails...)
			if c.name == "sync" {
				ev.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			}
			st.publish(t, mode, ev)
		}
	}
	results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", len(cases)*len(modes), 20*time.Second))

	for _, c := range cases {
		for _, mode := range modes {
			t.Run(c.name+"/"+mode.String(), func(t *testing.T) {
				reqID := c.name + "/" + mode.String()
				r, ok := results[reqID]
				if !ok {
					t.Fatalf("no result for %s", reqID)
				}
				wantID := cancelevent.ResultID(source, reqID, c.outcome)
				if r.subject != "cloudpartner.cancel.results."+string(c.outcome) {
					t.Errorf("NATS subject = %q", r.subject)
				}
				if r.ev.Type() != c.outcome.Type() || r.ev.Source() != "/cpcancel" || r.ev.ID() != wantID {
					t.Errorf("type, source, id = %q, %q, %q; want %q, /cpcancel, %q", r.ev.Type(), r.ev.Source(), r.ev.ID(), c.outcome.Type(), wantID)
				}
				if got := r.header.Get("Nats-Msg-Id"); got != wantID {
					t.Errorf("Nats-Msg-Id = %q, want %q", got, wantID)
				}
				// Binary mode, as the NATS binding writes it: lowercase ce- headers, / not escaped.
				if r.header.Get("ce-specversion") != "1.0" || r.header.Get("ce-source") != "/cpcancel" ||
					r.header.Get("ce-datacontenttype") != "application/json" || r.header.Get("Content-Type") != "application/json" {
					t.Errorf("binary headers: %v", r.header)
				}
				wantSubject := "publishers/" + c.publisher + "/offers/" + c.offer
				if c.errCode == cancelevent.CodeInvalidRequest {
					wantSubject = ""
				}
				if r.ev.Subject() != wantSubject {
					t.Errorf("subject = %q, want %q", r.ev.Subject(), wantSubject)
				}
				d := r.data
				if d.PublisherID != c.publisher || d.OfferID != c.offer || d.RequestSource != source || d.StatusCode != c.status || d.Attempts != 1 {
					t.Errorf("data = %+v", d)
				}
				if c.location == "" && d.Location != "" {
					t.Errorf("location = %q, want none", d.Location)
				}
				if c.location != "" && !strings.HasPrefix(d.Location, st.emuURL+c.location) {
					t.Errorf("location = %q, want prefix %q", d.Location, st.emuURL+c.location)
				}
				switch {
				case c.operationID == "uuid" && !uuidPattern.MatchString(d.OperationID),
					c.operationID != "uuid" && d.OperationID != c.operationID:
					t.Errorf("operationId = %q, want %s", d.OperationID, c.operationID)
				}
				if c.operationID == "uuid" && !strings.Contains(d.Location, "/operations/"+d.OperationID+"?api-version=2017-10-31") {
					t.Errorf("location %q does not name operation %q", d.Location, d.OperationID)
				}
				if (c.status != 0) != (d.CorrelationID != "") {
					t.Errorf("correlationId = %q for status %d", d.CorrelationID, c.status)
				}
				switch {
				case c.errCode == "" && d.Error != nil:
					t.Errorf("error = %+v, want none", d.Error)
				case c.errCode != "" && (d.Error == nil || d.Error.Code != c.errCode || d.Error.Message == ""):
					t.Errorf("error = %+v, want code %s", d.Error, c.errCode)
				}
				if c.name == "sync" && r.header.Get("ce-traceparent") != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
					t.Errorf("traceparent not copied: %v", r.header)
				}
			})
		}
	}

	if n := st.emu.CancelCount("contoso", "a/b"); n != 0 {
		t.Errorf("invalid request reached the API %d times", n)
	}
	var emails []string
	for _, call := range st.emu.Calls() {
		if call.OfferID == "contoso-offer" {
			emails = append(emails, call.NotificationEmails)
		}
	}
	if len(emails) != 2 || emails[0] != "jondoe@contoso.com,ops@contoso.com" {
		t.Errorf("emails the API saw = %q", emails)
	}

	reg := st.svc.Registry()
	for code, want := range map[string]float64{"200": 2, "202": 4, "404": 2, "403": 2, "error": 0} {
		if got := metricValue(t, reg, "cpcancel_api_requests_total", "code", code); got != want {
			t.Errorf("cpcancel_api_requests_total{code=%q} = %v, want %v", code, got, want)
		}
		if got := metricValue(t, reg, "cpcancel_api_request_duration_seconds", "code", code); got != want {
			t.Errorf("cpcancel_api_request_duration_seconds{code=%q} count = %v, want %v", code, got, want)
		}
	}
	for outcome, want := range map[string]float64{"cancelled": 2, "cancelling": 4, "failed": 6} {
		if got := metricValue(t, reg, "cpcancel_results_total", "outcome", outcome); got != want {
			t.Errorf("cpcancel_results_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
}

// TestStructuredResults checks CPCANCEL_RESULT_MODE=structured.
func TestStructuredResults(t *testing.T) {
	st := startStack(t, map[string]string{"CPCANCEL_RESULT_MODE": "structured"})
	st.publish(t, natsce.Binary, request(t, "/test", "s-1", "contoso", "sync-offer"))
	r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]
	if ct := r.header.Get("Content-Type"); ct != "application/cloudevents+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if r.header.Get("ce-id") != "" || r.ev == nil || r.ev.Type() != cancelevent.Cancelled.Type() || r.data.StatusCode != 200 {
		t.Errorf("structured result: header %v, body %s", r.header, r.body)
	}
}

// TestDeadLetters checks that what is not a cancel request is moved aside with its reason and
// terminated, and that a valid request behind it is still served.
func TestDeadLetters(t *testing.T) {
	st := startStack(t, map[string]string{"CPCANCEL_MAX_REQUEST_BYTES": "2048"})
	other := request(t, "/test", "other-1", "contoso", "sync-offer")
	other.SetType("com.example.something.else")
	otherHdr, otherBody, err := natsce.Encode(context.Background(), other, natsce.Binary)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		header nats.Header
		body   string
		reason string
	}{
		{"plain text", nil, "cancel contoso-offer please", "not a CloudEvent"},
		{"other type", otherHdr, string(otherBody), "is not cloudpartner.offer.cancel.requested"},
		{"bad specversion", nats.Header{"ce-specversion": {"0.1"}, "ce-id": {"x"}, "ce-source": {"/s"}, "ce-type": {cancelevent.RequestType}},
			`{"publisherId":"contoso","offerId":"o"}`, "specversion"},
		{"missing id", nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"specversion":"1.0","source":"/s","type":"cloudpartner.offer.cancel.requested","data":{}}`, "id"},
		{"too large", nats.Header{"Nats-Msg-Id": {"big-1"}}, strings.Repeat("x", 4096), "exceeds CPCANCEL_MAX_REQUEST_BYTES"},
	}
	for _, c := range cases {
		st.publishRaw(t, c.header, []byte(c.body))
	}
	st.publish(t, natsce.Binary, request(t, "/test", "after-dead-letters", "contoso", "sync-offer"))

	// Workers run concurrently: find each dead letter by the original's stream sequence.
	dead := map[string]stored{}
	for _, d := range st.waitStream(t, "CPCANCEL_DEADLETTER", len(cases), 10*time.Second) {
		dead[d.header.Get(cancelevent.HeaderStreamSequence)] = d
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := dead[fmt.Sprint(i+1)]
			if string(d.body) != c.body {
				t.Errorf("body = %q, want the original %q", d.body, c.body)
			}
			if reason := d.header.Get(cancelevent.HeaderReason); !strings.Contains(reason, c.reason) {
				t.Errorf("%s = %q, want it to mention %q", cancelevent.HeaderReason, reason, c.reason)
			}
			if d.header.Get(cancelevent.HeaderStream) != "CPCANCEL_REQUESTS" {
				t.Errorf("stream headers = %v", d.header)
			}
			for k, vs := range c.header {
				want := k
				if strings.HasPrefix(k, "Nats-") {
					want = "Cpcancel-Original-" + k
				}
				if got := d.header.Get(want); got != vs[0] {
					t.Errorf("original header %s = %q, want %q", want, got, vs[0])
				}
			}
		})
	}
	results := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)
	if results[0].data.RequestID != "after-dead-letters" {
		t.Errorf("result = %+v", results[0].data)
	}
	if got := metricValue(t, st.svc.Registry(), "cpcancel_dead_letters_total"); got != float64(len(cases)) {
		t.Errorf("cpcancel_dead_letters_total = %v, want %d", got, len(cases))
	}
	// Terminated and acknowledged messages leave the work-queue stream.
	waitEmpty(t, st, "CPCANCEL_REQUESTS")
}

func waitEmpty(t *testing.T, st *stack, stream string) {
	t.Helper()
	st.waitMsgs(t, stream, 10*time.Second, "none", func(n uint64) bool { return n == 0 })
}

// TestTransientRetries checks retries through JetStream redelivery: 503 twice then 202, and 429
// with Retry-After: 1 then 200, with the right attempts and the delay the API asked for.
func TestTransientRetries(t *testing.T) {
	st := startStack(t, nil)

	st.emu.Inject(emulator.Fault{Status: 503}, emulator.Fault{Status: 503})
	st.publish(t, natsce.Binary, request(t, "/test", "flaky", "contoso", "contoso-offer"))
	r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 20*time.Second)[0]
	if r.ev.Type() != cancelevent.Cancelling.Type() || r.data.StatusCode != 202 || r.data.Attempts != 3 {
		t.Errorf("after 503, 503, 202: type %s, data %+v", r.ev.Type(), r.data)
	}

	st.emu.Inject(emulator.Fault{Status: 429, RetryAfter: "1"})
	st.publish(t, natsce.Binary, request(t, "/test", "throttled-once", "contoso", "sync-offer"))
	rs := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", 2, 20*time.Second))
	if r := rs["throttled-once"]; r.ev.Type() != cancelevent.Cancelled.Type() || r.data.Attempts != 2 {
		t.Errorf("after 429, 200: type %s, data %+v", r.ev.Type(), r.data)
	}
	var calls []emulator.Call
	for _, c := range st.emu.Calls() {
		if c.OfferID == "sync-offer" {
			calls = append(calls, c)
		}
	}
	if len(calls) != 2 || calls[0].Status != 429 || calls[1].Status != 200 {
		t.Fatalf("calls = %+v", calls)
	}
	if gap := calls[1].At.Sub(calls[0].At); gap < time.Second {
		t.Errorf("retry came %s after a 429 with Retry-After: 1", gap)
	}
	reg := st.svc.Registry()
	if got := metricValue(t, reg, "cpcancel_retries_total"); got != 3 {
		t.Errorf("cpcancel_retries_total = %v, want 3", got)
	}
	if got := metricValue(t, reg, "cpcancel_redeliveries_total"); got != 3 {
		t.Errorf("cpcancel_redeliveries_total = %v, want 3", got)
	}
	if got := metricValue(t, reg, "cpcancel_api_requests_total", "code", "503"); got != 2 {
		t.Errorf("cpcancel_api_requests_total{code=503} = %v, want 2", got)
	}
}

// TestTransientExhausted checks that a request failing transiently on every attempt ends failed
// after CPCANCEL_MAX_ATTEMPTS, with the last status.
func TestTransientExhausted(t *testing.T) {
	st := startStack(t, map[string]string{"CPCANCEL_MAX_ATTEMPTS": "2"})
	st.publish(t, natsce.Structured, request(t, "/test", "always-503", "contoso", "broken-offer"))
	r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 20*time.Second)[0]
	if r.ev.Type() != cancelevent.Failed.Type() || r.data.StatusCode != 503 || r.data.Attempts != 2 ||
		r.data.Error == nil || r.data.Error.Code != "ServiceUnavailable" {
		t.Errorf("type %s, data %+v, error %+v", r.ev.Type(), r.data, r.data.Error)
	}
	if n := st.emu.CancelCount("contoso", "broken-offer"); n != 2 {
		t.Errorf("API called %d times, want 2", n)
	}
}

// TestOperationsEndpoints checks /healthz, /readyz and /metrics.
func TestOperationsEndpoints(t *testing.T) {
	st := startStack(t, nil)
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `cpcancel_build_info{goversion="go`,
	} {
		resp, err := http.Get(st.svc.HTTPURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
	resp, err := http.Get(st.svc.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	for _, want := range []string{`revision="abc123"`, `version="test"`, `cpcancel_results_total{outcome="failed"} 0`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestUnusableCredentialsStopStart: credentials that give no token stop the service at start,
// named, instead of leaving it ready with every request waiting for a token.
func TestUnusableCredentialsStopStart(t *testing.T) {
	st := startStack(t, nil)
	empty := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, done, cancel := runService(t, st.env(map[string]string{"CPCANCEL_CLOUDPARTNER_TOKEN": "",
		"CPCANCEL_CLOUDPARTNER_TOKEN_FILE": empty, "CPCANCEL_HTTP_ADDR": "127.0.0.1:0"}))
	defer cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "CPCANCEL_CLOUDPARTNER_TOKEN_FILE") || !strings.Contains(err.Error(), "token") {
			t.Errorf("error = %v, want one naming CPCANCEL_CLOUDPARTNER_TOKEN_FILE", err)
		} else {
			t.Logf("start refused: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service started with a token file that holds no token")
	}
}

// TestBindWithoutProvision checks CPCANCEL_PROVISION=false: a clear error naming the variable
// when the streams are missing, and binding to them once they exist.
func TestBindWithoutProvision(t *testing.T) {
	st := startStack(t, nil) // provisions the streams and the consumer on its server

	fresh := &stack{nats: natstest.Start(t), emuURL: st.emuURL}
	_, done, cancel := runService(t, fresh.env(map[string]string{"CPCANCEL_PROVISION": "false"}))
	defer cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "CPCANCEL_REQUEST_STREAM") || !strings.Contains(err.Error(), "CPCANCEL_PROVISION") {
			t.Errorf("error = %v, want one naming CPCANCEL_REQUEST_STREAM and CPCANCEL_PROVISION", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("service did not fail on missing streams")
	}

	bound := startService(t, st.env(map[string]string{"CPCANCEL_PROVISION": "false", "CPCANCEL_HTTP_ADDR": "127.0.0.1:0"}))
	_ = bound
	st.publish(t, natsce.Binary, request(t, "/test", "bound-1", "contoso", "sync-offer"))
	if r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]; r.data.RequestID != "bound-1" {
		t.Errorf("result = %+v", r.data)
	}
}

// TestTokenFileRotation checks the 401 path: after a 401 the file is read again, and a request
// whose token is still the one refused fails with 401, without sending the same token twice; a
// rotated file is picked up without restart.
func TestTokenFileRotation(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := startStack(t, map[string]string{"CPCANCEL_CLOUDPARTNER_TOKEN": "", "CPCANCEL_CLOUDPARTNER_TOKEN_FILE": tokenFile})

	st.publish(t, natsce.Binary, request(t, "/test", "with-stale-token", "contoso", "sync-offer"))
	r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]
	if r.ev.Type() != cancelevent.Failed.Type() || r.data.StatusCode != 401 || r.data.Error == nil || r.data.Error.Code != "Unauthorized" {
		t.Errorf("with a stale token: %s %+v %+v", r.ev.Type(), r.data, r.data.Error)
	}
	if got := metricValue(t, st.svc.Registry(), "cpcancel_api_requests_total", "code", "401"); got != 1 {
		t.Errorf("401 answers = %v, want 1 (the file read again has the same token: nothing to send again)", got)
	}

	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st.publish(t, natsce.Binary, request(t, "/test", "after-rotation", "contoso", "sync-offer"))
	rs := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", 2, 10*time.Second))
	if r := rs["after-rotation"]; r.ev.Type() != cancelevent.Cancelled.Type() || r.data.StatusCode != 200 {
		t.Errorf("after rotation: %s %+v", r.ev.Type(), r.data)
	}
}

// TestFailedStartFreesPort checks that a service failing at setup releases its HTTP port.
func TestFailedStartFreesPort(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	st := &stack{nats: natstest.Start(t), emuURL: "http://127.0.0.1:1"}
	_, done, cancel := runService(t, st.env(map[string]string{"CPCANCEL_PROVISION": "false", "CPCANCEL_HTTP_ADDR": addr}))
	defer cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("service started without its streams")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("service did not fail")
	}
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s still bound after the failed start: %v", addr, err)
	}
	again.Close()
}
