package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"
)

// cancel answers a cancel POST and records it.
func (e *Emulator) cancel(w http.ResponseWriter, r *http.Request) {
	publisher, offer := r.PathValue("publisherId"), r.PathValue("offerId")
	call := Call{PublisherID: publisher, OfferID: offer, At: time.Now()}
	rep, emails := e.decideCancel(w, r, publisher, offer)
	call.NotificationEmails = emails
	if !sleep(r.Context(), e.currentLatency()+rep.delay) {
		e.record(call) // the client went away: nothing answered
		return
	}
	if !rep.drop {
		call.Status = rep.status
	}
	e.record(call)
	e.respond(w, r, rep)
}

// decideCancel returns the answer and the notification emails to record.
func (e *Emulator) decideCancel(w http.ResponseWriter, r *http.Request, publisher, offer string) (reply, string) {
	if rep, ok := e.authorize(r); !ok {
		return rep, ""
	}
	var delay time.Duration
	if f, ok := e.nextFault(); ok {
		e.log.Info("emulator injecting fault", "publisherId", publisher, "offerId", offer, "fault", f)
		delay = f.Delay
		switch {
		case f.Drop:
			return reply{drop: true, delay: delay}, ""
		case f.Status != 0:
			rep := faultReply(f.Status)
			if f.RetryAfter != "" {
				rep.header = header{"Retry-After", f.RetryAfter}
			}
			rep.delay = delay
			return rep, ""
		}
	}
	rep, emails := e.validateCancel(w, r)
	if rep.status == 0 {
		rep = e.scenario(publisher, offer)
	}
	rep.delay = delay
	return rep, emails
}

func faultReply(status int) reply {
	code := "Error"
	switch {
	case status == http.StatusTooManyRequests:
		code = "TooManyRequests"
	case status == http.StatusServiceUnavailable:
		code = "ServiceUnavailable"
	case status >= 500:
		code = "InternalServerError"
	}
	return errorReply(status, code, fmt.Sprintf("Injected fault: %d %s.", status, http.StatusText(status)))
}

// authorize checks the bearer token.
func (e *Emulator) authorize(r *http.Request) (reply, bool) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if want := *e.tokens.Load(); !strings.EqualFold(scheme, "Bearer") || token == "" || (len(want) > 0 && !slices.Contains(want, token)) {
		rep := errorReply(http.StatusUnauthorized, "Unauthorized", "Authentication failed: the bearer token is missing or invalid.")
		rep.header = header{"Www-Authenticate", "Bearer"}
		return rep, false
	}
	return reply{}, true
}

func checkAPIVersion(r *http.Request) (reply, bool) {
	if v := r.URL.Query().Get("api-version"); v != apiVersion {
		return errorReply(http.StatusBadRequest, "InvalidApiVersion",
			fmt.Sprintf("The api-version %q is missing or not supported; use %s.", v, apiVersion)), false
	}
	return reply{}, true
}

// validateCancel checks api-version and the request body; it returns the zero reply when the
// request is well formed, and the notification emails as sent once they decode as a string
// (even if an address is invalid).
func (e *Emulator) validateCancel(w http.ResponseWriter, r *http.Request) (reply, string) {
	if rep, ok := checkAPIVersion(r); !ok {
		return rep, ""
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return badRequest("Content-Type must be application/json."), ""
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		return errorReply(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("The request body exceeds %d bytes.", maxBodyBytes)), ""
	} else if err != nil {
		return badRequest("The request body could not be read."), ""
	}
	var body struct {
		Metadata map[string]json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Metadata == nil {
		return badRequest(`The body must be a JSON object {"metadata":{...}}.`), ""
	}
	raw, ok := body.Metadata["notification-emails"]
	if !ok {
		return reply{}, ""
	}
	var emails string
	if err := json.Unmarshal(raw, &emails); err != nil {
		return badRequest("metadata notification-emails must be a string of comma-separated addresses."), ""
	}
	if emails == "" {
		return reply{}, ""
	}
	for _, a := range strings.Split(emails, ",") {
		if _, err := mail.ParseAddress(strings.TrimSpace(a)); err != nil {
			return badRequest(fmt.Sprintf("metadata notification-emails: %q is not a valid address.", strings.TrimSpace(a))), emails
		}
	}
	return reply{}, emails
}

// scenario answers a well-formed cancel request according to the id prefixes.
func (e *Emulator) scenario(publisher, offer string) reply {
	switch {
	case strings.HasPrefix(publisher, "unknown"):
		return errorReply(http.StatusNotFound, "PublisherNotFound", fmt.Sprintf("Publisher %q was not found.", publisher))
	case strings.HasPrefix(publisher, "forbidden"):
		return errorReply(http.StatusForbidden, "Forbidden", fmt.Sprintf("The caller has no access to publisher %q.", publisher))
	case strings.HasPrefix(offer, "unknown"):
		return errorReply(http.StatusNotFound, "OfferNotFound", fmt.Sprintf("Offer %q of publisher %q was not found.", offer, publisher))
	case strings.HasPrefix(offer, "throttled"):
		rep := errorReply(http.StatusTooManyRequests, "TooManyRequests", "Too many requests; retry later.")
		rep.header = header{"Retry-After", "1"}
		return rep
	case strings.HasPrefix(offer, "broken"):
		return errorReply(http.StatusServiceUnavailable, "ServiceUnavailable", "The service is temporarily unavailable.")
	case strings.HasPrefix(offer, "sync"):
		return reply{status: http.StatusOK, body: struct{}{}}
	}
	op := e.startOperation(offerKey{publisher, offer})
	switch {
	case strings.HasPrefix(offer, "bodyloc"):
		return reply{status: http.StatusAccepted, body: locationBody{op.location}}
	case strings.HasPrefix(offer, "oploc"):
		return reply{status: http.StatusAccepted, header: header{"Operation-Location", op.location}, body: struct{}{}}
	}
	return reply{status: http.StatusAccepted, header: header{"Location", op.location}, body: struct{}{}}
}

// locationBody is the body of bodyloc* answers.
type locationBody struct {
	Location string `json:"location"`
}

// operation is one cancellation started by a 202.
type operation struct {
	id       string
	key      offerKey
	location string // relative, as sent to the client
	created  time.Time
	ends     time.Time
	fails    bool
	gone     bool // opgone*: every GET answers 404, as if the API forgot the operation

	// Guarded by Emulator.mu: the GETs of this operation.
	polls     []Poll // the first maxPolls
	pollCount int
}

// startOperation returns the offer's running operation, or starts a new one.
func (e *Emulator) startOperation(key offerKey) *operation {
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	if op := e.current[key]; op != nil && now.Before(op.ends) {
		return op
	}
	op := &operation{
		id:      newUUID(),
		key:     key,
		created: now,
		ends:    now.Add(e.opDuration),
		fails:   strings.HasPrefix(key.offer, "opfail"),
		gone:    strings.HasPrefix(key.offer, "opgone"),
	}
	if strings.HasPrefix(key.offer, "legacy") {
		op.id = key.publisher + "$" + key.offer + "$2$preview"
		// url.PathEscape keeps `$`, as the API does.
		op.location = "/api/operations/" + url.PathEscape(op.id) + "?api-version=" + apiVersion
	} else {
		op.location = "/api/publishers/" + url.PathEscape(key.publisher) + "/offers/" + url.PathEscape(key.offer) +
			"/operations/" + op.id + "?api-version=" + apiVersion
	}
	e.ops[op.id] = op
	e.current[key] = op
	e.opOrder = append(e.opOrder, op)
	if len(e.opOrder) > e.maxOps {
		old := e.opOrder[0]
		e.opOrder = e.opOrder[1:]
		if e.ops[old.id] == old {
			delete(e.ops, old.id)
		}
		if e.current[old.key] == old {
			delete(e.current, old.key)
		}
	}
	return op
}

// getOperation answers an operation GET, on a route that names the operation's offer or on
// /api/operations/{operationId}.
func (e *Emulator) getOperation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("operationId")
	var owner *offerKey
	if p := r.PathValue("publisherId"); p != "" {
		owner = &offerKey{p, r.PathValue("offerId")}
	}
	at := time.Now()
	rep := e.decideOperation(r, owner, id)
	answered := sleep(r.Context(), e.currentLatency())
	status := rep.status
	if !answered {
		status = 0
	}
	e.recordPoll(owner, id, Poll{At: at, Status: status})
	if answered {
		e.respond(w, r, rep)
	}
}

// recordPoll records a GET of an operation, if it names one.
func (e *Emulator) recordPoll(owner *offerKey, id string, p Poll) {
	e.mu.Lock()
	defer e.mu.Unlock()
	op := e.ops[id]
	if op == nil || (owner != nil && *owner != op.key) {
		return
	}
	if len(op.polls) < maxPolls {
		op.polls = append(op.polls, p)
	}
	op.pollCount++
}

func (e *Emulator) decideOperation(r *http.Request, owner *offerKey, id string) reply {
	if rep, ok := e.authorize(r); !ok {
		return rep
	}
	if rep, ok := checkAPIVersion(r); !ok {
		return rep
	}
	e.mu.Lock()
	op := e.ops[id]
	e.mu.Unlock()
	if op == nil || (owner != nil && *owner != op.key) || op.gone {
		return errorReply(http.StatusNotFound, "OperationNotFound", fmt.Sprintf("Operation %q was not found.", id))
	}
	return reply{status: http.StatusOK, body: op.view(time.Now())}
}

// OperationRecord is what the emulator remembers of one operation, for tests that check how
// often clients poll.
type OperationRecord struct {
	ID          string    `json:"id"`
	PublisherID string    `json:"publisherId"`
	OfferID     string    `json:"offerId"`
	Created     time.Time `json:"created"`
	// Polls are the GETs of the operation on a route that names it (rejected ones and those of a
	// forgotten opgone* operation included), in arrival order: at most the first 10000.
	Polls []Poll `json:"polls"`
	// PollCount counts all of them.
	PollCount int `json:"pollCount"`
}

// Poll is one GET of an operation.
type Poll struct {
	// At is when it arrived.
	At time.Time `json:"at"`
	// Status is the HTTP status answered, 0 when none was (the client went away first).
	Status int `json:"status"`
}

// Operations returns the operations started for an offer since the last Reset, oldest first (of
// the last 100000 operations started).
func (e *Emulator) Operations(publisherID, offerID string) []OperationRecord {
	key := offerKey{publisherID, offerID}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []OperationRecord
	for _, op := range e.opOrder {
		if op.key == key {
			out = append(out, op.record())
		}
	}
	return out
}

// AllOperations returns every operation kept (the last 100000 started), oldest first.
func (e *Emulator) AllOperations() []OperationRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]OperationRecord, len(e.opOrder))
	for i, op := range e.opOrder {
		out[i] = op.record()
	}
	return out
}

// record copies op; e.mu is held.
func (op *operation) record() OperationRecord {
	return OperationRecord{ID: op.id, PublisherID: op.key.publisher, OfferID: op.key.offer, Created: op.created,
		Polls: append([]Poll(nil), op.polls...), PollCount: op.pollCount}
}

// operationView is the operation status document.
type operationView struct {
	ID                 string   `json:"id"`
	SubmissionType     string   `json:"submissionType"`
	CreatedDateTime    string   `json:"createdDateTime"`
	LastActionDateTime string   `json:"lastActionDateTime"`
	Status             string   `json:"status"`
	Steps              []step   `json:"steps"`
	Messages           []string `json:"messages"`
}

type step struct {
	StepName           string   `json:"stepName"`
	Description        string   `json:"description"`
	Status             string   `json:"status"`
	ProgressPercentage int      `json:"progressPercentage"`
	Messages           []string `json:"messages"`
}

func (op *operation) view(now time.Time) operationView {
	v := operationView{
		ID:                 op.id,
		SubmissionType:     "Cancel",
		CreatedDateTime:    op.created.Format(time.RFC3339Nano),
		LastActionDateTime: op.created.Format(time.RFC3339Nano),
		Status:             "running",
		Messages:           []string{},
	}
	validate := step{StepName: "Validate", Description: "Validate the cancel request", Status: "complete", ProgressPercentage: 100, Messages: []string{}}
	cancel := step{StepName: "Cancel", Description: "Cancel the running publishing operation", Status: "running", ProgressPercentage: 50, Messages: []string{}}
	if !now.Before(op.ends) {
		v.LastActionDateTime = op.ends.Format(time.RFC3339Nano)
		v.Status, cancel.Status, cancel.ProgressPercentage = "canceled", "complete", 100
		if op.fails {
			msg := "The publishing operation could not be cancelled (emulated opfail scenario)."
			v.Status, cancel.Status = "failed", "failed"
			v.Messages, cancel.Messages = []string{msg}, []string{msg}
		}
	}
	v.Steps = []step{validate, cancel}
	return v
}
