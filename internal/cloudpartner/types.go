package cloudpartner

import (
	"context"
	"fmt"
	"time"
)

// CancelRequest names the offer whose running publishing operation should be cancelled.
// PublisherID and OfferID must already be validated; the client rejects unsafe ids again before
// building a URL.
type CancelRequest struct {
	PublisherID        string
	OfferID            string
	NotificationEmails []string
	// Fence, when set, is called right before each HTTP request is sent, after every wait (rate
	// limit, concurrency cap, token): the call goes out only if it returns nil. Its error is
	// returned as it is, unwrapped, and the request is not sent. The caller uses it to check that
	// it still holds the right to call the API (a lease) with time left for the whole call.
	Fence func(ctx context.Context) error
	// Attempt, when positive, is which API attempt for the request this call is (1 = first),
	// recorded on the call's span.
	Attempt int
}

// Accepted is the API's answer when it took the cancellation: 200 (cancelled synchronously) or
// 202 (cancellation in progress, follow Location).
type Accepted struct {
	// StatusCode is http.StatusOK or http.StatusAccepted.
	StatusCode int
	// Location is the absolute URL of the operation to poll (202 only), resolved against the
	// base URL with `$` and other path characters kept exactly as the API sent them.
	Location string
	// OperationID is the operation named by Location, when it names one.
	OperationID string
	// CorrelationID is the X-Ms-Correlation-Request-Id response header, kept for support.
	CorrelationID string
}

// Error is returned by Client.Cancel for every answer other than 200/202, including transport
// failures (StatusCode 0). Callers read it with errors.As and decide retries with Transient only.
type Error struct {
	// StatusCode is the HTTP status, or 0 when no response was received.
	StatusCode int
	// Code is the API's error code when the body carried one, otherwise a cpcancel code such as
	// "http_503", "timeout" or "transport_error".
	Code string
	// Message is a human-readable explanation, bounded in length, never containing the token.
	Message string
	// CorrelationID is the X-Ms-Correlation-Request-Id response header, if any.
	CorrelationID string
	// RetryAfter is the delay the API asked for (Retry-After), zero when it asked for none.
	RetryAfter time.Duration
	// Transient reports whether the same call may succeed later (408, 409, 429, 5xx, transport
	// errors and timeouts). Everything else is permanent.
	Transient bool
	// Err is the underlying transport or decoding error, if any.
	Err error
}

// Error describes the failure in one line; it never contains the token.
func (e *Error) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("cloudpartner: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("cloudpartner: HTTP %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// Unwrap returns Err, so errors.Is sees context.Canceled, context.DeadlineExceeded and
// transport errors.
func (e *Error) Unwrap() error { return e.Err }

// TokenSource supplies bearer tokens for the API. Implementations must be safe for concurrent use.
type TokenSource interface {
	// Token returns a token to send now. refresh asks for a fresh token instead of a cached one,
	// after the API answered 401.
	Token(ctx context.Context, refresh bool) (string, error)
}

// The operations an Observer sees: the Cancel POST, and a GET of an operation's status.
const (
	OperationCancel = "cancel"
	OperationStatus = "status"
)

// Observer records every API exchange; implementations must be safe for concurrent use.
// operation is OperationCancel or OperationStatus; code is the HTTP status code as a decimal
// string, or "error" when no response was received.
type Observer interface {
	ObserveAPIRequest(ctx context.Context, operation, code string, elapsed time.Duration)
	// ObserveThrottle records a call held back by Limits: limit is "rate" or "concurrency".
	ObserveThrottle(limit string, waited time.Duration)
}
