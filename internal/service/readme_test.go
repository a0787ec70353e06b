package service_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
)

// publishCancel is the Go publisher shown in README.md, verbatim: keep the two in step.
func publishCancel(ctx context.Context, js jetstream.JetStream, id string) error {
	ev := cloudevents.NewEvent()
	ev.SetID(id) // with the source, the idempotency key: re-send the same id to retry safely
	ev.SetSource("/orders-service")
	ev.SetType("cloudpartner.offer.cancel.requested")
	err := ev.SetData(cloudevents.ApplicationJSON, map[string]any{
		"publisherId":        "contoso",
		"offerId":            "contoso-offer",
		"notificationEmails": []string{"jondoe@contoso.com"},
	})
	if err != nil {
		return err
	}
	body, err := json.Marshal(ev) // structured mode: the whole event is the body
	if err != nil {
		return err
	}
	_, err = js.PublishMsg(ctx, &nats.Msg{
		Subject: "cloudpartner.cancel.requests",
		Header:  nats.Header{"Content-Type": {"application/cloudevents+json"}},
		Data:    body,
	}, jetstream.WithMsgID(id)) // waits until the request is stored
	return err
}

func TestREADMEGoPublisher(t *testing.T) {
	st := startStack(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := publishCancel(ctx, st.js, "order-42-cancel"); err != nil {
		t.Fatal(err)
	}
	r := st.waitStream(t, "CPCANCEL_RESULTS", 1, 10*time.Second)[0]
	if r.ev.Type() != cancelevent.Cancelling.Type() || r.data.RequestID != "order-42-cancel" || r.data.RequestSource != "/orders-service" {
		t.Errorf("result %s %+v", r.ev.Type(), r.data)
	}
}
