package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testToken = "test-token"

var (
	uuidRE           = `[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`
	correlationRE    = regexp.MustCompile(`^` + uuidRE + `$`)
	migratedLocation = func(p, o string) *regexp.Regexp {
		return regexp.MustCompile(`^/api/publishers/` + p + `/offers/` + o + `/operations/(` + uuidRE + `)\?api-version=2017-10-31$`)
	}
)

func newServer(t *testing.T, opts Options) (*Emulator, *httptest.Server) {
	t.Helper()
	e := New(opts)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv
}

func cancelURL(srv *httptest.Server, publisher, offer string) string {
	return srv.URL + "/api/publishers/" + publisher + "/offers/" + offer + "/cancel?api-version=2017-10-31"
}

// newRequest builds an authorised JSON request.
func newRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func newCancel(t *testing.T, srv *httptest.Server, publisher, offer string) *http.Request {
	return newRequest(t, http.MethodPost, cancelURL(srv, publisher, offer), `{"metadata":{"notification-emails":"a@contoso.com,b@contoso.com"}}`)
}

// send performs req and returns the response with its body read; any transport error is returned.
func send(srv *httptest.Server, req *http.Request) (*http.Response, []byte, error) {
	client := &http.Client{Transport: srv.Client().Transport, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

func mustSend(t *testing.T, srv *httptest.Server, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := send(srv, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	if got := resp.Header.Get("X-Ms-Correlation-Request-Id"); !correlationRE.MatchString(got) {
		t.Errorf("X-Ms-Correlation-Request-Id = %q, want a UUID", got)
	}
	if len(body) > 0 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("Content-Type = %q, want application/json", resp.Header.Get("Content-Type"))
	}
	return resp, body
}

// checkError asserts status and an error body of exactly {"error":{"code":...,"message":...}}.
func checkError(t *testing.T, resp *http.Response, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if resp.StatusCode != wantStatus {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, wantStatus, body)
	}
	var got map[string]map[string]string
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	inner, ok := got["error"]
	if len(got) != 1 || !ok || len(inner) != 2 || inner["message"] == "" {
		t.Errorf("error body = %s, want exactly {\"error\":{\"code\",\"message\"}}", body)
	}
	if inner["code"] != wantCode {
		t.Errorf("error code = %q, want %q", inner["code"], wantCode)
	}
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func TestCancelScenarios(t *testing.T) {
	tests := []struct {
		name, publisher, offer string
		wantStatus             int
		wantCode               string            // error code, for error answers
		wantHeader             map[string]string // exact values; "" means absent
		wantLocation           *regexp.Regexp    // for 202s, where locationIn says
		locationIn             string            // "Location", "Operation-Location" or "body"
	}{
		{name: "migrated", publisher: "contoso", offer: "contoso-offer", wantStatus: 202,
			wantHeader:   map[string]string{"Operation-Location": ""},
			wantLocation: migratedLocation("contoso", "contoso-offer"), locationIn: "Location"},
		{name: "legacy keeps dollars", publisher: "contoso", offer: "legacy-offer", wantStatus: 202,
			wantHeader: map[string]string{"Location": "/api/operations/contoso$legacy-offer$2$preview?api-version=2017-10-31"}},
		{name: "location in body", publisher: "contoso", offer: "bodyloc-offer", wantStatus: 202,
			wantHeader:   map[string]string{"Location": "", "Operation-Location": ""},
			wantLocation: migratedLocation("contoso", "bodyloc-offer"), locationIn: "body"},
		{name: "operation-location header", publisher: "contoso", offer: "oploc-offer", wantStatus: 202,
			wantHeader:   map[string]string{"Location": ""},
			wantLocation: migratedLocation("contoso", "oploc-offer"), locationIn: "Operation-Location"},
		{name: "opfail accepted", publisher: "contoso", offer: "opfail-offer", wantStatus: 202,
			wantLocation: migratedLocation("contoso", "opfail-offer"), locationIn: "Location"},
		{name: "sync", publisher: "contoso", offer: "sync-offer", wantStatus: 200,
			wantHeader: map[string]string{"Location": "", "Operation-Location": ""}},
		{name: "unknown publisher", publisher: "unknown-pub", offer: "sync-offer", wantStatus: 404, wantCode: "PublisherNotFound"},
		{name: "forbidden publisher", publisher: "forbidden-pub", offer: "offer", wantStatus: 403, wantCode: "Forbidden"},
		{name: "unknown offer", publisher: "contoso", offer: "unknown-offer", wantStatus: 404, wantCode: "OfferNotFound"},
		{name: "throttled", publisher: "contoso", offer: "throttled-offer", wantStatus: 429, wantCode: "TooManyRequests",
			wantHeader: map[string]string{"Retry-After": "1"}},
		{name: "broken", publisher: "contoso", offer: "broken-offer", wantStatus: 503, wantCode: "ServiceUnavailable"},
		{name: "prefix is case-sensitive", publisher: "Unknown", offer: "Sync", wantStatus: 202,
			wantLocation: migratedLocation("Unknown", "Sync"), locationIn: "Location"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newServer(t, Options{Token: testToken})
			resp, body := mustSend(t, srv, newCancel(t, srv, tt.publisher, tt.offer))
			if tt.wantCode != "" {
				checkError(t, resp, body, tt.wantStatus, tt.wantCode)
			} else if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			for k, want := range tt.wantHeader {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tt.wantCode == "" {
				b := decode[map[string]string](t, body)
				loc := b["location"]
				if tt.locationIn != "body" {
					if len(b) != 0 {
						t.Errorf("body = %s, want {}", body)
					}
					loc = resp.Header.Get(tt.locationIn)
				}
				if tt.wantLocation != nil && !tt.wantLocation.MatchString(loc) {
					t.Errorf("location in %s = %q, want match %s", tt.locationIn, loc, tt.wantLocation)
				}
			}
		})
	}
}

func TestCancelRejects(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*http.Request)
		body       *string
		wantStatus int
		wantCode   string
	}{
		{name: "no authorization", mutate: func(r *http.Request) { r.Header.Del("Authorization") }, wantStatus: 401, wantCode: "Unauthorized"},
		{name: "basic scheme", mutate: func(r *http.Request) { r.Header.Set("Authorization", "Basic "+testToken) }, wantStatus: 401, wantCode: "Unauthorized"},
		{name: "empty bearer", mutate: func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }, wantStatus: 401, wantCode: "Unauthorized"},
		{name: "wrong token", mutate: func(r *http.Request) { r.Header.Set("Authorization", "Bearer other") }, wantStatus: 401, wantCode: "Unauthorized"},
		{name: "missing api-version", mutate: func(r *http.Request) { r.URL.RawQuery = "" }, wantStatus: 400, wantCode: "InvalidApiVersion"},
		{name: "other api-version", mutate: func(r *http.Request) { r.URL.RawQuery = "api-version=2016-01-01" }, wantStatus: 400, wantCode: "InvalidApiVersion"},
		{name: "no content type", mutate: func(r *http.Request) { r.Header.Del("Content-Type") }, wantStatus: 400, wantCode: "BadRequest"},
		{name: "text content type", mutate: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, wantStatus: 400, wantCode: "BadRequest"},
		{name: "not JSON", body: ptr(`metadata`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "array", body: ptr(`[]`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "no metadata", body: ptr(`{}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "null metadata", body: ptr(`{"metadata":null}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "metadata not an object", body: ptr(`{"metadata":"x"}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "trailing data", body: ptr(`{"metadata":{}} {}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "emails not a string", body: ptr(`{"metadata":{"notification-emails":["a@contoso.com"]}}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "invalid email", body: ptr(`{"metadata":{"notification-emails":"a@contoso.com,not-an-address"}}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "empty email in list", body: ptr(`{"metadata":{"notification-emails":"a@contoso.com,"}}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "body too large", body: ptr(`{"metadata":{"x":"` + strings.Repeat("a", 70<<10) + `"}}`), wantStatus: 413, wantCode: "RequestEntityTooLarge"},
		{name: "empty metadata", body: ptr(`{"metadata":{}}`), wantStatus: 202},
		{name: "empty emails", body: ptr(`{"metadata":{"notification-emails":""}}`), wantStatus: 202},
		{name: "spaced emails", body: ptr(`{"metadata":{"notification-emails":"a@contoso.com, Jon Doe <b@contoso.com>"}}`), wantStatus: 202},
		{name: "charset", mutate: func(r *http.Request) { r.Header.Set("Content-Type", "application/json; charset=utf-8") }, wantStatus: 202},
		{name: "content type case", mutate: func(r *http.Request) { r.Header.Set("Content-Type", "Application/JSON") }, wantStatus: 202},
		{name: "content type bad parameter", mutate: func(r *http.Request) { r.Header.Set("Content-Type", "application/json; charset") }, wantStatus: 400, wantCode: "BadRequest"},
		{name: "json suffix type", mutate: func(r *http.Request) { r.Header.Set("Content-Type", "application/merge-patch+json") }, wantStatus: 400, wantCode: "BadRequest"},
		{name: "other query parameters", mutate: func(r *http.Request) { r.URL.RawQuery = "x=1&api-version=2017-10-31" }, wantStatus: 202},
		{name: "api-version repeated", mutate: func(r *http.Request) { r.URL.RawQuery = "api-version=2016-01-01&api-version=2017-10-31" }, wantStatus: 400, wantCode: "InvalidApiVersion"},
		{name: "api-version escaped", mutate: func(r *http.Request) { r.URL.RawQuery = "api%2Dversion=2017%2D10%2D31" }, wantStatus: 202},
		{name: "api-version name case", mutate: func(r *http.Request) { r.URL.RawQuery = "API-Version=2017-10-31" }, wantStatus: 400, wantCode: "InvalidApiVersion"},
		{name: "empty metadata spaced", body: ptr(" { \"metadata\" : { } }\n"), wantStatus: 202},
		{name: "metadata key case", body: ptr(`{"Metadata":{}}`), wantStatus: 202},
		{name: "metadata array", body: ptr(`{"metadata":[]}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "empty metadata then null", body: ptr(`{"metadata":{},"metadata":null}`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "null body", body: ptr(`null`), wantStatus: 400, wantCode: "BadRequest"},
		{name: "empty body", body: ptr(``), mutate: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, wantStatus: 400, wantCode: "BadRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := newServer(t, Options{Token: testToken})
			req := newCancel(t, srv, "contoso", "offer")
			if tt.body != nil {
				req = newRequest(t, http.MethodPost, cancelURL(srv, "contoso", "offer"), *tt.body)
			}
			if tt.mutate != nil {
				tt.mutate(req)
			}
			resp, body := mustSend(t, srv, req)
			if tt.wantCode != "" {
				checkError(t, resp, body, tt.wantStatus, tt.wantCode)
			} else if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if wantAuth := tt.wantStatus == 401; wantAuth != (resp.Header.Get("WWW-Authenticate") == "Bearer") {
				t.Errorf("WWW-Authenticate = %q on a %d", resp.Header.Get("WWW-Authenticate"), resp.StatusCode)
			}
			calls := e.Calls()
			if len(calls) != 1 || calls[0].Status != tt.wantStatus {
				t.Errorf("Calls() = %+v, want one call with status %d", calls, tt.wantStatus)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestRecordedEmails checks Call.NotificationEmails: as sent once it decodes as a string, even
// when an address is then refused.
func TestRecordedEmails(t *testing.T) {
	tests := []struct {
		name, body string
		wantStatus int
		wantEmails string
	}{
		{"empty metadata", `{"metadata":{}}`, 202, ""},
		{"valid", `{"metadata":{"notification-emails":"a@contoso.com, b@contoso.com"}}`, 202, "a@contoso.com, b@contoso.com"},
		{"escaped", `{"metadata":{"notification-emails":"a\u0040contoso.com"}}`, 202, "a@contoso.com"},
		{"null", `{"metadata":{"notification-emails":null}}`, 202, ""},
		{"last duplicate wins", `{"metadata":{"notification-emails":"x"},"metadata":{"notification-emails":"a@contoso.com"}}`, 202, "a@contoso.com"},
		{"merged metadata", `{"metadata":{"notification-emails":"a@contoso.com"},"metadata":{}}`, 202, "a@contoso.com"},
		{"invalid address", `{"metadata":{"notification-emails":"a@contoso.com,nope"}}`, 400, "a@contoso.com,nope"},
		{"not a string", `{"metadata":{"notification-emails":7}}`, 400, ""},
		{"other key case", `{"metadata":{"Notification-Emails":7}}`, 202, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := newServer(t, Options{Token: testToken})
			resp, body := mustSend(t, srv, newRequest(t, http.MethodPost, cancelURL(srv, "contoso", "offer"), tt.body))
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			calls := e.Calls()
			if len(calls) != 1 || calls[0].NotificationEmails != tt.wantEmails || calls[0].Status != tt.wantStatus {
				t.Errorf("Calls() = %+v, want one call with emails %q and status %d", calls, tt.wantEmails, tt.wantStatus)
			}
		})
	}
}

// TestAnswerBytes pins each kind of answer down to the byte: status, the exact set of headers
// (besides the fresh correlation id) and the body.
func TestAnswerBytes(t *testing.T) {
	op := `/api/publishers/contoso/offers/%s/operations/` + uuidRE + `\?api-version=2017-10-31`
	tests := []struct {
		name, offer string
		fault       *Fault
		mutate      func(*http.Request)
		wantStatus  int
		wantHeader  map[string]string // every header but X-Ms-Correlation-Request-Id; values are regexps
		wantBody    string            // regexp
	}{
		{name: "migrated", offer: "contoso-offer", wantStatus: 202,
			wantHeader: map[string]string{"Location": fmt.Sprintf(op, "contoso-offer")}, wantBody: "{}\n"},
		{name: "oploc", offer: "oploc-offer", wantStatus: 202,
			wantHeader: map[string]string{"Operation-Location": fmt.Sprintf(op, "oploc-offer")}, wantBody: "{}\n"},
		{name: "bodyloc", offer: "bodyloc-offer", wantStatus: 202,
			wantBody: `{"location":"` + fmt.Sprintf(op, "bodyloc-offer") + `"}\n`},
		{name: "sync", offer: "sync-offer", wantStatus: 200, wantBody: "{}\n"},
		{name: "throttled", offer: "throttled-offer", wantStatus: 429, wantHeader: map[string]string{"Retry-After": "1"},
			wantBody: `{"error":{"code":"TooManyRequests","message":"Too many requests; retry later\."}}\n`},
		{name: "unauthorized", offer: "sync-offer", mutate: func(r *http.Request) { r.Header.Del("Authorization") }, wantStatus: 401,
			wantHeader: map[string]string{"Www-Authenticate": "Bearer"},
			wantBody:   `{"error":{"code":"Unauthorized","message":"Authentication failed: the bearer token is missing or invalid\."}}\n`},
		{name: "api-version", offer: "sync-offer", mutate: func(r *http.Request) { r.URL.RawQuery = "api-version=1" }, wantStatus: 400,
			wantBody: `{"error":{"code":"InvalidApiVersion","message":"The api-version \\"1\\" is missing or not supported; use 2017-10-31\."}}\n`},
		{name: "fault", offer: "sync-offer", fault: &Fault{Status: 502, RetryAfter: "9"}, wantStatus: 502,
			wantHeader: map[string]string{"Retry-After": "9"},
			wantBody:   `{"error":{"code":"InternalServerError","message":"Injected fault: 502 Bad Gateway\."}}\n`},
		{name: "method", offer: "sync-offer", mutate: func(r *http.Request) { r.Method = http.MethodPut }, wantStatus: 405,
			wantHeader: map[string]string{"Allow": "POST"},
			wantBody:   `{"error":{"code":"MethodNotAllowed","message":"Method not allowed; use POST\."}}\n`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(Options{Token: testToken})
			if tt.fault != nil {
				e.Inject(*tt.fault)
			}
			req := httptest.NewRequest(http.MethodPost, "/api/publishers/contoso/offers/"+tt.offer+"/cancel?api-version=2017-10-31",
				strings.NewReader(`{"metadata":{}}`))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			if tt.mutate != nil {
				tt.mutate(req)
			}
			w := httptest.NewRecorder()
			e.ServeHTTP(w, req)
			resp := w.Result()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			want := map[string]string{"Content-Type": `application/json; charset=utf-8`, "X-Ms-Correlation-Request-Id": uuidRE}
			for k, v := range tt.wantHeader {
				want[k] = v
			}
			for k, v := range resp.Header {
				if re, ok := want[k]; !ok || len(v) != 1 || !regexp.MustCompile(`^(?:`+re+`)$`).MatchString(v[0]) {
					t.Errorf("header %s: %q, want %q", k, v, re)
				}
				delete(want, k)
			}
			if len(want) != 0 {
				t.Errorf("headers %v missing", want)
			}
			if body := w.Body.String(); !regexp.MustCompile(`^` + tt.wantBody + `$`).MatchString(body) {
				t.Errorf("body = %q, want match %q", body, tt.wantBody)
			}
		})
	}
}

func TestAnyTokenAcceptedWhenNoneConfigured(t *testing.T) {
	_, srv := newServer(t, Options{})
	req := newCancel(t, srv, "contoso", "sync-offer")
	req.Header.Set("Authorization", "bearer anything")
	if resp, body := mustSend(t, srv, req); resp.StatusCode != 200 {
		t.Errorf("status = %d, want 200 (body %s)", resp.StatusCode, body)
	}
}

// pollOperation polls location until its status is no longer "running", for at most 5s.
func pollOperation(t *testing.T, srv *httptest.Server, location string) (operationView, []string) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 500 && time.Now().Before(deadline); i++ {
		resp, body := mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+location, ""))
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: status %d, body %s", location, resp.StatusCode, body)
		}
		v := decode[operationView](t, body)
		if len(seen) == 0 || seen[len(seen)-1] != v.Status {
			seen = append(seen, v.Status)
		}
		if v.Status != "running" {
			return v, seen
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("operation %s still running after polling; statuses %v", location, seen)
	return operationView{}, nil
}

func TestOperationLifecycle(t *testing.T) {
	tests := []struct {
		name, offer string
		location    func(*http.Response, []byte) string
		wantStatus  string
	}{
		{"migrated", "contoso-offer", func(r *http.Response, _ []byte) string { return r.Header.Get("Location") }, "canceled"},
		{"legacy", "legacy-offer", func(r *http.Response, _ []byte) string { return r.Header.Get("Location") }, "canceled"},
		{"bodyloc", "bodyloc-offer", func(_ *http.Response, b []byte) string {
			var v struct{ Location string }
			json.Unmarshal(b, &v)
			return v.Location
		}, "canceled"},
		{"oploc", "oploc-offer", func(r *http.Response, _ []byte) string { return r.Header.Get("Operation-Location") }, "canceled"},
		{"opfail", "opfail-offer", func(r *http.Response, _ []byte) string { return r.Header.Get("Location") }, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newServer(t, Options{Token: testToken, OperationDuration: 50 * time.Millisecond})
			resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", tt.offer))
			if resp.StatusCode != 202 {
				t.Fatalf("cancel status = %d, want 202", resp.StatusCode)
			}
			location := tt.location(resp, body)
			v, seen := pollOperation(t, srv, location)
			if seen[0] != "running" || v.Status != tt.wantStatus {
				t.Errorf("statuses = %v, want running then %s", seen, tt.wantStatus)
			}
			if !strings.Contains(location, "/"+v.ID+"?") || v.SubmissionType != "Cancel" || len(v.Steps) == 0 {
				t.Errorf("operation = %+v, want id from %q, submissionType Cancel, steps", v, location)
			}
			for _, ts := range []string{v.CreatedDateTime, v.LastActionDateTime} {
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
					t.Errorf("timestamp %q: %v", ts, err)
				}
			}
			cancelStep := v.Steps[len(v.Steps)-1]
			switch {
			case tt.wantStatus == "failed" && (cancelStep.Status != "failed" || len(v.Messages) != 1):
				t.Errorf("steps %+v, messages %q: want a failed step and one message", v.Steps, v.Messages)
			case tt.wantStatus == "canceled" && (cancelStep.Status != "complete" || v.Messages == nil || len(v.Messages) != 0):
				t.Errorf("steps %+v, messages %q: want a complete step and messages []", v.Steps, v.Messages)
			}
		})
	}
}

func TestOperationGet(t *testing.T) {
	_, srv := newServer(t, Options{Token: testToken})
	resp, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
	location := resp.Header.Get("Location")
	id := migratedLocation("contoso", "contoso-offer").FindStringSubmatch(location)[1]

	tests := []struct {
		name, path string
		mutate     func(*http.Request)
		wantStatus int
		wantCode   string
	}{
		{name: "migrated route", path: location, wantStatus: 200},
		{name: "operations route", path: "/api/operations/" + id + "?api-version=2017-10-31", wantStatus: 200},
		{name: "unknown id", path: "/api/operations/00000000-0000-4000-8000-000000000000?api-version=2017-10-31", wantStatus: 404, wantCode: "OperationNotFound"},
		{name: "other offer", path: "/api/publishers/contoso/offers/other/operations/" + id + "?api-version=2017-10-31", wantStatus: 404, wantCode: "OperationNotFound"},
		{name: "no token", path: location, mutate: func(r *http.Request) { r.Header.Del("Authorization") }, wantStatus: 401, wantCode: "Unauthorized"},
		{name: "no api-version", path: "/api/operations/" + id, wantStatus: 400, wantCode: "InvalidApiVersion"},
		{name: "POST", path: location, mutate: func(r *http.Request) { r.Method = http.MethodPost }, wantStatus: 405, wantCode: "MethodNotAllowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, srv.URL+tt.path, "")
			if tt.mutate != nil {
				tt.mutate(req)
			}
			resp, body := mustSend(t, srv, req)
			if tt.wantCode != "" {
				checkError(t, resp, body, tt.wantStatus, tt.wantCode)
				return
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if v := decode[operationView](t, body); v.ID != id || v.Status != "running" {
				t.Errorf("operation = %+v, want id %s running", v, id)
			}
		})
	}
}

func TestRepeatedCancelIsIdempotent(t *testing.T) {
	for _, offer := range []string{"contoso-offer", "legacy-offer"} {
		t.Run(offer, func(t *testing.T) {
			e, srv := newServer(t, Options{Token: testToken, OperationDuration: time.Hour})
			first, _ := mustSend(t, srv, newCancel(t, srv, "contoso", offer))
			second, _ := mustSend(t, srv, newCancel(t, srv, "contoso", offer))
			if first.StatusCode != 202 || second.StatusCode != 202 || first.Header.Get("Location") != second.Header.Get("Location") {
				t.Errorf("repeat: %d %q then %d %q, want 202 with the same Location",
					first.StatusCode, first.Header.Get("Location"), second.StatusCode, second.Header.Get("Location"))
			}
			if got := e.CancelCount("contoso", offer); got != 2 {
				t.Errorf("CancelCount = %d, want 2", got)
			}
		})
	}

	t.Run("new operation once terminal", func(t *testing.T) {
		_, srv := newServer(t, Options{Token: testToken, OperationDuration: 20 * time.Millisecond})
		first, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
		pollOperation(t, srv, first.Header.Get("Location"))
		second, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
		if second.StatusCode != 202 || second.Header.Get("Location") == first.Header.Get("Location") {
			t.Errorf("after terminal: %d %q, want 202 with a new Location", second.StatusCode, second.Header.Get("Location"))
		}
		v, _ := pollOperation(t, srv, first.Header.Get("Location"))
		if v.Status != "canceled" {
			t.Errorf("first operation now %q, want it still readable as canceled", v.Status)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		e, srv := newServer(t, Options{Token: testToken})
		const n = 20
		locations := make(chan string, n)
		for range n {
			go func() {
				resp, _, err := send(srv, newCancel(t, srv, "contoso", "contoso-offer"))
				if err != nil {
					locations <- err.Error()
					return
				}
				locations <- resp.Header.Get("Location")
			}()
		}
		want := <-locations
		for range n - 1 {
			if got := <-locations; got != want {
				t.Errorf("Location %q, want %q for every concurrent cancel", got, want)
			}
		}
		if got := e.CancelCount("contoso", "contoso-offer"); got != n {
			t.Errorf("CancelCount = %d, want %d", got, n)
		}
	})
}

func TestInjectedFaults(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	e.SetRates(Rates{Throttle: 1}) // the queue comes first
	e.Inject(
		Fault{Status: 503},
		Fault{Status: 429, RetryAfter: "7"},
		Fault{Drop: true},
		Fault{Status: 500},
		Fault{Status: 409},
		Fault{Delay: 20 * time.Millisecond},
	)
	steps := []struct {
		wantStatus     int // 0: transport error
		wantCode       string
		wantRetryAfter string
	}{
		{503, "ServiceUnavailable", ""},
		{429, "TooManyRequests", "7"},
		{0, "", ""},
		{500, "InternalServerError", ""},
		{409, "Error", ""},
		{202, "", ""},
		{429, "TooManyRequests", "1"}, // queue empty: rates apply
	}
	for i, step := range steps {
		start := time.Now()
		resp, body, err := send(srv, newCancel(t, srv, "contoso", "contoso-offer"))
		switch {
		case step.wantStatus == 0:
			if err == nil {
				t.Errorf("request %d: status %d, want a transport error", i, resp.StatusCode)
			}
			continue
		case err != nil:
			t.Fatalf("request %d: %v", i, err)
		case step.wantCode != "":
			checkError(t, resp, body, step.wantStatus, step.wantCode)
		case resp.StatusCode != step.wantStatus:
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, step.wantStatus)
		}
		if got := resp.Header.Get("Retry-After"); got != step.wantRetryAfter {
			t.Errorf("request %d: Retry-After = %q, want %q", i, got, step.wantRetryAfter)
		}
		if step.wantStatus == 202 && time.Since(start) < 20*time.Millisecond {
			t.Errorf("request %d answered in %v, want the 20ms injected delay", i, time.Since(start))
		}
	}
	var got []int
	for _, c := range e.Calls() {
		got = append(got, c.Status)
	}
	if want := []int{503, 429, 0, 500, 409, 202, 429}; !equal(got, want) {
		t.Errorf("recorded statuses = %v, want %v", got, want)
	}
	if n := e.CancelCount("contoso", "contoso-offer"); n != len(steps) {
		t.Errorf("CancelCount = %d, want %d", n, len(steps))
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultsNeedAuth(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	e.Inject(Fault{Status: 503})
	req := newCancel(t, srv, "contoso", "sync-offer")
	req.Header.Set("Authorization", "Bearer wrong")
	resp, body := mustSend(t, srv, req)
	checkError(t, resp, body, 401, "Unauthorized")
	resp, body = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-offer"))
	checkError(t, resp, body, 503, "ServiceUnavailable")
}

func TestRates(t *testing.T) {
	tests := []struct {
		name       string
		rates      Rates
		wantStatus int // 0: transport error
		wantCode   string
	}{
		{"none", Rates{}, 200, ""},
		{"throttle", Rates{Throttle: 1}, 429, "TooManyRequests"},
		{"server error", Rates{ServerError: 1}, 503, "ServiceUnavailable"},
		{"drop", Rates{Drop: 1}, 0, ""},
		{"clamped", Rates{Throttle: 7}, 429, "TooManyRequests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := newServer(t, Options{Token: testToken})
			e.SetRates(tt.rates)
			for i := range 3 {
				resp, body, err := send(srv, newCancel(t, srv, "contoso", "sync-offer"))
				switch {
				case tt.wantStatus == 0:
					if err == nil {
						t.Fatalf("request %d: status %d, want a transport error", i, resp.StatusCode)
					}
				case err != nil:
					t.Fatalf("request %d: %v", i, err)
				case tt.wantCode != "":
					checkError(t, resp, body, tt.wantStatus, tt.wantCode)
				case resp.StatusCode != tt.wantStatus:
					t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, tt.wantStatus)
				}
				if tt.wantStatus == 429 && resp.Header.Get("Retry-After") != "1" {
					t.Errorf("Retry-After = %q, want 1", resp.Header.Get("Retry-After"))
				}
			}
		})
	}
}

func TestCallsCountAndReset(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	e.maxCalls = 3
	before := time.Now()
	for _, o := range []string{"a", "b", "sync-c", "b", "unknown-d"} {
		mustSend(t, srv, newCancel(t, srv, "contoso", o))
	}
	calls := e.Calls()
	want := []Call{
		{PublisherID: "contoso", OfferID: "sync-c", NotificationEmails: "a@contoso.com,b@contoso.com", Status: 200},
		{PublisherID: "contoso", OfferID: "b", NotificationEmails: "a@contoso.com,b@contoso.com", Status: 202},
		{PublisherID: "contoso", OfferID: "unknown-d", NotificationEmails: "a@contoso.com,b@contoso.com", Status: 404},
	}
	if len(calls) != len(want) {
		t.Fatalf("Calls() = %+v, want the last %d", calls, len(want))
	}
	for i := range want {
		if calls[i].At.Before(before) || time.Since(calls[i].At) > time.Minute {
			t.Errorf("call %d At = %v, want about now", i, calls[i].At)
		}
		calls[i].At = time.Time{}
		if calls[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, calls[i], want[i])
		}
	}
	calls[0].OfferID = "mutated"
	if e.Calls()[0].OfferID != "sync-c" {
		t.Error("Calls() returned the emulator's own slice, want a copy")
	}
	for o, n := range map[string]int{"a": 1, "b": 2, "unknown-d": 1, "never": 0} {
		if got := e.CancelCount("contoso", o); got != n {
			t.Errorf("CancelCount(contoso, %s) = %d, want %d", o, got, n)
		}
	}

	resp, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "a"))
	location := resp.Header.Get("Location")
	e.Inject(Fault{Status: 503})
	e.SetRates(Rates{Throttle: 1})
	e.Reset()
	if len(e.Calls()) != 0 || e.CancelCount("contoso", "a") != 0 {
		t.Errorf("after Reset: Calls() = %v, CancelCount = %d, want none", e.Calls(), e.CancelCount("contoso", "a"))
	}
	resp, body := mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+location, ""))
	checkError(t, resp, body, 404, "OperationNotFound")
	if resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", "a")); resp.StatusCode != 202 || resp.Header.Get("Location") == location {
		t.Errorf("after Reset: %d %q (body %s), want 202 with a new operation", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

func TestAdminEndpoints(t *testing.T) {
	e, srv := newServer(t, Options{Token: testToken})
	admin := func(method, path, body string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return mustSend(t, srv, req)
	}

	resp, body := admin(http.MethodPost, "/_emulator/faults", `[{"status":503},{"status":429,"retryAfter":"2"},{"delay":"10ms"},{"delay":1000,"drop":false}]`)
	if resp.StatusCode != 204 {
		t.Fatalf("POST faults: %d %s, want 204", resp.StatusCode, body)
	}
	e.mu.Lock()
	queued := append([]Fault{}, e.faults...)
	e.mu.Unlock()
	if want := []Fault{{Status: 503}, {Status: 429, RetryAfter: "2"}, {Delay: 10 * time.Millisecond}, {Delay: time.Microsecond}}; !equal(queued, want) {
		t.Errorf("queued faults = %+v, want %+v", queued, want)
	}
	resp, body = mustSend(t, srv, newCancel(t, srv, "contoso", "sync-offer"))
	checkError(t, resp, body, 503, "ServiceUnavailable")

	if resp, body = admin(http.MethodPut, "/_emulator/rates", `{"throttle":0.25,"drop":0.5}`); resp.StatusCode != 204 {
		t.Fatalf("PUT rates: %d %s, want 204", resp.StatusCode, body)
	}
	resp, body = admin(http.MethodGet, "/_emulator/rates", "")
	if got := decode[Rates](t, body); resp.StatusCode != 200 || got != (Rates{Throttle: 0.25, Drop: 0.5}) {
		t.Errorf("GET rates: %d %+v, want 200 {Throttle:0.25 Drop:0.5}", resp.StatusCode, got)
	}

	resp, body = admin(http.MethodGet, "/_emulator/calls", "")
	calls := decode[[]Call](t, body)
	if resp.StatusCode != 200 || len(calls) != 1 || calls[0].OfferID != "sync-offer" || calls[0].Status != 503 {
		t.Errorf("GET calls: %d %s, want the one 503 call", resp.StatusCode, body)
	}
	if !bytes.Contains(body, []byte(`"publisherId":"contoso"`)) {
		t.Errorf("GET calls body %s, want camelCase fields", body)
	}

	if resp, body = admin(http.MethodPost, "/_emulator/reset", ""); resp.StatusCode != 204 {
		t.Fatalf("POST reset: %d %s, want 204", resp.StatusCode, body)
	}
	if len(e.Calls()) != 0 {
		t.Errorf("after reset: calls %v, want none", e.Calls())
	}
	if resp, body = admin(http.MethodGet, "/_emulator/calls", ""); resp.StatusCode != 200 || string(body) != "[]\n" {
		t.Errorf("GET calls after reset: %d %q, want 200 \"[]\\n\"", resp.StatusCode, body)
	}
	if resp, body := mustSend(t, srv, newCancel(t, srv, "contoso", "sync-offer")); resp.StatusCode != 200 {
		t.Errorf("after reset: %d %s, want 200 (faults and rates forgotten)", resp.StatusCode, body)
	}

	errs := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode                 string
	}{
		{"unknown admin path", http.MethodGet, "/_emulator/nope", "", 404, "NotFound"},
		{"unknown path", http.MethodGet, "/", "", 404, "NotFound"},
		{"empty segment", http.MethodPost, "/api/publishers//offers/o/cancel?api-version=2017-10-31", "", 404, "NotFound"},
		{"GET cancel", http.MethodGet, "/api/publishers/p/offers/o/cancel?api-version=2017-10-31", "", 405, "MethodNotAllowed"},
		{"GET reset", http.MethodGet, "/_emulator/reset", "", 405, "MethodNotAllowed"},
		{"DELETE rates", http.MethodDelete, "/_emulator/rates", "", 405, "MethodNotAllowed"},
		{"faults not an array", http.MethodPost, "/_emulator/faults", `{"status":503}`, 400, "BadRequest"},
		{"fault unknown field", http.MethodPost, "/_emulator/faults", `[{"stauts":503}]`, 400, "BadRequest"},
		{"fault bad status", http.MethodPost, "/_emulator/faults", `[{"status":200}]`, 400, "BadRequest"},
		{"fault bad delay", http.MethodPost, "/_emulator/faults", `[{"delay":"soon"}]`, 400, "BadRequest"},
		{"fault negative delay", http.MethodPost, "/_emulator/faults", `[{"delay":"-1s"}]`, 400, "BadRequest"},
		{"rate above one", http.MethodPut, "/_emulator/rates", `{"throttle":1.5}`, 400, "BadRequest"},
		{"rates unknown field", http.MethodPut, "/_emulator/rates", `{"throttling":0.5}`, 400, "BadRequest"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := admin(tt.method, tt.path, tt.body)
			checkError(t, resp, body, tt.wantStatus, tt.wantCode)
			if tt.wantStatus == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
	if len(e.Calls()) != 1 {
		t.Errorf("calls = %+v, want only the one cancel that reached the cancel route", e.Calls())
	}
}

func TestFaultUnmarshalJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    Fault
		wantErr bool
	}{
		{`{"delay":1500000000}`, Fault{Delay: 1500 * time.Millisecond}, false},
		{`{"delay":"1.5s"}`, Fault{Delay: 1500 * time.Millisecond}, false},
		{`{"delay":null,"status":503,"retryAfter":"3","drop":true}`, Fault{Status: 503, RetryAfter: "3", Drop: true}, false},
		{`{"delay":"soon"}`, Fault{}, true},
		{`{"delay":1.5}`, Fault{}, true},
		{`{"delay":true}`, Fault{}, true},
		{`{"dealy":"1s"}`, Fault{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got Fault
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Errorf("Unmarshal = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestWaitsHonourContext checks that Latency and Delay end with the request, so that servers
// shut down promptly.
func TestWaitsHonourContext(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		fault *Fault
	}{
		{"latency", Options{Token: testToken, Latency: time.Hour}, nil},
		{"fault delay", Options{Token: testToken}, &Fault{Delay: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(tt.opts)
			if tt.fault != nil {
				e.Inject(*tt.fault)
			}
			srv := httptest.NewServer(e)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, _, err := send(srv, newCancel(t, srv, "contoso", "sync-offer").WithContext(ctx))
			closed := make(chan struct{})
			go func() { srv.Close(); close(closed) }() // not deferred: a stuck handler must not hang the test
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want the client's deadline", err)
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("server still waiting 5s after the client went away")
			}
			if calls := e.Calls(); len(calls) != 1 || calls[0].Status != 0 {
				t.Errorf("Calls() = %+v, want one call with status 0", calls)
			}
		})
	}
}

func TestLatencyDelaysAnswers(t *testing.T) {
	_, srv := newServer(t, Options{Token: testToken, Latency: 30 * time.Millisecond})
	start := time.Now()
	resp, _ := mustSend(t, srv, newCancel(t, srv, "contoso", "contoso-offer"))
	if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
		t.Errorf("cancel answered in %v, want at least the 30ms latency", elapsed)
	}
	start = time.Now()
	mustSend(t, srv, newRequest(t, http.MethodGet, srv.URL+resp.Header.Get("Location"), ""))
	if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
		t.Errorf("operation GET answered in %v, want at least the 30ms latency", elapsed)
	}
}

func TestListen(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", Options{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/publishers/contoso/offers/sync-offer/cancel?api-version=2017-10-31",
		strings.NewReader(`{"metadata":{"notification-emails":"a@contoso.com"}}`))
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || srv.CancelCount("contoso", "sync-offer") != 1 {
		t.Errorf("status %d, %d calls recorded; want 200 and 1", resp.StatusCode, srv.CancelCount("contoso", "sync-offer"))
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := http.Get(srv.URL); err == nil {
		t.Error("the server still answers after Close")
	}
}
