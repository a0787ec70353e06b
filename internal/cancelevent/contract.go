package cancelevent

import (
	"strconv"
	"unicode/utf8"
)

// The error codes cpcancel itself writes into failed results (docs/contract.md §3); every other
// code is the API's own, passed through. They are defined here, in the contract, and nowhere
// else: the API client (package cloudpartner) imports them.
const (
	// CodeInvalidRequest: the request's data is unusable; the API was not called.
	CodeInvalidRequest = "invalid_request"
	// CodeUnauthorized: the API answered 401, with a fresh token too, and no code of its own.
	CodeUnauthorized = "unauthorized"
	// CodeTimeout: no answer in time (CPCANCEL_HTTP_TIMEOUT, or the caller's deadline).
	CodeTimeout = "timeout"
	// CodeTransportError: the call got no HTTP answer (connection refused, reset, TLS, ...).
	CodeTransportError = "transport_error"
	// CodeTokenError: no usable bearer token could be had.
	CodeTokenError = "token_error"
	// CodeCanceled: the call was given up before an answer, e.g. waiting for the rate limit.
	CodeCanceled = "canceled"
	// CodeUnexpectedStatus: a success status other than 200 and 202.
	CodeUnexpectedStatus = "unexpected_status"
	// CodeInvalidResponse: an answer that cannot be read (an operation that is not JSON).
	CodeInvalidResponse = "invalid_response"
	// CodeOperationFailed: a followed operation ended failed (final results only).
	CodeOperationFailed = "operation_failed"
	// CodeFollowTimeout: a followed operation still ran at CPCANCEL_FOLLOW_TIMEOUT (final results
	// only).
	CodeFollowTimeout = "follow_timeout"
	// CodeLocationNotFollowed: the operation's location is not on the API's origin, so it was not
	// polled (final results only).
	CodeLocationNotFollowed = "location_not_followed"
)

// Codes lists every fixed error code above; HTTPCode makes the others.
var Codes = []string{
	CodeInvalidRequest, CodeUnauthorized, CodeTimeout, CodeTransportError, CodeTokenError, CodeCanceled,
	CodeUnexpectedStatus, CodeInvalidResponse, CodeOperationFailed, CodeFollowTimeout, CodeLocationNotFollowed,
}

// HTTPCode is the code of an API error answer that carried no code of its own: http_<status>.
func HTTPCode(status int) string { return "http_" + strconv.Itoa(status) }

// Headers of a dead letter besides the original's (docs/contract.md §3).
const (
	// HeaderReason says why the message could not be handled: one line, at most 256 bytes.
	HeaderReason = "Cpcancel-Reason"
	// HeaderStream and HeaderStreamSequence say where the message was stored.
	HeaderStream         = "Cpcancel-Stream"
	HeaderStreamSequence = "Cpcancel-Stream-Sequence"
	// HeaderOriginalPrefix renames the original's Nats-* headers, which would otherwise steer the
	// dead-letter publish (Nats-Msg-Id, Nats-Expected-Stream, ...).
	HeaderOriginalPrefix = "Cpcancel-Original-"
	// HeaderReplayedFrom is set on a request that an operator replayed from the dead-letter
	// stream (consumer deadletter replay): the dead letter's sequence there. A replay that is
	// dead-lettered again gets a reason that says so.
	HeaderReplayedFrom = "Cpcancel-Replayed-From"
	// HeaderTruncated is set on a dead letter that holds only part of the original, which with the
	// dead letter's own headers would not fit in one NATS message: what was left out. Such a dead
	// letter cannot be replayed.
	HeaderTruncated = "Cpcancel-Truncated"
)

// ValidID reports whether id is a publisher or offer id the contract accepts, and so one that is
// safe in a URL path: 1 to 64 characters of [A-Za-z0-9._-], and neither "." nor "..".
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// Truncate cuts s to at most n bytes without splitting a UTF-8 sequence: the contract bounds its
// strings (messages, echoed ids, dead-letter reasons) in bytes.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
