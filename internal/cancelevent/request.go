package cancelevent

import (
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// RequestData is the data of a cancel request event, as publishers send it.
type RequestData struct {
	PublisherID        string   `json:"publisherId"`
	OfferID            string   `json:"offerId"`
	NotificationEmails []string `json:"notificationEmails,omitempty"`
}

// NewRequest builds a cancel request event, for Go publishers and cpcancel's own tools.
// source and id make the request's idempotency key: re-send the same pair to retry safely.
func NewRequest(source, id string, d RequestData, now time.Time) (*event.Event, error) {
	ev := event.New()
	ev.SetID(id)
	ev.SetSource(source)
	ev.SetType(RequestType)
	ev.SetTime(now)
	if err := ev.SetData(event.ApplicationJSON, d); err != nil {
		return nil, fmt.Errorf("encode request data: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("request event: %w", err)
	}
	return &ev, nil
}
