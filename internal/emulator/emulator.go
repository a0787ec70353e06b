package emulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// apiVersion is the only api-version the emulator accepts.
	apiVersion               = "2017-10-31"
	defaultOperationDuration = 30 * time.Second
	maxRecords               = 100000   // calls and operations kept in memory
	maxPolls                 = 10000    // poll times kept per operation (all are counted)
	maxBodyBytes             = 64 << 10 // request bodies, API and admin alike
)

// Options configures an Emulator. The zero value is usable.
type Options struct {
	// Token is the bearer token required; empty means any non-empty bearer token is accepted.
	Token string
	// Latency is added to every API answer (not to admin endpoints).
	Latency time.Duration
	// OperationDuration is how long an operation started by a 202 reads "running" before it reads
	// "canceled" (or "failed"); zero or negative means 30s.
	OperationDuration time.Duration
	// Logger receives one debug record per answer; nil discards.
	Logger *slog.Logger
}

// Emulator is an in-memory Cloud Partner Portal cancel API. It is an http.Handler, safe for
// concurrent use; see the package documentation for the scenarios it plays.
type Emulator struct {
	tokens     atomic.Pointer[[]string] // SetToken replaces them
	latency    atomic.Int64             // a time.Duration; SetLatency replaces it
	opDuration time.Duration
	log        *slog.Logger
	mux        *http.ServeMux
	maxCalls   int
	maxOps     int

	mu       sync.Mutex // guards the fields below
	faults   []Fault
	rates    Rates
	calls    []Call // arrival order until full, then a ring whose oldest is calls[nextCall]
	nextCall int
	counts   map[offerKey]int
	ops      map[string]*operation
	opOrder  []*operation // creation order, to bound memory
	current  map[offerKey]*operation
}

// Fault is one injected misbehaviour applied to the next cancel request. In JSON, delay is either
// nanoseconds or a Go duration string such as "1.5s".
type Fault struct {
	// Status, when non-zero, is answered with the documented error body.
	Status int `json:"status,omitempty"`
	// RetryAfter is the Retry-After header value sent with Status.
	RetryAfter string `json:"retryAfter,omitempty"`
	// Delay is extra latency before answering (or dropping).
	Delay time.Duration `json:"delay,omitempty"`
	// Drop hijacks and closes the connection without answering.
	Drop bool `json:"drop,omitempty"`
}

// Rates are the probabilities, each in [0,1], of random faults applied to cancel requests when
// the fault queue is empty.
type Rates struct {
	// ServerError answers 503 ServiceUnavailable.
	ServerError float64 `json:"serverError"`
	// Throttle answers 429 TooManyRequests with Retry-After: RetryAfter.
	Throttle float64 `json:"throttle"`
	// Drop closes the connection without answering.
	Drop float64 `json:"drop"`
	// RetryAfter is the Retry-After value of throttled answers (and of 503 answers, when set):
	// delay-seconds, such as "5"; empty means "1" for 429 and no header for 503.
	RetryAfter string `json:"retryAfter,omitempty"`
}

// Call records one cancel request the emulator received.
type Call struct {
	PublisherID string `json:"publisherId"`
	OfferID     string `json:"offerId"`
	// NotificationEmails is metadata "notification-emails" as sent, when the body was valid.
	NotificationEmails string `json:"notificationEmails"`
	// Status is the HTTP status answered, 0 when none was (dropped, or the client went away).
	Status int       `json:"status"`
	At     time.Time `json:"at"`
}

type offerKey struct{ publisher, offer string }

// New returns an Emulator configured by opts.
func New(opts Options) *Emulator {
	e := &Emulator{
		opDuration: opts.OperationDuration,
		log:        opts.Logger,
		maxCalls:   maxRecords,
		maxOps:     maxRecords,
	}
	e.SetToken(opts.Token)
	e.SetLatency(opts.Latency)
	if e.opDuration <= 0 {
		e.opDuration = defaultOperationDuration
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.mux = e.routes()
	e.Reset()
	return e
}

// Inject queues faults; each cancel request consumes the first queued fault, before Rates apply.
// Faults are used as given.
func (e *Emulator) Inject(faults ...Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, faults...)
}

// SetToken replaces the bearer token required from now on (Options.Token): requests with the old
// one get 401, as after a credential rotation. More tokens accept any of them, as while a rotated
// secret is being distributed; none, or only empty ones, accept any non-empty bearer token.
func (e *Emulator) SetToken(tokens ...string) {
	var keep []string
	for _, t := range tokens {
		if t != "" {
			keep = append(keep, t)
		}
	}
	e.tokens.Store(&keep)
}

// SetLatency replaces the latency added to every API answer from now on (Options.Latency);
// answers already waiting keep theirs. Zero or negative means none.
func (e *Emulator) SetLatency(d time.Duration) {
	e.latency.Store(int64(max(d, 0)))
}

func (e *Emulator) currentLatency() time.Duration { return time.Duration(e.latency.Load()) }

// SetRates sets the random fault rates, each clamped to [0,1]; the zero Rates disables them.
func (e *Emulator) SetRates(r Rates) {
	clamp := func(p float64) float64 {
		if !(p > 0) { // also NaN
			return 0
		}
		return min(p, 1)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rates = Rates{ServerError: clamp(r.ServerError), Throttle: clamp(r.Throttle), Drop: clamp(r.Drop), RetryAfter: r.RetryAfter}
}

// Calls returns a copy of the recorded cancel requests in arrival order (at most the last 100000).
func (e *Emulator) Calls() []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	calls := make([]Call, 0, len(e.calls))
	calls = append(calls, e.calls[e.nextCall:]...)
	return append(calls, e.calls[:e.nextCall]...)
}

// CancelCount reports how many cancel requests hit this offer since the last Reset, including
// faulted and rejected ones.
func (e *Emulator) CancelCount(publisherID, offerID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[offerKey{publisherID, offerID}]
}

// Reset forgets calls, queued faults, rates and operations.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
	e.rates = Rates{}
	e.calls = nil
	e.nextCall = 0
	e.counts = map[offerKey]int{}
	e.ops = map[string]*operation{}
	e.opOrder = nil
	e.current = map[offerKey]*operation{}
}

// ServeHTTP serves the API and admin endpoints described in the package documentation.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !routable(r.URL.EscapedPath()) {
		e.respond(w, r, notFound())
		return
	}
	e.mux.ServeHTTP(w, r)
}

// routable reports whether an escaped path could name a route: absolute, without an empty, "."
// or ".." segment (which ServeMux would redirect) or a bad escape.
func routable(escapedPath string) bool {
	rest, ok := strings.CutPrefix(escapedPath, "/")
	if !ok {
		return false
	}
	for s := range strings.SplitSeq(rest, "/") {
		if _, err := url.PathUnescape(s); err != nil || s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}

// routes serves each path of the package documentation by method. Another method on a known path
// answers 405 naming the allowed ones (HEAD too, which a GET pattern would otherwise take), and
// an unknown path 404, both with the API's error body.
func (e *Emulator) routes() *http.ServeMux {
	routes := []struct {
		path     string
		byMethod map[string]http.HandlerFunc
	}{
		{"/api/publishers/{publisherId}/offers/{offerId}/cancel", map[string]http.HandlerFunc{http.MethodPost: e.cancel}},
		{"/api/publishers/{publisherId}/offers/{offerId}/operations/{operationId}", map[string]http.HandlerFunc{http.MethodGet: e.getOperation}},
		{"/api/operations/{operationId}", map[string]http.HandlerFunc{http.MethodGet: e.getOperation}},
		{"/_emulator/faults", map[string]http.HandlerFunc{http.MethodPost: e.answer(e.injectFaults)}},
		{"/_emulator/rates", map[string]http.HandlerFunc{http.MethodGet: e.answer(e.getRates), http.MethodPut: e.answer(e.putRates)}},
		{"/_emulator/calls", map[string]http.HandlerFunc{http.MethodGet: e.answer(e.getCalls)}},
		{"/_emulator/reset", map[string]http.HandlerFunc{http.MethodPost: e.answer(e.reset)}},
	}
	mux := http.NewServeMux()
	for _, rt := range routes {
		allow := slices.Sorted(maps.Keys(rt.byMethod))
		for method, h := range rt.byMethod {
			mux.HandleFunc(method+" "+rt.path, h)
		}
		notAllowed := e.answer(func(http.ResponseWriter, *http.Request) reply { return methodNotAllowed(allow...) })
		mux.HandleFunc(rt.path, notAllowed)
		if _, get := rt.byMethod[http.MethodGet]; get {
			mux.HandleFunc(http.MethodHead+" "+rt.path, notAllowed)
		}
	}
	mux.HandleFunc("/", e.answer(func(http.ResponseWriter, *http.Request) reply { return notFound() }))
	return mux
}

// answer serves the reply that decide returns.
func (e *Emulator) answer(decide func(http.ResponseWriter, *http.Request) reply) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { e.respond(w, r, decide(w, r)) }
}

func (e *Emulator) injectFaults(w http.ResponseWriter, r *http.Request) reply {
	var faults []Fault
	if err := decodeAdmin(w, r, &faults); err != nil {
		return badRequest(err.Error())
	}
	for i, f := range faults {
		if err := f.validate(); err != nil {
			return badRequest(fmt.Sprintf("fault %d: %v", i, err))
		}
	}
	e.Inject(faults...)
	return reply{status: http.StatusNoContent}
}

func (e *Emulator) getRates(http.ResponseWriter, *http.Request) reply {
	e.mu.Lock()
	defer e.mu.Unlock()
	return reply{status: http.StatusOK, body: e.rates}
}

func (e *Emulator) putRates(w http.ResponseWriter, r *http.Request) reply {
	var rates Rates
	if err := decodeAdmin(w, r, &rates); err != nil {
		return badRequest(err.Error())
	}
	for _, p := range []float64{rates.ServerError, rates.Throttle, rates.Drop} {
		if !(p >= 0 && p <= 1) {
			return badRequest("rates must be between 0 and 1")
		}
	}
	if !validRetryAfter(rates.RetryAfter) {
		return badRequest("retryAfter must be a number of seconds")
	}
	e.SetRates(rates)
	return reply{status: http.StatusNoContent}
}

func (e *Emulator) getCalls(http.ResponseWriter, *http.Request) reply {
	return reply{status: http.StatusOK, body: e.Calls()}
}

func (e *Emulator) reset(http.ResponseWriter, *http.Request) reply {
	e.Reset()
	return reply{status: http.StatusNoContent}
}

// decodeAdmin decodes one JSON value from a bounded body, refusing unknown fields so that a
// misspelt fault is not silently ignored.
func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: trailing data")
	}
	return nil
}

// UnmarshalJSON accepts delay as nanoseconds or as a Go duration string, and refuses unknown
// fields.
func (f *Fault) UnmarshalJSON(b []byte) error {
	type plain Fault // without this method
	var aux struct {
		plain
		Delay json.RawMessage `json:"delay"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	*f = Fault(aux.plain)
	f.Delay = 0
	switch raw := bytes.TrimSpace(aux.Delay); {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("fault delay: %w", err)
		}
		f.Delay = d
	default:
		var ns int64
		if err := json.Unmarshal(raw, &ns); err != nil {
			return fmt.Errorf("fault delay: want nanoseconds or a duration string: %w", err)
		}
		f.Delay = time.Duration(ns)
	}
	return nil
}

// validRetryAfter accepts empty (no header) or delay-seconds.
func validRetryAfter(s string) bool {
	if len(s) > 9 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (f Fault) validate() error {
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		return fmt.Errorf("status %d: want 400-599", f.Status)
	}
	if f.Delay < 0 {
		return errors.New("delay must not be negative")
	}
	return nil
}

// nextFault pops the first queued fault or draws one from the rates.
func (e *Emulator) nextFault() (Fault, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.faults) > 0 {
		f := e.faults[0]
		e.faults = e.faults[1:]
		return f, true
	}
	p := mathrand.Float64()
	switch {
	case p < e.rates.Drop:
		return Fault{Drop: true}, true
	case p < e.rates.Drop+e.rates.Throttle:
		retryAfter := e.rates.RetryAfter
		if retryAfter == "" {
			retryAfter = "1"
		}
		return Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter}, true
	case p < e.rates.Drop+e.rates.Throttle+e.rates.ServerError:
		return Fault{Status: http.StatusServiceUnavailable, RetryAfter: e.rates.RetryAfter}, true
	}
	return Fault{}, false
}

// record keeps c, overwriting the oldest call once maxCalls are kept: a ring rather than a
// sliding slice, which would copy all the calls kept every few thousand calls.
func (e *Emulator) record(c Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.calls) < e.maxCalls {
		e.calls = append(e.calls, c)
	} else {
		e.calls[e.nextCall] = c
		e.nextCall = (e.nextCall + 1) % len(e.calls)
	}
	e.counts[offerKey{c.PublisherID, c.OfferID}]++
}

// reply is one answer, decided before it is written so that the call is recorded first.
type reply struct {
	status int
	header header // extra header, if any
	body   any    // JSON; nil means no body
	drop   bool
	delay  time.Duration
}

// header is one response header; no answer needs more than one besides those respond adds.
type header struct {
	name  string // canonical form
	value string
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func errorReply(status int, code, message string) reply {
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	return reply{status: status, body: b}
}

func badRequest(message string) reply {
	return errorReply(http.StatusBadRequest, "BadRequest", message)
}

func notFound() reply {
	return errorReply(http.StatusNotFound, "NotFound", "No such resource.")
}

func methodNotAllowed(methods ...string) reply {
	allow := strings.Join(methods, ", ")
	rep := errorReply(http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not allowed; use "+allow+".")
	rep.header = header{"Allow", allow}
	return rep
}

// respond writes rep, or hijacks and closes the connection when rep.drop.
func (e *Emulator) respond(w http.ResponseWriter, r *http.Request, rep reply) {
	if rep.drop {
		e.log.Debug("emulator dropped connection", "method", r.Method, "path", r.URL.Path)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler) // HTTP/2 or a recorder: abort the response instead
		}
		conn.Close()
		return
	}
	correlationID := newUUID()
	h := w.Header()
	if rep.header.name != "" {
		h[rep.header.name] = []string{rep.header.value}
	}
	h["X-Ms-Correlation-Request-Id"] = []string{correlationID}
	e.log.Debug("emulator answered", "method", r.Method, "path", r.URL.Path, "status", rep.status, "correlationId", correlationID)
	if rep.body == nil {
		w.WriteHeader(rep.status)
		return
	}
	b, err := json.Marshal(rep.body)
	if err != nil { // only our own types are marshalled; this is a bug
		panic(fmt.Sprintf("emulator: marshal reply: %v", err))
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rep.status)
	w.Write(append(b, '\n'))
}

// sleep waits d, reporting false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// newUUID returns a random (version 4) UUID in its lowercase 8-4-4-4-12 form.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
