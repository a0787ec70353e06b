package service_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// hostileAPI answers by offer id: a huge body, HTML, silence, a location on another host.
func hostileAPI(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
		offer := strings.Split(r.URL.Path, "/")[5]
		switch {
		case strings.HasPrefix(offer, "huge"):
			w.WriteHeader(http.StatusBadRequest)
			chunk := []byte(strings.Repeat("x", 1<<16))
			for range 160 { // 10 MiB, or until the client hangs up
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case strings.HasPrefix(offer, "html"):
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		case strings.HasPrefix(offer, "hang"):
			select { // never answers; ends with the client or after a bound
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		case strings.HasPrefix(offer, "elsewhere"):
			w.Header().Set("Location", "https://elsewhere.example/api/operations/x?api-version=2017-10-31")
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBadInput publishes hostile requests and runs against a hostile API: each case ends as
// documented (a failed result, a dead letter, or retries then failed), the service stays ready,
// and a normal request behind them all is still served.
func TestBadInput(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	st := &stack{nats: ns, js: js, emuURL: hostileAPI(t).URL}
	st.svc = startService(t, st.env(map[string]string{
		"CPCANCEL_MAX_ATTEMPTS": "2", "CPCANCEL_HTTP_TIMEOUT": "500ms", "CPCANCEL_MAX_REQUEST_BYTES": "65536",
	}))

	binary := func(id, data string, extra ...string) (nats.Header, []byte) {
		h := nats.Header{"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType}, "ce-source": {"/bad"},
			"ce-id": {id}, "ce-datacontenttype": {"application/json"}}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = []string{extra[i+1]}
		}
		return h, []byte(data)
	}
	data := func(publisher, offer string, emails ...string) string {
		return fmt.Sprintf(`{"publisherId":%q,"offerId":%q,"notificationEmails":[%s]}`,
			publisher, offer, strings.TrimSuffix(strings.Repeat(`"a@b.c",`, len(emails)), ","))
	}
	manyEmails := make([]string, 21)
	nested := `{"publisherId":"p","offerId":"nested","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`

	type want struct {
		outcome cancelevent.Outcome // "" for a dead letter
		code    string              // error code of a failed result, or a dead letter's reason
	}
	cases := []struct {
		name   string
		header nats.Header
		body   []byte
		want   want
	}{
		{"oversized", nil, []byte(strings.Repeat("x", 70000)), want{"", "exceeds CPCANCEL_MAX_REQUEST_BYTES"}},
		{"invalid UTF-8 header", nil, nil, want{"", "not valid UTF-8"}},
		{"invalid UTF-8 data", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"deeply nested data", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"deeply nested structured event", nats.Header{"Content-Type": {"application/cloudevents+json"}},
			[]byte(`{"specversion":"1.0","id":"n","source":"/bad","type":"` + cancelevent.RequestType + `","data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`),
			want{"", "not a CloudEvent"}},
		{"wrong specversion", nil, nil, want{"", "specversion"}},
		{"missing source", nats.Header{"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType}, "ce-id": {"no-source"}},
			[]byte(data("p", "o")), want{"", "source"}},
		{"offer with slash", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"offer dot dot", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"offer %2F", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"offer with space", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"offer with control character", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"too many emails", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"malformed email", nil, nil, want{cancelevent.Failed, cancelevent.CodeInvalidRequest}},
		{"id with spaces and controls", nil, nil, want{cancelevent.Cancelled, ""}},
		{"API huge body", nil, nil, want{cancelevent.Failed, "http_400"}},
		{"API HTML body", nil, nil, want{cancelevent.Failed, "http_502"}},
		{"API never answers", nil, nil, want{cancelevent.Failed, "timeout"}},
		{"API location on another host", nil, nil, want{cancelevent.Cancelling, ""}},
	}
	fill := map[string]func() (nats.Header, []byte){
		"invalid UTF-8 header":         func() (nats.Header, []byte) { return binary("utf8-h", data("p", "o"), "ce-subject", "caf\xe9") },
		"invalid UTF-8 data":           func() (nats.Header, []byte) { return binary("utf8-d", `{"publisherId":"p\xff","offerId":"o"}`) },
		"deeply nested data":           func() (nats.Header, []byte) { return binary("nested", nested) },
		"wrong specversion":            func() (nats.Header, []byte) { return binary("v", data("p", "o"), "ce-specversion", "0.1") },
		"offer with slash":             func() (nats.Header, []byte) { return binary("slash", data("p", "a/b")) },
		"offer dot dot":                func() (nats.Header, []byte) { return binary("dotdot", data("p", "..")) },
		"offer %2F":                    func() (nats.Header, []byte) { return binary("pct", data("p", "a%2Fb")) },
		"offer with space":             func() (nats.Header, []byte) { return binary("space", data("p", "a b")) },
		"offer with control character": func() (nats.Header, []byte) { return binary("ctl", data("p", "a\tb")) },
		"too many emails":              func() (nats.Header, []byte) { return binary("emails", data("p", "o", manyEmails...)) },
		"malformed email": func() (nats.Header, []byte) {
			return binary("bademail", `{"publisherId":"p","offerId":"o","notificationEmails":"not-an-address"}`)
		},
		"id with spaces and controls":  func() (nats.Header, []byte) { return binary("a%20b%09c%00d", data("p", "ok")) },
		"API huge body":                func() (nats.Header, []byte) { return binary("huge", data("p", "huge")) },
		"API HTML body":                func() (nats.Header, []byte) { return binary("html", data("p", "html")) },
		"API never answers":            func() (nats.Header, []byte) { return binary("hang", data("p", "hang")) },
		"API location on another host": func() (nats.Header, []byte) { return binary("elsewhere", data("p", "elsewhere")) },
	}
	seqOf := map[string]string{}
	for i, c := range cases {
		h, b := c.header, c.body
		if f, ok := fill[c.name]; ok {
			h, b = f()
		}
		st.publishRaw(t, h, b)
		seqOf[fmt.Sprint(i+1)] = c.name
	}

	wantResults, wantDead := 0, 0
	for _, c := range cases {
		if c.want.outcome == "" {
			wantDead++
		} else {
			wantResults++
		}
	}
	dead := map[string]stored{}
	for _, d := range st.waitStream(t, "CPCANCEL_DEADLETTER", wantDead, 20*time.Second) {
		dead[seqOf[d.header.Get("Cpcancel-Stream-Sequence")]] = d
	}
	results := map[string]stored{}
	for _, r := range st.waitStream(t, "CPCANCEL_RESULTS", wantResults, 30*time.Second) {
		results[r.data.RequestID] = r
	}
	ids := map[string]string{} // case name -> request id, from the fill functions
	for name, f := range fill {
		h, _ := f()
		id, _ := cenatsDecodeID(h)
		ids[name] = id
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.want.outcome == "" {
				d, ok := dead[c.name]
				if !ok {
					t.Fatalf("no dead letter")
				}
				if reason := d.header.Get("Cpcancel-Reason"); !strings.Contains(reason, c.want.code) {
					t.Errorf("reason %q, want it to mention %q", reason, c.want.code)
				}
				return
			}
			r, ok := results[ids[c.name]]
			if !ok {
				t.Fatalf("no result for request %q", ids[c.name])
			}
			if r.ev.Type() != c.want.outcome.Type() {
				t.Errorf("type %s, want %s (data %+v)", r.ev.Type(), c.want.outcome.Type(), r.data)
			}
			if c.want.code != "" && (r.data.Error == nil || r.data.Error.Code != c.want.code) {
				t.Errorf("error %+v, want code %s", r.data.Error, c.want.code)
			}
			if r.data.Error != nil && len(r.data.Error.Message) > 512 {
				t.Errorf("error message of %d bytes", len(r.data.Error.Message))
			}
		})
	}

	// Still ready, and a normal request behind them all is served.
	resp, err := http.Get(st.svc.HTTPURL() + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("not ready after the bad input: %v %v", resp, err)
	}
	resp.Body.Close()
	st.publish(t, natsce.Binary, request(t, "/test", "after-bad-input", "contoso", "fine"))
	st.waitStream(t, "CPCANCEL_RESULTS", wantResults+1, 10*time.Second)
	waitEmpty(t, st, "CPCANCEL_REQUESTS")
}

// cenatsDecodeID is the request id a binary header set carries, percent-decoded.
func cenatsDecodeID(h nats.Header) (string, error) {
	ev, err := natsce.Decode(context.Background(), h, []byte(`{}`))
	if err != nil {
		return "", err
	}
	return ev.ID(), nil
}
