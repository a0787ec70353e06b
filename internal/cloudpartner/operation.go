package cloudpartner

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
)

// Operation is the state of an operation the API started (the Location of a 202).
type Operation struct {
	// Status is the operation's status as the API wrote it (running, canceled, failed, ...).
	Status string
	// Messages are the operation's messages, bounded, for a failed result.
	Messages []string
	// CorrelationID is the X-Ms-Correlation-Request-Id of the answer.
	CorrelationID string
}

// Terminal reports whether the status is final; statuses are compared case-insensitively, and an
// unknown one is not final.
func (o Operation) Terminal() bool { return o.Cancelled() || strings.EqualFold(o.Status, "failed") }

// Cancelled reports whether the operation ended in a way that means it is no longer running:
// canceled (or cancelled), or complete(d)/succeeded.
func (o Operation) Cancelled() bool {
	switch strings.ToLower(o.Status) {
	case "canceled", "cancelled", "completed", "complete", "succeeded":
		return true
	}
	return false
}

const maxOperationMessages = 10

// Operation reads the operation at location (an absolute URL, as Accepted.Location). Only
// locations on the configured API's origin (scheme, host and port) are read: any other is refused
// with a permanent *Error coded cancelevent.CodeLocationNotFollowed, and nothing is fetched. Errors are
// *Error; unlike for Cancel, 401 (after one token refresh), 403 and 404 are transient too: right
// after a 202 the API may not know the operation yet, and permissions can lag.
func (c *Client) Operation(ctx context.Context, location string) (Operation, error) {
	if !c.SameOrigin(location) {
		return Operation{}, &Error{Code: cancelevent.CodeLocationNotFollowed,
			Message: "the operation location is not on the API's origin (CPCANCEL_CLOUDPARTNER_BASE_URL)"}
	}
	op, err := withToken(ctx, c, func(token string, secrets []string) (Operation, error) {
		return c.getOperation(ctx, location, token, secrets)
	})
	var e *Error
	if errors.As(err, &e) && pollTransient(e.StatusCode) {
		e.Transient = true
	}
	return op, err
}

// pollTransient lists the statuses that are transient on an operation poll beyond those of
// transientStatus.
func pollTransient(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound
}

// SameOrigin reports whether location is an absolute URL on the API's origin: same scheme, host
// and port as the base URL.
func (c *Client) SameOrigin(location string) bool {
	loc, err := url.Parse(location)
	if err != nil || loc.Host == "" || loc.User != nil {
		return false
	}
	base, err := url.Parse(c.base)
	if err != nil {
		return false
	}
	return strings.EqualFold(loc.Scheme, base.Scheme) && strings.EqualFold(loc.Hostname(), base.Hostname()) &&
		effectivePort(loc) == effectivePort(base)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

func (c *Client) getOperation(ctx context.Context, location, token string, secrets []string) (Operation, error) {
	resp, data, err := c.exchange(ctx, OperationStatus, location, nil, token, secrets, nil)
	if err != nil {
		return Operation{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Operation{}, statusError(resp, data, secrets)
	}
	var doc struct {
		Status   string            `json:"status"`
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return Operation{}, &Error{StatusCode: resp.StatusCode, Code: cancelevent.CodeInvalidResponse, Transient: true,
			Message: "the operation is not JSON", CorrelationID: correlationID(resp.Header, secrets), Err: err}
	}
	op := Operation{Status: clean(doc.Status, maxCodeBytes, secrets), CorrelationID: correlationID(resp.Header, secrets)}
	for _, m := range doc.Messages[:min(len(doc.Messages), maxOperationMessages)] {
		var text string
		if json.Unmarshal(m, &text) != nil {
			text = string(m) // a message object: keep it as JSON text
		}
		op.Messages = append(op.Messages, clean(text, maxMessageBytes, secrets))
	}
	return op, nil
}
