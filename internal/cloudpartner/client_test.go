package cloudpartner

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cpcancel/cpcancel/internal/config"
)

const (
	migratedLocation    = "/api/publishers/contoso/offers/contoso-offer/operations/56615b67-2185-49fe-80d2-c4ddf77bb2e8?api-version=2017-10-31"
	nonMigratedLocation = "/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31"
	cancelURI           = "/api/publishers/contoso/offers/contoso-offer/cancel?api-version=2017-10-31"
	testToken           = "test-token-9f8e7d"
)

var contoso = CancelRequest{PublisherID: "contoso", OfferID: "contoso-offer"}

// seenRequest is what the test API server received.
type seenRequest struct {
	Method, RequestURI, EscapedPath, APIVersion string
	Header                                      http.Header
	Body                                        string
}

// apiServer is an httptest server that records every request and answers with respond, which
// gets the 1-based number of the request.
type apiServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newAPIServer(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *apiServer {
	t.Helper()
	s := &apiServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, seenRequest{
			Method: r.Method, RequestURI: r.RequestURI, EscapedPath: r.URL.EscapedPath(),
			APIVersion: r.URL.Query().Get("api-version"), Header: r.Header.Clone(), Body: string(body),
		})
		n := len(s.seen)
		s.mu.Unlock()
		respond(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

type recordingObserver struct {
	mu        sync.Mutex
	codes     []string
	throttled map[string]int
}

func (o *recordingObserver) ObserveThrottle(limit string, waited time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.throttled == nil {
		o.throttled = map[string]int{}
	}
	o.throttled[limit]++
}

func (o *recordingObserver) ObserveAPIRequest(_ context.Context, operation, code string, elapsed time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if operation != OperationCancel {
		code = operation + ":" + code
	}
	o.codes = append(o.codes, code)
}

func (o *recordingObserver) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.codes)
}

// scriptedTokens hands out "old" tokens until a refresh is asked for, then "new" ones.
type scriptedTokens struct {
	mu         sync.Mutex
	calls      []bool // the refresh argument of each call
	old, fresh string
	refreshErr error
}

func (s *scriptedTokens) Token(_ context.Context, refresh bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, refresh)
	if !refresh {
		return s.old, nil
	}
	return s.fresh, s.refreshErr
}

type failingTokens struct{ err error }

func (f failingTokens) Token(context.Context, bool) (string, error) { return "", f.err }

func newTestClient(t *testing.T, baseURL string, tokens TokenSource, obs Observer, timeout time.Duration) *Client {
	t.Helper()
	c, err := New(Config{BaseURL: baseURL, Tokens: tokens, Observer: obs, Timeout: timeout})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// asError returns err as an *Error with Err cleared, so that cases compare with ==.
func asError(t *testing.T, err error) Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *cloudpartner.Error", err, err)
	}
	got := *e
	got.Err = nil
	return got
}

func TestCancelSendsDocumentedRequest(t *testing.T) {
	tests := []struct {
		name       string
		basePath   string
		apiVersion string
		req        CancelRequest
		wantURI    string
		wantBody   string
	}{
		{
			name:     "with notification emails",
			req:      CancelRequest{PublisherID: "contoso", OfferID: "contoso-offer", NotificationEmails: []string{"a@contoso.com", " b@contoso.com "}},
			wantURI:  cancelURI,
			wantBody: `{"metadata":{"notification-emails":"a@contoso.com,b@contoso.com"}}`,
		},
		{
			name:     "without notification emails",
			req:      contoso,
			wantURI:  cancelURI,
			wantBody: `{"metadata":{}}`,
		},
		{
			name:     "ids with dots underscores and dashes",
			req:      CancelRequest{PublisherID: "Contoso.Ltd_2", OfferID: "offer-v1.0"},
			wantURI:  "/api/publishers/Contoso.Ltd_2/offers/offer-v1.0/cancel?api-version=2017-10-31",
			wantBody: `{"metadata":{}}`,
		},
		{
			name:       "base path and api version",
			basePath:   "/cpp/",
			apiVersion: "2099-01-01",
			req:        contoso,
			wantURI:    "/cpp/api/publishers/contoso/offers/contoso-offer/cancel?api-version=2099-01-01",
			wantBody:   `{"metadata":{}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusOK) })
			c, err := New(Config{BaseURL: srv.URL + tc.basePath, APIVersion: tc.apiVersion, Tokens: StaticToken(testToken)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Cancel(context.Background(), tc.req); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			wantVersion := tc.apiVersion
			if wantVersion == "" {
				wantVersion = config.Default().CloudPartner.APIVersion
			}
			wantPath, _, _ := strings.Cut(tc.wantURI, "?")
			for _, check := range []struct{ what, got, want string }{
				{"method", got.Method, http.MethodPost},
				{"request URI", got.RequestURI, tc.wantURI},
				{"escaped path", got.EscapedPath, wantPath},
				{"api-version", got.APIVersion, wantVersion},
				{"Content-Type", got.Header.Get("Content-Type"), "application/json"},
				{"Accept", got.Header.Get("Accept"), "application/json"},
				{"Authorization", got.Header.Get("Authorization"), "Bearer " + testToken},
				{"body", got.Body, tc.wantBody},
			} {
				if check.got != check.want {
					t.Errorf("%s = %q, want %q", check.what, check.got, check.want)
				}
			}
		})
	}
}

func TestCancelStatusCodes(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		want      Accepted // Location may start with {base}, the test server's URL
		wantErr   *Error
		wantCodes []string
	}{
		{
			name:      "200 cancelled",
			status:    200,
			header:    map[string]string{"X-Ms-Correlation-Request-Id": "corr-200"},
			want:      Accepted{StatusCode: 200, CorrelationID: "corr-200"},
			wantCodes: []string{"200"},
		},
		{
			name:   "202 migrated offer Location header",
			status: 202,
			header: map[string]string{"Location": migratedLocation, "X-Ms-Correlation-Request-Id": "corr-202"},
			want: Accepted{StatusCode: 202, Location: "{base}" + migratedLocation,
				OperationID: "56615b67-2185-49fe-80d2-c4ddf77bb2e8", CorrelationID: "corr-202"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 non-migrated offer Location header keeps dollars",
			status: 202,
			header: map[string]string{"Location": nonMigratedLocation},
			want: Accepted{StatusCode: 202, Location: "{base}" + nonMigratedLocation,
				OperationID: "contoso$contoso-offer$2$preview"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 absolute Location kept as given",
			status: 202,
			header: map[string]string{"Location": "https://cloudpartner.azure.com" + nonMigratedLocation},
			want: Accepted{StatusCode: 202, Location: "https://cloudpartner.azure.com" + nonMigratedLocation,
				OperationID: "contoso$contoso-offer$2$preview"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 Operation-Location header",
			status: 202,
			header: map[string]string{"Operation-Location": migratedLocation, "x-ms-request-id": "req-1"},
			want: Accepted{StatusCode: 202, Location: "{base}" + migratedLocation,
				OperationID: "56615b67-2185-49fe-80d2-c4ddf77bb2e8", CorrelationID: "req-1"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 location in body",
			status: 202,
			body:   `{"location":"` + nonMigratedLocation + `"}`,
			want: Accepted{StatusCode: 202, Location: "{base}" + nonMigratedLocation,
				OperationID: "contoso$contoso-offer$2$preview"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 operationLocation in body",
			status: 202,
			body:   `{"status":"running","operationLocation":"` + migratedLocation + `"}`,
			want: Accepted{StatusCode: 202, Location: "{base}" + migratedLocation,
				OperationID: "56615b67-2185-49fe-80d2-c4ddf77bb2e8"},
			wantCodes: []string{"202"},
		},
		{
			name:   "202 header wins over body",
			status: 202,
			header: map[string]string{"Location": migratedLocation},
			body:   `{"location":"` + nonMigratedLocation + `"}`,
			want: Accepted{StatusCode: 202, Location: "{base}" + migratedLocation,
				OperationID: "56615b67-2185-49fe-80d2-c4ddf77bb2e8"},
			wantCodes: []string{"202"},
		},
		{
			name:      "202 garbage Location ignored",
			status:    202,
			header:    map[string]string{"Location": "not a url"},
			want:      Accepted{StatusCode: 202},
			wantCodes: []string{"202"},
		},
		{
			name:      "202 without location",
			status:    202,
			body:      `not json`,
			want:      Accepted{StatusCode: 202},
			wantCodes: []string{"202"},
		},
		{
			name:   "400 malformed",
			status: 400,
			header: map[string]string{"X-Ms-Correlation-Request-Id": "corr-400"},
			body:   fixture(t, "error_400.json"),
			wantErr: &Error{StatusCode: 400, Code: "BadRequest", CorrelationID: "corr-400",
				Message: "The request body is not valid: metadata.notification-emails must be a comma-separated list of addresses."},
			wantCodes: []string{"400"},
		},
		{
			name:   "403 no access",
			status: 403,
			header: map[string]string{"X-Ms-Correlation-Request-Id": "corr-403"},
			body:   fixture(t, "error_403.json"),
			wantErr: &Error{StatusCode: 403, Code: "Forbidden", CorrelationID: "corr-403",
				Message: "The caller does not have access to publisher contoso."},
			wantCodes: []string{"403"},
		},
		{
			name:   "404 unknown offer",
			status: 404,
			header: map[string]string{"X-Ms-Correlation-Request-Id": "corr-404"},
			body:   fixture(t, "error_404.json"),
			wantErr: &Error{StatusCode: 404, Code: "NotFound", CorrelationID: "corr-404",
				Message: "Offer contoso-offer was not found for publisher contoso."},
			wantCodes: []string{"404"},
		},
		{
			name:      "418 other 4xx is permanent",
			status:    418,
			wantErr:   &Error{StatusCode: 418, Code: "http_418", Message: "I'm a teapot"},
			wantCodes: []string{"418"},
		},
		{
			name:      "408 transient",
			status:    408,
			wantErr:   &Error{StatusCode: 408, Code: "http_408", Message: "Request Timeout", Transient: true},
			wantCodes: []string{"408"},
		},
		{
			name:   "409 transient",
			status: 409,
			body:   `{"error":{"code":"Conflict","message":"Another operation is being cancelled."}}`,
			wantErr: &Error{StatusCode: 409, Code: "Conflict", Message: "Another operation is being cancelled.",
				Transient: true},
			wantCodes: []string{"409"},
		},
		{
			name:   "429 transient with Retry-After seconds",
			status: 429,
			header: map[string]string{"Retry-After": "7", "X-Ms-Correlation-Request-Id": "corr-429"},
			body:   fixture(t, "error_429.json"),
			wantErr: &Error{StatusCode: 429, Code: "TooManyRequests", Message: "Rate limit exceeded, retry later.",
				CorrelationID: "corr-429", RetryAfter: 7 * time.Second, Transient: true},
			wantCodes: []string{"429"},
		},
		{
			name:   "500 transient",
			status: 500,
			body:   `{"code":"InternalError","message":"Something went wrong."}`,
			wantErr: &Error{StatusCode: 500, Code: "InternalError", Message: "Something went wrong.",
				Transient: true},
			wantCodes: []string{"500"},
		},
		{
			name:   "502 non-JSON body",
			status: 502,
			body:   fixture(t, "bad_gateway.html"),
			wantErr: &Error{StatusCode: 502, Code: "http_502", Transient: true,
				Message: "<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> </body> </html>"},
			wantCodes: []string{"502"},
		},
		{
			name:      "503 transient with Retry-After capped at an hour",
			status:    503,
			header:    map[string]string{"Retry-After": "86400"},
			wantErr:   &Error{StatusCode: 503, Code: "http_503", Message: "Service Unavailable", RetryAfter: time.Hour, Transient: true},
			wantCodes: []string{"503"},
		},
		{
			name:      "201 unexpected success",
			status:    201,
			wantErr:   &Error{StatusCode: 201, Code: "unexpected_status", Message: "unexpected success status 201 Created"},
			wantCodes: []string{"201"},
		},
		{
			name:      "204 unexpected success",
			status:    204,
			wantErr:   &Error{StatusCode: 204, Code: "unexpected_status", Message: "unexpected success status 204 No Content"},
			wantCodes: []string{"204"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			obs := &recordingObserver{}
			c := newTestClient(t, srv.URL, StaticToken(testToken), obs, 0)

			got, err := c.Cancel(context.Background(), contoso)

			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Cancel: %v", err)
				}
				want := tc.want
				want.Location = strings.Replace(want.Location, "{base}", srv.URL, 1)
				if got != want {
					t.Errorf("Cancel = %+v\nwant     %+v", got, want)
				}
			} else {
				if got != (Accepted{}) {
					t.Errorf("Cancel returned %+v alongside an error", got)
				}
				if e := asError(t, err); e != *tc.wantErr {
					t.Errorf("error = %+v\nwant    %+v", e, *tc.wantErr)
				}
			}
			if codes := obs.got(); !slices.Equal(codes, tc.wantCodes) {
				t.Errorf("observed codes %q, want %q", codes, tc.wantCodes)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("server saw %d requests, want 1", n)
			}
		})
	}
}

func TestCancelUnauthorized(t *testing.T) {
	body401 := fixture(t, "error_401.json")
	tests := []struct {
		name        string
		respond     func(w http.ResponseWriter, r *http.Request, n int)
		refreshErr  error
		fresh       string // the refreshed token; "new-token" when empty
		want        Accepted
		wantErr     *Error
		wantAuth    []string
		wantCodes   []string
		wantRefresh []bool
	}{
		{
			name: "refreshed token succeeds",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				if r.Header.Get("Authorization") != "Bearer new-token" {
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"error":{"code":"InvalidAuthenticationToken","message":"expired"}}`)
					return
				}
				w.Header().Set("X-Ms-Correlation-Request-Id", "corr-ok")
				w.WriteHeader(http.StatusOK)
			},
			want:        Accepted{StatusCode: 200, CorrelationID: "corr-ok"},
			wantAuth:    []string{"Bearer old-token", "Bearer new-token"},
			wantCodes:   []string{"401", "200"},
			wantRefresh: []bool{false, true},
		},
		{
			name: "401 twice is permanent with the body's code",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("X-Ms-Correlation-Request-Id", "corr-401")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, body401)
			},
			wantErr: &Error{StatusCode: 401, Code: "InvalidAuthenticationToken",
				Message: "The access token is invalid or has expired.", CorrelationID: "corr-401"},
			wantAuth:    []string{"Bearer old-token", "Bearer new-token"},
			wantCodes:   []string{"401", "401"},
			wantRefresh: []bool{false, true},
		},
		{
			name: "401 twice without body",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(http.StatusUnauthorized)
			},
			wantErr:     &Error{StatusCode: 401, Code: "unauthorized", Message: "Unauthorized"},
			wantAuth:    []string{"Bearer old-token", "Bearer new-token"},
			wantCodes:   []string{"401", "401"},
			wantRefresh: []bool{false, true},
		},
		{
			name: "a refresh that brings the same token sends nothing again",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(http.StatusUnauthorized)
			},
			fresh:       "old-token",
			wantErr:     &Error{StatusCode: 401, Code: "unauthorized", Message: "Unauthorized"},
			wantAuth:    []string{"Bearer old-token"},
			wantCodes:   []string{"401"},
			wantRefresh: []bool{false, true},
		},
		{
			name: "refresh fails",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(http.StatusUnauthorized)
			},
			refreshErr:  errors.New("identity endpoint unreachable"),
			wantErr:     &Error{Code: "token_error", Message: "cannot get a bearer token: identity endpoint unreachable", Transient: true},
			wantAuth:    []string{"Bearer old-token"},
			wantCodes:   []string{"401"},
			wantRefresh: []bool{false, true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, tc.respond)
			obs := &recordingObserver{}
			tokens := &scriptedTokens{old: "old-token", fresh: cmp.Or(tc.fresh, "new-token"), refreshErr: tc.refreshErr}
			c := newTestClient(t, srv.URL, tokens, obs, 0)

			got, err := c.Cancel(context.Background(), contoso)

			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Cancel: %v", err)
				}
				if got != tc.want {
					t.Errorf("Cancel = %+v, want %+v", got, tc.want)
				}
			} else if e := asError(t, err); e != *tc.wantErr {
				t.Errorf("error = %+v\nwant    %+v", e, *tc.wantErr)
			}
			var auth []string
			for _, r := range srv.requests() {
				auth = append(auth, r.Header.Get("Authorization"))
			}
			if !slices.Equal(auth, tc.wantAuth) {
				t.Errorf("Authorization headers %q, want %q", auth, tc.wantAuth)
			}
			if codes := obs.got(); !slices.Equal(codes, tc.wantCodes) {
				t.Errorf("observed codes %q, want %q", codes, tc.wantCodes)
			}
			if !slices.Equal(tokens.calls, tc.wantRefresh) {
				t.Errorf("token refresh arguments %v, want %v", tokens.calls, tc.wantRefresh)
			}
		})
	}
}

func TestTokenFetchIsBounded(t *testing.T) {
	srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusOK) })
	cred := &hangingCredential{started: make(chan struct{})}
	c := newTestClient(t, srv.URL, NewAzureToken(cred, ""), nil, 100*time.Millisecond)
	done := make(chan error, 1)
	go func() { _, err := c.Cancel(context.Background(), contoso); done <- err }()
	select {
	case err := <-done:
		if e := asError(t, err); e.Code != "token_error" || !e.Transient {
			t.Errorf("error %+v, want a transient token_error", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Cancel still waited for a token 5s after its 100ms timeout")
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server saw %d requests, want none without a token", n)
	}
}

func TestCancelRejectsWithoutCalling(t *testing.T) {
	tests := []struct {
		name    string
		req     CancelRequest
		tokens  TokenSource
		wantErr Error
	}{
		{name: "empty publisher", req: CancelRequest{PublisherID: "", OfferID: "o"}},
		{name: "dot offer", req: CancelRequest{PublisherID: "p", OfferID: "."}},
		{name: "dot dot publisher", req: CancelRequest{PublisherID: "..", OfferID: "o"}},
		{name: "slash", req: CancelRequest{PublisherID: "a/b", OfferID: "o"}},
		{name: "escaped slash", req: CancelRequest{PublisherID: "p", OfferID: "a%2Fb"}},
		{name: "65 characters", req: CancelRequest{PublisherID: strings.Repeat("a", 65), OfferID: "o"}},
		{name: "space", req: CancelRequest{PublisherID: "p", OfferID: "a b"}},
		{name: "query", req: CancelRequest{PublisherID: "p", OfferID: "o?x=1"}},
		{
			name:    "token source error",
			req:     contoso,
			tokens:  failingTokens{errors.New("no credentials")},
			wantErr: Error{Code: "token_error", Message: "cannot get a bearer token: no credentials", Transient: true},
		},
		{
			name:    "empty token",
			req:     contoso,
			tokens:  failingTokens{},
			wantErr: Error{Code: "token_error", Message: "the token source returned an empty token", Transient: true},
		},
		{
			name:    "token with a newline",
			req:     contoso,
			tokens:  StaticToken("abc\ndef"),
			wantErr: Error{Code: "token_error", Message: "the token contains characters not allowed in a header", Transient: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusOK) })
			tokens := tc.tokens
			if tokens == nil {
				tokens = StaticToken(testToken)
			}
			want := tc.wantErr
			if want.Code == "" {
				want = Error{Code: "invalid_request", Message: "publisher and offer ids must be 1-64 characters of [A-Za-z0-9._-], not . or .."}
			}
			obs := &recordingObserver{}
			c := newTestClient(t, srv.URL, tokens, obs, 0)

			_, err := c.Cancel(context.Background(), tc.req)

			if e := asError(t, err); e != want {
				t.Errorf("error = %+v\nwant    %+v", e, want)
			}
			if n := len(srv.requests()); n != 0 {
				t.Errorf("server saw %d requests, want none", n)
			}
			if codes := obs.got(); len(codes) != 0 {
				t.Errorf("observed %q, want nothing", codes)
			}
		})
	}
}

func TestCancelTransportFailures(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}
	tests := []struct {
		name        string
		respond     func(w http.ResponseWriter, r *http.Request, n int)
		timeout     time.Duration
		cancelAfter time.Duration // cancel the caller's context after this long, if set
		wantCode    string
		wantIs      error
	}{
		{
			name:     "slow server times out",
			respond:  slow,
			timeout:  100 * time.Millisecond,
			wantCode: "timeout",
			wantIs:   context.DeadlineExceeded,
		},
		{
			name:        "caller cancels",
			respond:     slow,
			timeout:     10 * time.Second,
			cancelAfter: 50 * time.Millisecond,
			wantCode:    "canceled",
			wantIs:      context.Canceled,
		},
		{
			name: "dropped connection",
			respond: func(w http.ResponseWriter, r *http.Request, n int) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				conn.Close()
			},
			timeout:  10 * time.Second,
			wantCode: "transport_error",
			wantIs:   io.EOF,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, tc.respond)
			obs := &recordingObserver{}
			c := newTestClient(t, srv.URL, StaticToken(testToken), obs, tc.timeout)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelAfter > 0 {
				time.AfterFunc(tc.cancelAfter, cancel)
			}

			start := time.Now()
			_, err := c.Cancel(ctx, contoso)
			elapsed := time.Since(start)

			e := asError(t, err)
			if e.Code != tc.wantCode || !e.Transient || e.StatusCode != 0 {
				t.Errorf("error = %+v, want transient %s with StatusCode 0", e, tc.wantCode)
			}
			if !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error %q contains the token", err)
			}
			if elapsed > 3*time.Second {
				t.Errorf("Cancel took %s", elapsed)
			}
			if codes := obs.got(); !slices.Equal(codes, []string{"error"}) {
				t.Errorf("observed codes %q, want [error]", codes)
			}
		})
	}
}

func TestCancelBoundsHugeBodies(t *testing.T) {
	huge := strings.Repeat("x", 10<<20)
	tests := []struct {
		name, body string
	}{
		{"plain text", huge},
		{"JSON error message", `{"error":{"code":"InternalError","message":"` + huge + `"}}`},
		{"multi-byte characters", strings.Repeat("é", 5<<20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, tc.body) // fails once the client hangs up; that is the point
			})
			c := newTestClient(t, srv.URL, StaticToken(testToken), nil, 5*time.Second)

			start := time.Now()
			_, err := c.Cancel(context.Background(), contoso)

			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("Cancel took %s", elapsed)
			}
			e := asError(t, err)
			if e.StatusCode != 500 || e.Code != "http_500" || !e.Transient {
				t.Errorf("error = {StatusCode:%d Code:%q Transient:%v}, want transient http_500", e.StatusCode, e.Code, e.Transient)
			}
			if len(e.Message) == 0 || len(e.Message) > 512 || !utf8.ValidString(e.Message) {
				t.Errorf("message is %d bytes (valid UTF-8: %v), want 1..512", len(e.Message), utf8.ValidString(e.Message))
			}
		})
	}
}

func TestCancelDoesNotFollowRedirects(t *testing.T) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			other := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusOK) })
			srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				http.Redirect(w, r, other.URL+"/collect", status)
			})
			obs := &recordingObserver{}
			c := newTestClient(t, srv.URL, StaticToken(testToken), obs, 0)

			_, err := c.Cancel(context.Background(), contoso)

			e := asError(t, err)
			if e.StatusCode != status || e.Transient {
				t.Errorf("error = %+v, want permanent with StatusCode %d", e, status)
			}
			if !strings.Contains(e.Message, other.URL+"/collect") {
				t.Errorf("message %q does not name the redirect target", e.Message)
			}
			if n := len(other.requests()); n != 0 {
				t.Errorf("redirect target received %d requests, want none", n)
			}
			if codes := obs.got(); len(codes) != 1 {
				t.Errorf("observed codes %q, want one", codes)
			}
		})
	}
}

func TestCancelRedactsToken(t *testing.T) {
	srv := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"code":"BadRequest","message":"bad header `+r.Header.Get("Authorization")+`"}}`)
	})
	c := newTestClient(t, srv.URL, StaticToken(testToken), nil, 0)

	_, err := c.Cancel(context.Background(), contoso)

	e := asError(t, err)
	if want := "bad header Bearer [redacted]"; e.Message != want {
		t.Errorf("message = %q, want %q", e.Message, want)
	}
	if strings.Contains(err.Error(), testToken) {
		t.Errorf("error %q contains the token", err)
	}
}

func TestResolveLocation(t *testing.T) {
	tests := []struct {
		name, base, raw, want, wantID string
	}{
		{"migrated", "https://cloudpartner.azure.com", migratedLocation,
			"https://cloudpartner.azure.com" + migratedLocation, "56615b67-2185-49fe-80d2-c4ddf77bb2e8"},
		{"non-migrated keeps dollars", "https://cloudpartner.azure.com", nonMigratedLocation,
			"https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31",
			"contoso$contoso-offer$2$preview"},
		{"percent escapes kept", "https://cloudpartner.azure.com", "/api/operations/contoso%24offer",
			"https://cloudpartner.azure.com/api/operations/contoso%24offer", "contoso%24offer"},
		{"base path prefixed", "https://gw.example.com/cpp/", nonMigratedLocation,
			"https://gw.example.com/cpp" + nonMigratedLocation, "contoso$contoso-offer$2$preview"},
		{"absolute kept", "https://cloudpartner.azure.com", "https://other.example.com/api/operations/x?y=1",
			"https://other.example.com/api/operations/x?y=1", "x"},
		{"no operation in path", "https://cloudpartner.azure.com", "/api/publishers/contoso",
			"https://cloudpartner.azure.com/api/publishers/contoso", ""},
		{"protocol-relative refused", "https://cloudpartner.azure.com", "//evil.example.com/api/operations/x", "", ""},
		{"path-relative refused", "https://cloudpartner.azure.com", "api/operations/x", "", ""},
		{"control character refused", "https://cloudpartner.azure.com", "/api/operations/x\x00", "", ""},
		{"other scheme refused", "https://cloudpartner.azure.com", "javascript:alert(1)", "", ""},
		{"bad escape refused", "https://cloudpartner.azure.com", "/api/operations/%zz", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestClient(t, tc.base, StaticToken(testToken), nil, 0)
			got, _ := c.resolve(tc.raw)
			if got != tc.want {
				t.Errorf("resolve(%q) = %q, want %q", tc.raw, got, tc.want)
			}
			if id := operationID(got); id != tc.wantID {
				t.Errorf("operationID(%q) = %q, want %q", got, id, tc.wantID)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"plain http to a remote host", Config{BaseURL: "http://cloudpartner.azure.com", Tokens: StaticToken("t")}},
		{"missing token source", Config{BaseURL: "https://cloudpartner.azure.com"}},
		{"negative timeout", Config{BaseURL: "https://cloudpartner.azure.com", Tokens: StaticToken("t"), Timeout: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Errorf("New(%+v) succeeded, want an error", tc.cfg)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"3601", time.Hour},
		{"99999999999999999999999", time.Hour},
		{"-99999999999999999999999", 0},
		{"Wed, 01 May 2024 12:00:30 GMT", 30 * time.Second},
		{"Wed, 01 May 2024 11:00:00 GMT", 0},
		{"Thu, 02 May 2024 12:00:00 GMT", time.Hour},
		{"soon", 0},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			if got := parseRetryAfter(tc.value, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.value, got, tc.want)
			}
		})
	}
}

// TestCleanFastPath checks, for every string of up to five characters from an alphabet of the
// cases that matter, that clean's shortcut returns what the full path would.
func TestCleanFastPath(t *testing.T) {
	alphabet := []string{"a", " ", "\t", "é", "\x7f", "\xff", "~"}
	var walk func(s string, depth int)
	walk = func(s string, depth int) {
		if plain(s) {
			if full := cleanSlow(s, maxMessageBytes, nil); full != s {
				t.Errorf("plain(%q) but the full clean gives %q", s, full)
			}
		}
		if depth == 5 {
			return
		}
		for _, c := range alphabet {
			walk(s+c, depth+1)
		}
	}
	walk("", 0)
	if got := clean("a secret here", maxMessageBytes, []string{"secret"}); got != "a [redacted] here" {
		t.Errorf("clean redacts nothing on the shortcut: %q", got)
	}
}

// The default transport opens no more connections to the API than it keeps alive: calls beyond
// wait for a free one, instead of a burst leaving thousands of idle connections behind.
func TestConnectionsBoundedByIdlePool(t *testing.T) {
	const idle, calls = 2, 12
	var mu sync.Mutex
	open, most := 0, 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Location", migratedLocation)
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open++
			most = max(most, open)
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, Tokens: StaticToken(testToken), MaxIdleConns: idle})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if _, err := c.Cancel(context.Background(), contoso); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most > idle {
		t.Errorf("%d connections open at once for %d concurrent calls, want at most %d", most, calls, idle)
	}
}
