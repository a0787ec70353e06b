package cloudpartner

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.opentelemetry.io/otel/trace"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
)

const (
	maxBodyBytes    = 64 << 10 // response bytes read, and at most as many more drained
	maxMessageBytes = 512
	maxCodeBytes    = 64
	maxHeaderBytes  = 256 // correlation ids
	maxRetryAfter   = time.Hour
)

// MaxLocationBytes bounds an operation location the client takes from an answer; a longer one is
// not followed.
const MaxLocationBytes = 2048

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. https://cloudpartner.azure.com. Plain http:// is accepted
	// only for a loopback host (127.0.0.0/8, ::1, localhost): config.ParseBaseURL.
	BaseURL string
	// APIVersion is sent as the api-version query parameter; when empty, the default of
	// CPCANCEL_CLOUDPARTNER_API_VERSION.
	APIVersion string
	// Tokens supplies the bearer token; required.
	Tokens TokenSource
	// Timeout bounds each HTTP exchange, from sending the request to reading the body; when
	// zero, the default of CPCANCEL_HTTP_TIMEOUT.
	Timeout time.Duration
	// Transport carries the requests; when nil, a clone of http.DefaultTransport tuned for
	// many concurrent calls to one host.
	Transport http.RoundTripper
	// Observer, when set, sees every HTTP exchange, including the retry after a 401.
	Observer Observer
	// Limits, when set, hold calls back to protect the API.
	Limits Limits
	// MaxIdleConns sizes the default transport's pool of kept-alive connections, which should
	// match the calls that may be in flight at once; 64 when zero, 2,048 at most. No more
	// connections are opened: calls beyond wait for a free one.
	MaxIdleConns int
	// Tracer, when set, makes an HTTP CLIENT span of every exchange; nil is tracing off.
	Tracer trace.Tracer
}

// Client calls the Cloud Partner Portal Cancel operation API. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host[/path], no trailing slash
	apiVersion string
	tokens     TokenSource
	timeout    time.Duration
	http       *http.Client
	observer   Observer
	limiter    *limiter
	tracer     trace.Tracer
}

// New returns a Client for cfg, or an error naming what is wrong with cfg.
func New(cfg Config) (*Client, error) {
	base, err := config.ParseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	if cfg.Tokens == nil {
		return nil, errors.New("cloudpartner: a token source is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("cloudpartner: timeout %s is negative", cfg.Timeout)
	}
	defaults := config.Default().CloudPartner
	c := &Client{
		base:       base.String(),
		apiVersion: cmp.Or(cfg.APIVersion, defaults.APIVersion),
		tokens:     cfg.Tokens,
		timeout:    cmp.Or(cfg.Timeout, defaults.HTTPTimeout),
		observer:   cfg.Observer,
		tracer:     cfg.Tracer,
		limiter:    newLimiter(cfg.Limits),
	}
	transport := cfg.Transport
	if transport == nil {
		transport = defaultTransport(cmp.Or(cfg.MaxIdleConns, 64))
	}
	c.http = &http.Client{
		Transport: transport,
		// A redirect would carry the bearer token to whatever host it names.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// maxConns bounds the connections to the API host; calls beyond wait for one to be free. net/http
// walks a host's idle connections each time a call gives one back, so thousands of them (a burst
// of thousands of requests in flight opens as many) cost CPU on every call while they last: at
// 8,192 in flight, 5 % of throughput and a quarter of the memory. 2,048 connections still carry
// 6,800 calls/s to an API answering in 300 ms.
const maxConns = 2048

// defaultTransport keeps up to idle connections alive to the one API host (at most maxConns), so
// that a busy pool of workers does not open a connection per call.
func defaultTransport(idle int) *http.Transport {
	idle = min(idle, maxConns)
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: idle, MaxConnsPerHost: idle}
	}
	t = t.Clone()
	t.MaxIdleConns = idle
	t.MaxIdleConnsPerHost = idle
	t.MaxConnsPerHost = idle
	t.IdleConnTimeout = 90 * time.Second
	t.MaxResponseHeaderBytes = 64 << 10
	// Requests and answers are small; the default 4 KiB per direction and connection is most of
	// the memory a call in flight holds over HTTP/1.1. Longer headers take a second read.
	t.WriteBufferSize = 1 << 10
	t.ReadBufferSize = 2 << 10
	return t
}

// Header values and the body shared by every call; never modified.
var (
	jsonHeader      = []string{"application/json"}
	userAgentHeader = []string{"cpcancel"}
	noEmailsBody    = []byte(`{"metadata":{}}`)
)

type cancelBody struct {
	Metadata cancelMetadata `json:"metadata"`
}

type cancelMetadata struct {
	NotificationEmails string `json:"notification-emails,omitempty"`
}

// Cancel asks the API to cancel the offer's running operation. It returns Accepted for 200 and
// 202, and an *Error for everything else; Error.Transient alone says whether to retry. After a
// 401 it asks Tokens for a fresh token and tries exactly once more, if the token is new.
func (c *Client) Cancel(ctx context.Context, req CancelRequest) (Accepted, error) {
	if !cancelevent.ValidID(req.PublisherID) || !cancelevent.ValidID(req.OfferID) {
		return Accepted{}, &Error{Code: cancelevent.CodeInvalidRequest,
			Message: "publisher and offer ids must be 1-64 characters of [A-Za-z0-9._-], not . or .."}
	}
	var emails []string
	for _, e := range req.NotificationEmails {
		if e = strings.TrimSpace(e); e != "" {
			emails = append(emails, e)
		}
	}
	body := noEmailsBody
	if len(emails) > 0 {
		var err error
		body, err = json.Marshal(cancelBody{Metadata: cancelMetadata{NotificationEmails: strings.Join(emails, ",")}})
		if err != nil {
			return Accepted{}, &Error{Code: cancelevent.CodeInvalidRequest, Message: "cannot encode request body", Err: err}
		}
	}
	endpoint := c.base + "/api/publishers/" + url.PathEscape(req.PublisherID) +
		"/offers/" + url.PathEscape(req.OfferID) + "/cancel?api-version=" + url.QueryEscape(c.apiVersion)

	if c.tracer != nil && req.Attempt > 0 {
		ctx = context.WithValue(ctx, attemptKey{}, req.Attempt)
	}
	return withToken(ctx, c, func(token string, secrets []string) (Accepted, error) {
		return c.post(ctx, endpoint, body, token, secrets, req.Fence)
	})
}

// withToken makes call with a token, and after a 401 once more with a fresh one, unless the
// source has no other (a static token, or one its cache still holds): the same token would get
// the same answer. secrets are the tokens sent so far, which call redacts from what it reports.
func withToken[T any](ctx context.Context, c *Client, call func(token string, secrets []string) (T, error)) (T, error) {
	var none T
	token, err := c.token(ctx, false)
	if err != nil {
		return none, err
	}
	v, callErr := call(token, []string{token})
	var e *Error
	if !errors.As(callErr, &e) || e.StatusCode != http.StatusUnauthorized {
		return v, callErr
	}
	fresh, err := c.token(ctx, true)
	if err != nil {
		return none, err
	}
	if fresh == token {
		return v, callErr
	}
	return call(fresh, []string{token, fresh})
}

// CheckToken gets a token as a call would, without calling: to find at start credentials that
// cannot give one.
func (c *Client) CheckToken(ctx context.Context) error {
	_, err := c.token(ctx, false)
	return err
}

// token returns a usable token from c.tokens, or a transient *Error. Getting it is bounded by
// the timeout of a call, as an identity endpoint that never answers would otherwise hold the
// request (and its lease) for good.
func (c *Client) token(ctx context.Context, refresh bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tok, err := c.tokens.Token(ctx, refresh)
	if err != nil {
		return "", &Error{Code: cancelevent.CodeTokenError, Transient: true,
			Message: clean("cannot get a bearer token: "+err.Error(), maxMessageBytes, nil), Err: err}
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", &Error{Code: cancelevent.CodeTokenError, Transient: true, Message: "the token source returned an empty token"}
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < 0x21 || tok[i] > 0x7e {
			return "", &Error{Code: cancelevent.CodeTokenError, Transient: true, Message: "the token contains characters not allowed in a header"}
		}
	}
	return tok, nil
}

// post performs one HTTP exchange with its own timeout and classifies the outcome. secrets are
// redacted from every message built from the response.
func (c *Client) post(ctx context.Context, endpoint string, body []byte, token string, secrets []string, fence func(context.Context) error) (Accepted, error) {
	resp, data, err := c.exchange(ctx, OperationCancel, endpoint, body, token, secrets, fence)
	if err != nil {
		return Accepted{}, err
	}
	correlation := correlationID(resp.Header, secrets)
	switch resp.StatusCode {
	case http.StatusOK:
		return Accepted{StatusCode: http.StatusOK, CorrelationID: correlation}, nil
	case http.StatusAccepted:
		loc := c.location(resp.Header, data, secrets)
		return Accepted{StatusCode: http.StatusAccepted, Location: loc, OperationID: operationID(loc), CorrelationID: correlation}, nil
	}
	return Accepted{}, statusError(resp, data, secrets)
}

// exchange makes one HTTP call within the limits and the timeout, and returns the response with
// its body read (bounded) and closed. operation (OperationCancel, a POST with body, or
// OperationStatus, a GET) labels the observation. An empty token sends no Authorization header.
// fence, when set, is asked right before sending; its error is returned as it is.
func (c *Client) exchange(ctx context.Context, operation, endpoint string, body []byte, token string, secrets []string, fence func(context.Context) error) (*http.Response, []byte, error) {
	release, err := c.limiter.acquire(ctx, c.observeThrottle)
	if err != nil {
		return nil, nil, &Error{Code: cancelevent.CodeCanceled, Message: "gave up waiting for the API rate limit", Transient: true, Err: err}
	}
	defer release()
	if fence != nil {
		if err := fence(ctx); err != nil {
			return nil, nil, err
		}
	}
	method := http.MethodGet
	if operation == OperationCancel {
		method = http.MethodPost
	}
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(callCtx, method, endpoint, reader)
	if err != nil {
		return nil, nil, &Error{Code: cancelevent.CodeInvalidRequest, Message: "cannot build the request", Err: err}
	}
	req.Header = make(http.Header, 4)
	if body != nil {
		req.Header["Content-Type"] = jsonHeader
	}
	req.Header["Accept"] = jsonHeader
	if token != "" {
		req.Header["Authorization"] = []string{"Bearer " + token}
	}
	req.Header["User-Agent"] = userAgentHeader

	var span trace.Span
	if c.tracer != nil {
		// After the limits and the fence: the span is the exchange on the wire. A retry after a
		// 401 is a resend (secrets then holds both tokens).
		ctx, span = startClientSpan(ctx, c.tracer, req, operation, len(secrets)-1)
		req = req.WithContext(trace.ContextWithSpan(callCtx, span))
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observe(ctx, operation, "error", time.Since(start))
		e := c.transportError(ctx, callCtx, err, secrets)
		if span != nil {
			endClientSpan(span, 0, e.Code)
		}
		return nil, nil, e
	}
	defer drainClose(resp.Body)
	data, _ := readBody(resp) // a short body is still an answer
	c.observe(ctx, operation, strconv.Itoa(resp.StatusCode), time.Since(start))
	if span != nil {
		endClientSpan(span, resp.StatusCode, "")
	}
	return resp, data, nil
}

func (c *Client) observe(ctx context.Context, operation, code string, elapsed time.Duration) {
	if c.observer != nil {
		c.observer.ObserveAPIRequest(ctx, operation, code, elapsed)
	}
}

func (c *Client) observeThrottle(limit string, waited time.Duration) {
	if c.observer != nil {
		c.observer.ObserveThrottle(limit, waited)
	}
}

// readBody reads at most maxBodyBytes of the response body, in one allocation of the right size
// when the response says how long it is.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxBodyBytes {
		data := make([]byte, n)
		read, err := io.ReadFull(resp.Body, data)
		return data[:read], err
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
}

func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxBodyBytes))
	_ = body.Close()
}

// transportError classifies a failure to get any response; all of them are transient.
func (c *Client) transportError(parent, callCtx context.Context, err error, secrets []string) *Error {
	switch {
	case errors.Is(parent.Err(), context.Canceled):
		return &Error{Code: cancelevent.CodeCanceled, Transient: true, Message: "the call was canceled by the caller", Err: parent.Err()}
	case parent.Err() != nil:
		return &Error{Code: cancelevent.CodeTimeout, Transient: true, Message: "the caller's deadline expired before a response", Err: parent.Err()}
	case errors.Is(callCtx.Err(), context.DeadlineExceeded) || isTimeout(err):
		return &Error{Code: cancelevent.CodeTimeout, Transient: true, Message: fmt.Sprintf("no response within %s", c.timeout), Err: err}
	}
	return &Error{Code: cancelevent.CodeTransportError, Transient: true, Message: clean(err.Error(), maxMessageBytes, secrets), Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// statusError builds the *Error for any status other than 200 and 202.
func statusError(resp *http.Response, body []byte, secrets []string) *Error {
	status := resp.StatusCode
	code, msg := parseErrorBody(body)
	switch {
	case status >= 200 && status < 300:
		code, msg = cancelevent.CodeUnexpectedStatus, "unexpected success status "+resp.Status
	case status >= 300 && status < 400:
		code, msg = cancelevent.HTTPCode(status), "redirect not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			msg += " (Location: " + loc + ")"
		}
	case code == "" && status == http.StatusUnauthorized:
		code = cancelevent.CodeUnauthorized
	case code == "":
		code = cancelevent.HTTPCode(status)
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	if msg == "" {
		msg = fmt.Sprintf("HTTP status %d", status)
	}
	return &Error{
		StatusCode:    status,
		Code:          clean(code, maxCodeBytes, secrets),
		Message:       clean(msg, maxMessageBytes, secrets),
		CorrelationID: correlationID(resp.Header, secrets),
		RetryAfter:    parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Transient:     transientStatus(status),
	}
}

func transientStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return status >= 500 && status <= 599
}

// parseErrorBody returns the API's error code and message, or, for a body that is not the
// documented error JSON, no code and the body itself as the message.
func parseErrorBody(body []byte) (code, message string) {
	var doc struct {
		Error   json.RawMessage `json:"error"`
		Code    string          `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &doc) == nil {
		var inner struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		var text string
		switch {
		case json.Unmarshal(doc.Error, &inner) == nil && (inner.Code != "" || inner.Message != ""):
			return inner.Code, inner.Message
		case json.Unmarshal(doc.Error, &text) == nil && text != "":
			return "", text
		case doc.Code != "" || doc.Message != "":
			return doc.Code, doc.Message
		}
	}
	return "", string(body)
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP-date, clamped to [0, 1h].
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case strings.HasPrefix(v, "-"):
			return 0
		case err != nil || n > int64(maxRetryAfter/time.Second):
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

func correlationID(h http.Header, secrets []string) string {
	id := h.Get("X-Ms-Correlation-Request-Id")
	if id == "" {
		id = h.Get("X-Ms-Request-Id")
	}
	return clean(id, maxHeaderBytes, secrets)
}

// location returns the absolute operation URL from the Location header, the Operation-Location
// header or the body, in that order, or "" when none holds a usable one.
func (c *Client) location(h http.Header, body []byte, secrets []string) string {
	usable := func(raw string) (string, bool) {
		loc, ok := c.resolve(raw)
		return loc, ok && !containsAny(loc, secrets)
	}
	for _, name := range []string{"Location", "Operation-Location"} {
		if loc, ok := usable(h.Get(name)); ok {
			return loc
		}
	}
	var fields map[string]json.RawMessage // only read when no header names one
	if json.Unmarshal(body, &fields) != nil {
		return ""
	}
	for _, key := range []string{"location", "Location", "operationLocation", "operation-location", "Operation-Location"} {
		var s string
		if json.Unmarshal(fields[key], &s) == nil {
			if loc, ok := usable(s); ok {
				return loc
			}
		}
	}
	return ""
}

// containsAny reports whether s holds one of the non-empty secrets.
func containsAny(s string, secrets []string) bool {
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			return true
		}
	}
	return false
}

// resolve makes a location absolute by plain concatenation with the base URL, so that the
// path stays byte for byte what the API sent (`$` is not re-escaped).
func (c *Client) resolve(raw string) (string, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > MaxLocationBytes {
		return "", false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] <= 0x20 || raw[i] == 0x7f {
			return "", false
		}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", false
	case (u.Scheme == "https" || u.Scheme == "http") && u.Host != "":
		return raw, true
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(raw, "/"):
		return c.base + raw, true
	}
	return "", false
}

// operationID returns the path segment after the last "/operations/" in loc, if any.
func operationID(loc string) string {
	path, _, _ := strings.Cut(loc, "?")
	path, _, _ = strings.Cut(path, "#")
	i := strings.LastIndex(path, "/operations/")
	if i < 0 {
		return ""
	}
	id, _, _ := strings.Cut(path[i+len("/operations/"):], "/")
	return id
}

// plain reports whether s is printable ASCII without runs of spaces or spaces at either end, which
// clean would return unchanged.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e || s[i] == ' ' && (i == 0 || i == len(s)-1 || s[i+1] == ' ') {
			return false
		}
	}
	return true
}

// clean redacts secrets, flattens control characters and whitespace, and cuts s to at most limit
// bytes on a UTF-8 boundary. Redaction comes first so that a cut cannot leave part of a secret.
func clean(s string, limit int, secrets []string) string {
	if len(s) <= limit && plain(s) && !containsAny(s, secrets) {
		return s // the usual case: nothing to redact, flatten or cut
	}
	return cleanSlow(s, limit, secrets)
}

func cleanSlow(s string, limit int, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	return cancelevent.Truncate(s, limit)
}
