package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

const devToken = "dev-token"

// sample is one request -dev publishes, chosen from the emulator's scenario catalogue.
type sample struct {
	offer  string
	emails []string
	mode   natsce.Mode
	want   string
}

var samples = []sample{
	{offer: "sync-offer", mode: natsce.Binary, want: "cancelled (200)"},
	{offer: "contoso-offer", emails: []string{"jondoe@contoso.com"}, mode: natsce.Structured, want: "cancelling (202, migrated offer)"},
	{offer: "legacy-offer", mode: natsce.Binary, want: "cancelling (202, non-migrated offer: $ in the location)"},
	{offer: "unknown-offer", mode: natsce.Structured, want: "failed (404)"},
	{offer: "../etc", mode: natsce.Binary, want: "failed (invalid_request, no API call)"},
}

// runDev runs the service on an embedded JetStream server (fresh store) and the emulator,
// publishes the samples and prints every result until ctx is done. With trace, and no
// OTEL_EXPORTER_OTLP_ENDPOINT, it prints every span as it ends too.
func runDev(ctx context.Context, build metrics.Build, trace bool, stdout, stderr io.Writer) error {
	// The samples, their results and the spans are printed from several goroutines.
	stdout = &syncWriter{w: stdout}
	cfg, err := config.Read(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	dir, err := os.MkdirTemp("", "cpcancel-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	emu, err := emulator.Listen("127.0.0.1:0", emulator.Options{Token: devToken, OperationDuration: 15 * time.Second})
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	defer emu.Close()

	cfg.NATS.URL, cfg.NATS.DataDir = "", dir
	cfg.CloudPartner.BaseURL = emu.URL
	cfg.CloudPartner.Token, cfg.CloudPartner.TokenFile = devToken, ""
	// Follow the samples' operations to their end, quickly enough to watch.
	cfg.Follow.Enabled, cfg.Follow.Interval = true, 5*time.Second
	// JetStream reserves each stream's limit on the disk up front: a throw-away store needs little.
	const devBytes = 64 << 20
	cfg.Streams.RequestStreamMaxBytes, cfg.Streams.ResultStreamMaxBytes, cfg.Streams.DeadLetterStreamMaxBytes = devBytes, devBytes, devBytes
	cfg.Follow.StreamMaxBytes, cfg.Idempotency.MaxBytes = devBytes, devBytes
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := cfg.Log.Logger(stderr)
	log.Info("dev mode: Cloud Partner API emulator", "url", cfg.CloudPartner.BaseURL, "store", dir)

	topts := tracing.Options{Version: build.Version}
	if trace {
		topts.Print = stdout
	}
	tp, err := tracing.New(ctx, os.LookupEnv, topts)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	svc := service.New(cfg, build, log).WithTracing(tp)
	svcDone := make(chan error, 1)
	go func() { svcDone <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-svcDone:
		return err
	}
	if err := publishSamples(ctx, svc.NATSURL(), cfg.Streams, stdout); err != nil {
		log.Error("dev samples", "err", err)
	}
	fmt.Fprintf(stdout, "\nThe two cancelling operations are followed: their final results follow in about 15s.\n"+
		"cpcancel is serving: metrics at %s/metrics. Publish more with\n"+
		"  go run ./cmd/consumer publish -nats %s -publisher contoso -offer my-offer -wait 10s\n"+
		"Ctrl-C stops.\n\n", svc.HTTPURL(), svc.NATSURL())
	return <-svcDone
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// publishSamples publishes one request per outcome and prints every result as it is stored.
func publishSamples(ctx context.Context, url string, streams config.Streams, stdout io.Writer) error {
	nc, err := broker.Connect(url, "cpcancel-dev", discard)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	printed := make(chan struct{}, len(samples))
	if _, err := watchResults(ctx, js, streams.ResultSubjectPrefix, jetstream.DeliverAllPolicy, func(ev *event.Event) {
		printResult(stdout, ev)
		select {
		case printed <- struct{}{}:
		default: // results after the samples' first ones: printed, not counted
		}
	}); err != nil {
		nc.Close()
		return err
	}
	// The connection lives as long as the service, so results of later requests print too.
	context.AfterFunc(ctx, nc.Close)

	fmt.Fprintln(stdout, "Publishing sample cancel requests:")
	for _, s := range samples {
		ev, err := cancelevent.NewRequest("/cpcancel/dev", uuid.NewString(), cancelevent.RequestData{
			PublisherID: "contoso", OfferID: s.offer, NotificationEmails: s.emails,
		}, time.Now())
		if err != nil {
			return err
		}
		if _, err := publishRequest(ctx, js, streams.RequestSubject, ev, s.mode); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  %-10s contoso/%-14s expect %s\n", s.mode, s.offer, s.want)
	}
	fmt.Fprintln(stdout, "\nResults:")
	for range samples {
		select {
		case <-printed:
		case <-time.After(30 * time.Second):
			return errors.New("sample results did not all arrive within 30s")
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
