package cloudpartner

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
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

const (
	maxOperationMessages = 10
)

// Operation reads the operation at location (an absolute URL, as Accepted.Location). The bearer
// token is sent only when location is on the configured API host, over the same scheme. Errors
// are *Error, classified as for Cancel.
func (c *Client) Operation(ctx context.Context, location string) (Operation, error) {
	loc, err := url.Parse(location)
	if err != nil || (loc.Scheme != "https" && loc.Scheme != "http") || loc.Host == "" {
		return Operation{}, &Error{Code: "invalid_location", Message: "the operation location is not an absolute http(s) URL"}
	}
	base, _ := url.Parse(c.base)
	var token string
	secrets := []string(nil)
	if loc.Scheme == base.Scheme && strings.EqualFold(loc.Host, base.Host) {
		if token, err = c.token(ctx, false); err != nil {
			return Operation{}, err
		}
		secrets = []string{token}
	}
	op, err := c.getOperation(ctx, location, token, secrets)
	var e *Error
	if token == "" || !errors.As(err, &e) || e.StatusCode != http.StatusUnauthorized {
		return op, err
	}
	fresh, err := c.token(ctx, true)
	if err != nil {
		return Operation{}, err
	}
	return c.getOperation(ctx, location, fresh, []string{token, fresh})
}

func (c *Client) getOperation(ctx context.Context, location, token string, secrets []string) (Operation, error) {
	resp, data, err := c.exchange(ctx, http.MethodGet, location, nil, token, secrets)
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
		return Operation{}, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Transient: true,
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
