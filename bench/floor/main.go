// Command floor does, per cancel request, only the NATS and HTTP work that cpcancel's guarantees
// need, and nothing else: pull the request, store a claim in the idempotency bucket (expecting
// no record), call the API, store the record over the claim (expecting the claim's revision),
// store the result with its id as Nats-Msg-Id, and ack, waiting for JetStream to confirm. No
// CloudEvents SDK, no validation, no retries, no metrics, no leases that expire, no following.
//
// It is not a service: it is the lower bound on what cpcancel's way of working costs, for the
// side-by-side figures in docs/performance.md. The load tool runs it as a peer:
//
//	go build -o /tmp/floor ./bench/floor
//	go run ./cmd/loadgen -nats-process -peer /tmp/floor -n 20000 -concurrency 256 -latency 20ms
//
// It reads the settings the load tool gives a peer (CPCANCEL_NATS_URL, …) and exits when it has
// seen no request for 10 seconds, or on SIGTERM. With -no-api it answers every request as the API
// would with a 202, without calling it: the bound of the NATS work alone, which no consumer
// making these writes can pass, whatever its HTTP client.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	flag.BoolVar(&noAPI, "no-api", false, "answer 202 without calling the API")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func env(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// noAPI skips the API call (-no-api).
var noAPI bool

type floor struct {
	js        jetstream.JetStream
	http      *http.Client
	api       string // base URL
	token     string
	kvPrefix  string // $KV.<bucket>.
	resultPfx string
	source    string
}

func run(ctx context.Context) error {
	workers, err := strconv.Atoi(env("CPCANCEL_CONCURRENCY", "256"))
	if err != nil || workers < 1 {
		return fmt.Errorf("CPCANCEL_CONCURRENCY: %q is not a positive number", os.Getenv("CPCANCEL_CONCURRENCY"))
	}
	nc, err := nats.Connect(env("CPCANCEL_NATS_URL", nats.DefaultURL))
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream := env("CPCANCEL_REQUEST_STREAM", "CPCANCEL_REQUESTS")
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: env("CPCANCEL_CONSUMER", "floor"), AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: env("CPCANCEL_REQUEST_SUBJECT", "cloudpartner.cancel.requests"), MaxAckPending: -1,
	})
	if err != nil {
		return err
	}
	// The transport cpcancel uses: connections kept for every call in flight, small buffers.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost, t.MaxConnsPerHost = workers, workers, workers
	t.WriteBufferSize, t.ReadBufferSize = 1<<10, 2<<10
	defer t.CloseIdleConnections()
	f := &floor{
		js: js, http: &http.Client{Transport: t, Timeout: 30 * time.Second},
		api: env("CPCANCEL_CLOUDPARTNER_BASE_URL", ""), token: os.Getenv("CPCANCEL_CLOUDPARTNER_TOKEN"),
		kvPrefix:  "$KV." + env("CPCANCEL_IDEMPOTENCY_BUCKET", "CPCANCEL_IDEMPOTENCY") + ".",
		resultPfx: env("CPCANCEL_RESULT_SUBJECT_PREFIX", "cloudpartner.cancel.results"),
		source:    "/cpcancel",
	}

	msgs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range workers {
		wg.Go(func() {
			for m := range msgs {
				if err := f.handle(ctx, m); err != nil {
					if failed.Add(1) <= 10 {
						log.Printf("request %s: %v", m.Headers().Get("ce-id"), err)
					}
					m.Nak()
				}
			}
		})
	}
	defer wg.Wait()
	defer close(msgs)
	it, err := cons.Messages(jetstream.PullMaxMessages(workers))
	if err != nil {
		return err
	}
	defer it.Stop()
	idle := time.AfterFunc(10*time.Second, it.Stop)
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		idle.Reset(10 * time.Second)
		msgs <- m
	}
}

// request is the part of a cancel request the API call needs.
type request struct {
	PublisherID string `json:"publisherId"`
	OfferID     string `json:"offerId"`
}

func (f *floor) handle(ctx context.Context, m jetstream.Msg) error {
	id, source := m.Headers().Get("ce-id"), m.Headers().Get("ce-source")
	var req request
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		return err
	}
	h := sha256.Sum256([]byte(source + "\x00" + id))
	key := f.kvPrefix + hex.EncodeToString(h[:16])

	claim, err := f.store(key, "0", []byte(`{"phase":"claimed","holder":"floor"}`))
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	status, location, err := f.cancel(ctx, req)
	if err != nil {
		return err
	}
	outcome := "cancelled"
	if status == http.StatusAccepted {
		outcome = "cancelling"
	}
	resultID := fmt.Sprintf("%x", sha256.Sum256([]byte(key)))[:32]
	result, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": resultID, "source": f.source, "type": "cloudpartner.offer.cancel." + outcome,
		"subject": "publishers/" + req.PublisherID + "/offers/" + req.OfferID, "time": time.Now(),
		"datacontenttype": "application/json",
		"data": map[string]any{"publisherId": req.PublisherID, "offerId": req.OfferID, "requestId": id,
			"requestSource": source, "statusCode": status, "location": location, "attempts": 1},
	})
	if err != nil {
		return err
	}
	record := append([]byte(`{"phase":"answered","attempts":1}`+"\n"), result...)
	if _, err := f.store(key, strconv.FormatUint(claim, 10), record); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if _, err := f.publish(&nats.Msg{Subject: f.resultPfx + "." + outcome, Data: result, Header: nats.Header{
		"Content-Type": {"application/cloudevents+json"}, jetstream.MsgIDHeader: {resultID},
	}}); err != nil {
		return fmt.Errorf("result: %w", err)
	}
	// A stop does not abandon an ack: the workers finish the requests they hold.
	return m.DoubleAck(context.WithoutCancel(ctx))
}

// store writes value under the bucket key subject, expecting its last revision to be expected.
func (f *floor) store(subject, expected string, value []byte) (uint64, error) {
	return f.publish(&nats.Msg{Subject: subject, Data: value,
		Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: {expected}}})
}

func (f *floor) publish(m *nats.Msg) (uint64, error) {
	ack, err := f.js.PublishMsgAsync(m)
	if err != nil {
		return 0, err
	}
	select {
	case a := <-ack.Ok():
		return a.Sequence, nil
	case err := <-ack.Err():
		return 0, err
	case <-time.After(10 * time.Second):
		return 0, errors.New("no PubAck within 10s")
	}
}

func (f *floor) cancel(ctx context.Context, req request) (status int, location string, err error) {
	if noAPI {
		return http.StatusAccepted, f.api + "/api/operations/floor", nil
	}
	url := f.api + "/api/publishers/" + req.PublisherID + "/offers/" + req.OfferID + "/cancel?api-version=2017-10-31"
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(`{"metadata":{}}`)))
	if err != nil {
		return 0, "", err
	}
	hr.Header.Set("Authorization", "Bearer "+f.token)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Do(hr)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return 0, "", fmt.Errorf("API answered %d", resp.StatusCode)
	}
	return resp.StatusCode, resp.Header.Get("Location"), nil
}
