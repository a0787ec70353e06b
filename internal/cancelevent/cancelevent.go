// Package cancelevent is cpcancel's event contract (docs/contract.md §2–3): the cancel request it accepts,
// the result events it publishes, and the deterministic ids that make results idempotent.
package cancelevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// typePrefix starts the CloudEvents type of every request and result.
const typePrefix = "cloudpartner.offer.cancel."

// RequestType is the CloudEvents type of a cancel request.
const RequestType = typePrefix + "requested"

// maxEmails bounds the notification list; the API takes a short comma-separated string.
const maxEmails = 20

// Request is a validated cancel request.
type Request struct {
	// ID and Source are the request event's id and source: together its idempotency key.
	ID, Source  string
	PublisherID string
	OfferID     string
	Emails      []string
	// TraceParent and TraceState are the W3C trace context extensions, copied to results.
	TraceParent, TraceState string
}

// InvalidError says why a well-formed CloudEvent of the request type carries unusable data.
// Such a request is answered with a failed result (code invalid_request), never retried.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "invalid request: " + e.Reason }

// requestData is the JSON data of a request event.
type requestData struct {
	PublisherID        string          `json:"publisherId"`
	OfferID            string          `json:"offerId"`
	NotificationEmails json.RawMessage `json:"notificationEmails"`
}

// ParseRequest reads a cancel request from an event whose type is RequestType. The event's
// identity is always filled in, so that even an invalid request can be answered; the error is an
// *InvalidError when the data is unusable.
func ParseRequest(ev *event.Event) (Request, error) {
	req := Request{ID: ev.ID(), Source: ev.Source()}
	req.TraceParent, _ = ev.Extensions()["traceparent"].(string)
	req.TraceState, _ = ev.Extensions()["tracestate"].(string)
	if ct := ev.DataMediaType(); ct != "" && ct != event.ApplicationJSON && !strings.HasSuffix(ct, "+json") {
		return req, &InvalidError{Reason: fmt.Sprintf("datacontenttype %q is not JSON", ct)}
	}
	body := ev.Data()
	if !utf8.Valid(body) {
		return req, &InvalidError{Reason: "data is not valid UTF-8"}
	}
	var d requestData
	if err := json.Unmarshal(body, &d); err != nil {
		return req, &InvalidError{Reason: "data is not a JSON object with publisherId and offerId: " + jsonReason(err)}
	}
	req.PublisherID, req.OfferID = d.PublisherID, d.OfferID
	var errs []string
	if !ValidID(d.PublisherID) {
		errs = append(errs, "publisherId must be 1 to 64 of [A-Za-z0-9._-], not . or ..")
	}
	if !ValidID(d.OfferID) {
		errs = append(errs, "offerId must be 1 to 64 of [A-Za-z0-9._-], not . or ..")
	}
	emails, err := parseEmails(d.NotificationEmails)
	if err != nil {
		errs = append(errs, err.Error())
	}
	req.Emails = emails
	if len(errs) > 0 {
		return req, &InvalidError{Reason: strings.Join(errs, "; ")}
	}
	return req, nil
}

// parseEmails accepts an array of addresses or one comma-separated string, and returns the bare
// addresses (display names dropped).
func parseEmails(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	var joined string
	if err := json.Unmarshal(raw, &list); err != nil {
		if err := json.Unmarshal(raw, &joined); err != nil {
			return nil, errors.New("notificationEmails must be an array of addresses or a comma-separated string")
		}
		for _, s := range strings.Split(joined, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
	}
	if len(list) > maxEmails {
		return nil, fmt.Errorf("notificationEmails has %d addresses, at most %d allowed", len(list), maxEmails)
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		a, err := mail.ParseAddress(s)
		if err != nil || a.Name != "" || strings.ContainsAny(a.Address, ", ") || len(a.Address) > 254 {
			return nil, fmt.Errorf("notificationEmails: %q is not a plain email address", Truncate(s, 64))
		}
		out = append(out, a.Address)
	}
	return out, nil
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return "it is a JSON " + te.Value
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return "unreadable JSON"
}
