package cancelevent

import (
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// Outcome is what became of a request; it names the result's type and subject suffix.
type Outcome string

// The outcomes of docs/contract.md §3.
const (
	Cancelled  Outcome = "cancelled"
	Cancelling Outcome = "cancelling"
	Failed     Outcome = "failed"
)

// Outcomes lists every outcome, for metrics that start at zero.
var Outcomes = []Outcome{Cancelled, Cancelling, Failed}

// Type is the CloudEvents type of a result with this outcome.
func (o Outcome) Type() string { return typePrefix + string(o) }

// OutcomeOf is the outcome a result type names: the inverse of Outcome.Type.
func OutcomeOf(resultType string) Outcome { return Outcome(strings.TrimPrefix(resultType, typePrefix)) }

// maxMessage bounds error messages in results.
const maxMessage = 512

// ResultData is the data of every result event.
type ResultData struct {
	PublisherID   string `json:"publisherId"`
	OfferID       string `json:"offerId"`
	RequestID     string `json:"requestId"`
	RequestSource string `json:"requestSource"`
	StatusCode    int    `json:"statusCode"`
	Location      string `json:"location,omitempty"`
	OperationID   string `json:"operationId,omitempty"`
	CorrelationID string `json:"correlationId,omitempty"`
	Attempts      int    `json:"attempts"`
	// OperationStatus and Messages come with the final result of a followed cancellation only.
	OperationStatus string     `json:"operationStatus,omitempty"`
	Messages        []string   `json:"messages,omitempty"`
	Error           *ErrorData `json:"error,omitempty"`
}

// ErrorData explains a failed result.
type ErrorData struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// resultNamespace makes result ids specific to cpcancel; changing it would break idempotency.
var resultNamespace = uuid.MustParse("5b0f5d38-8a52-4f3e-9a3c-2f0d1c8b7e61")

// ResultID is the id of the result of request (source, id) with this outcome: the same inputs
// always give the same id, so a result published twice is dropped by JetStream's duplicate window
// and recognised by consumers.
func ResultID(source, id string, o Outcome) string {
	key := make([]byte, 0, len(source)+len(id)+len(o)+2)
	key = append(append(append(append(append(key, source...), 0), id...), 0), o...)
	return uuid.NewSHA1(resultNamespace, key).String()
}

// FinalResultID is the id of the second, final result of a followed cancellation: distinct from
// the first result's, and as deterministic.
func FinalResultID(source, id string, o Outcome) string { return ResultID(source, id, "final-"+o) }

// NewResult builds the result event of req. resultSource is the CloudEvents source of cpcancel.
// Ids are echoed bounded so an invalid request cannot make an unbounded result.
func NewResult(resultSource string, req Request, o Outcome, d ResultData, now time.Time) (*event.Event, error) {
	return newResult(resultSource, ResultID(req.Source, req.ID, o), req, o, d, now)
}

// NewFinalResult builds the final result of a followed cancellation, once its operation ended.
func NewFinalResult(resultSource string, req Request, o Outcome, d ResultData, now time.Time) (*event.Event, error) {
	return newResult(resultSource, FinalResultID(req.Source, req.ID, o), req, o, d, now)
}

func newResult(resultSource, id string, req Request, o Outcome, d ResultData, now time.Time) (*event.Event, error) {
	d.PublisherID = Truncate(req.PublisherID, 128)
	d.OfferID = Truncate(req.OfferID, 128)
	d.RequestID, d.RequestSource = req.ID, req.Source
	if d.Error != nil {
		e := *d.Error // the caller's ErrorData stays as it was
		e.Message = Truncate(e.Message, maxMessage)
		d.Error = &e
	}
	ev := event.New()
	ev.SetID(id)
	ev.SetType(o.Type())
	ev.SetSource(resultSource)
	ev.SetTime(now)
	if Subject(req.PublisherID, req.OfferID) != "" {
		ev.SetSubject(Subject(req.PublisherID, req.OfferID))
	}
	if req.TraceParent != "" {
		ev.SetExtension("traceparent", req.TraceParent)
	}
	if req.TraceState != "" {
		ev.SetExtension("tracestate", req.TraceState)
	}
	if err := ev.SetData(event.ApplicationJSON, d); err != nil {
		return nil, fmt.Errorf("encode result data: %w", err)
	}
	return &ev, nil
}

// Subject is the CloudEvents subject of results about an offer, or "" when the ids are unsafe.
func Subject(publisherID, offerID string) string {
	if !ValidID(publisherID) || !ValidID(offerID) {
		return ""
	}
	return "publishers/" + publisherID + "/offers/" + offerID
}
