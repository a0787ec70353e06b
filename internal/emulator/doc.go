// Package emulator is an in-memory emulator of the Azure Cloud Partner Portal "Cancel operation"
// API (docs/contract.md §1), with fault injection. It serves tests, the consumer's -dev mode and local stacks;
// an *Emulator is an http.Handler and is safe for concurrent use.
//
// # API
//
//	POST /api/publishers/{publisherId}/offers/{offerId}/cancel?api-version=2017-10-31
//	GET  /api/publishers/{publisherId}/offers/{offerId}/operations/{operationId}?api-version=2017-10-31
//	GET  /api/operations/{operationId}?api-version=2017-10-31
//
// Every answer carries a fresh X-Ms-Correlation-Request-Id and, when it has a body, a JSON content
// type. Error bodies are exactly {"error":{"code":"...","message":"..."}}.
//
// A cancel request is checked in this order; the first failing check answers:
//
//  1. Authorization: "Bearer <token>" missing or malformed, or not the token when one is set
//     (Options.Token, replaced at run time by SetToken as a credential rotation does, which may
//     accept the old and the new token for a while): 401 "Unauthorized" with WWW-Authenticate:
//     Bearer.
//  2. Faults: the first queued Fault, else a random one drawn from Rates (see below).
//  3. api-version missing or not 2017-10-31: 400 "InvalidApiVersion".
//  4. Content-Type not application/json, body over 64 KiB (413 "RequestEntityTooLarge"), body
//     not {"metadata":{...}}, or metadata "notification-emails" not a string of comma-separated
//     addresses (empty or absent is fine): 400 "BadRequest".
//  5. The scenario named by the ids, below.
//
// Operation GETs check 1 and 3, then answer 200 with the operation or 404 "OperationNotFound".
// Every GET of a known operation on a route that names it is recorded with its time and the
// status answered (Operations, AllOperations), so that tests can check how often clients poll.
//
// # Scenario catalogue
//
// Chosen by id prefix (case-sensitive), publisher first:
//
//	publisher unknown*    404 PublisherNotFound
//	publisher forbidden*  403 Forbidden
//	offer unknown*        404 OfferNotFound
//	offer throttled*      429 TooManyRequests, Retry-After: 1 (always)
//	offer broken*         503 ServiceUnavailable (always)
//	offer sync*           200 {} (cancelled synchronously, no operation)
//	offer legacy*         202, Location: /api/operations/{p}${o}$2$preview?api-version=2017-10-31
//	offer bodyloc*        202, no Location header, body {"location":"<migrated location>"}
//	offer oploc*          202, Operation-Location: <migrated location>, no Location header
//	offer opfail*         202 like any other offer, but the operation ends "failed"
//	offer opgone*         202 like any other offer, but every GET of the operation answers 404
//	                      OperationNotFound, as if the API had forgotten it
//	any other offer       202, Location: /api/publishers/{p}/offers/{o}/operations/{uuid}?api-version=2017-10-31
//
// A 202 starts an operation that reads "running" for Options.OperationDuration (default 30s),
// then "canceled" ("failed", with a message in messages[], for opfail* offers). Cancelling an
// offer again while its operation is running answers 202 with the same operation, as the real
// API does; once it is terminal, a new cancel starts a new one. Locations are relative, and `$`
// is never escaped.
//
// # Faults
//
// Faults apply to cancel requests only, after authentication. Each cancel request consumes the
// first queued Fault (Inject); when the queue is empty, Rates draws a random one: 503
// ServiceUnavailable, 429 TooManyRequests with Retry-After: 1 (or Rates.RetryAfter, which 503s
// then carry too), or a dropped connection. A Fault
// waits Delay, then drops the connection (Drop), answers Status with an error body (429
// "TooManyRequests", 503 "ServiceUnavailable", other 5xx "InternalServerError", anything else
// "Error") and Retry-After when set, or, with neither, carries on as if it were not there.
// Options.Latency (replaced at run time by SetLatency) is added to every API answer. Waits end
// when the request's context does, so servers shut down promptly.
//
// Every cancel request that reaches the cancel route is recorded as a Call with the status
// answered (0 when none was: dropped, or the client went away).
//
// # Admin endpoints
//
// For local stacks, unauthenticated (do not expose them):
//
//	POST /_emulator/faults   JSON array of Fault, queued   204
//	                         e.g. [{"status":503},{"status":429,"retryAfter":"5"},{"drop":true},{"delay":"2s"}]
//	PUT  /_emulator/rates    Rates, e.g. {"serverError":0.1,"throttle":0.1,"drop":0.05}   204
//	                         or {"throttle":1,"retryAfter":"10"}
//	GET  /_emulator/rates    current Rates
//	GET  /_emulator/calls    JSON array of Call, in arrival order
//	POST /_emulator/reset    forget calls, faults, rates and operations   204
//
// Any other path answers 404 "NotFound"; a known path with another method 405
// "MethodNotAllowed".
package emulator
