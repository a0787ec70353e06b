package loadgen_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/loadgen"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// peerEnv, set to 1, makes the test binary the peer of TestStackPeer (see runPeer).
const peerEnv = "CPCANCEL_LOADGEN_TEST_PEER"

// TestMain lets the test binary be the children a Stack starts (it re-executes itself), as
// cmd/loadgen's binary is: cpcancel configured by the environment the Stack set (ChildEnv=1),
// nats-server (NATSChildEnv), or a peer (peerEnv), each stopped by the Stack's SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv(loadgen.ChildEnv) == "1" {
		os.Exit(cli.Main("cpcancel child", nil, metrics.Build{Version: "loadgen-test"}))
	}
	var child func(context.Context) error
	switch {
	case os.Getenv(loadgen.NATSChildEnv) != "":
		child = func(ctx context.Context) error {
			return loadgen.RunNATS(ctx, os.Getenv(loadgen.NATSChildEnv), os.Getenv(loadgen.NATSChildDirEnv))
		}
	case os.Getenv(peerEnv) == "1":
		child = runPeer
	default:
		os.Exit(m.Run())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := child(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen test child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runPeer is a stand-in for another program consuming the requests, configured only by the
// environment a Stack gives a peer: it creates its durable pull consumer, calls the API for each
// request and publishes a structured-mode result, until ctx is done.
func runPeer(ctx context.Context) error {
	nc, err := nats.Connect(os.Getenv("CPCANCEL_NATS_URL"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := js.CreateOrUpdateConsumer(setupCtx, os.Getenv("CPCANCEL_REQUEST_STREAM"), jetstream.ConsumerConfig{
		Durable:       os.Getenv("CPCANCEL_CONSUMER"),
		FilterSubject: os.Getenv("CPCANCEL_REQUEST_SUBJECT"),
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	batch, err := strconv.Atoi(os.Getenv("CPCANCEL_CONCURRENCY"))
	if err != nil {
		return fmt.Errorf("CPCANCEL_CONCURRENCY: %w", err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		if err := peerHandle(ctx, js, m); err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			m.Nak()
			return
		}
		m.Ack()
	}, jetstream.PullMaxMessages(batch))
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// peerHandle asks the API to cancel the request's offer and publishes the outcome.
func peerHandle(ctx context.Context, js jetstream.JetStream, m jetstream.Msg) error {
	var req struct{ PublisherID, OfferID string }
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		return err
	}
	endpoint := os.Getenv("CPCANCEL_CLOUDPARTNER_BASE_URL") + "/api/publishers/" + url.PathEscape(req.PublisherID) +
		"/offers/" + url.PathEscape(req.OfferID) + "/cancel?api-version=" + config.Default().CloudPartner.APIVersion
	call, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(`{"metadata":{}}`))
	if err != nil {
		return err
	}
	call.Header.Set("Authorization", "Bearer "+os.Getenv("CPCANCEL_CLOUDPARTNER_TOKEN"))
	call.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(call)
	if err != nil {
		return err
	}
	resp.Body.Close()
	outcome := map[int]cancelevent.Outcome{http.StatusOK: "cancelled", http.StatusAccepted: "cancelling"}[resp.StatusCode]
	if outcome == "" {
		return errors.New("API answered " + resp.Status)
	}
	result, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": m.Headers().Get("ce-id") + "-" + string(outcome), "source": "/loadgen-test-peer",
		"type": outcome.Type(), "subject": cancelevent.Subject(req.PublisherID, req.OfferID),
		"datacontenttype": "application/json", "data": map[string]any{},
	})
	if err != nil {
		return err
	}
	_, err = js.Publish(ctx, os.Getenv("CPCANCEL_RESULT_SUBJECT_PREFIX")+"."+string(outcome), result)
	return err
}
