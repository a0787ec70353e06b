package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// natsURLFlag defines -nats for the commands that connect to NATS. Its default is the server the
// service in the same environment connects to (CPCANCEL_NATS_URL, else NATS_URL), else the local
// default, so that the commands need no flag beside the service.
func natsURLFlag(fs *flag.FlagSet, p *string) {
	url := os.Getenv("CPCANCEL_NATS_URL")
	if url == "" {
		url = os.Getenv("NATS_URL")
	}
	if url == "" {
		url = nats.DefaultURL
	}
	fs.StringVar(p, "nats", url, "NATS server URL (default $CPCANCEL_NATS_URL, else $NATS_URL, else "+nats.DefaultURL+
		"); TLS and credentials from CPCANCEL_NATS_CA, _CERT, _KEY, _CREDS, _NKEY")
}

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("consumer publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var natsURL string
	natsURLFlag(fs, &natsURL)
	defaults := config.Default().Streams
	subject := fs.String("subject", defaults.RequestSubject, "request subject")
	resultPrefix := fs.String("results", defaults.ResultSubjectPrefix, "result subject prefix, for -wait")
	publisher := fs.String("publisher", "", "publisher id (required)")
	offer := fs.String("offer", "", "offer id (required)")
	var emails stringList
	fs.Var(&emails, "email", "notification email address (repeatable)")
	source := fs.String("source", "/cpcancel/cli", "CloudEvents source of the request")
	id := fs.String("id", "", "CloudEvents id of the request (default: a new UUID); re-use one to re-send a request")
	modeName := fs.String("mode", "binary", "content mode: binary or structured")
	wait := fs.Duration("wait", 0, "wait this long for the request's result and print it (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *publisher == "" || *offer == "" {
		return errors.New("publish: -publisher and -offer are required")
	}
	mode, err := natsce.ParseMode(*modeName)
	if err != nil {
		return fmt.Errorf("publish: -mode: %w", err)
	}
	if *id == "" {
		*id = uuid.NewString()
	}
	ev, err := cancelevent.NewRequest(*source, *id, cancelevent.RequestData{
		PublisherID: *publisher, OfferID: *offer, NotificationEmails: emails,
	}, time.Now())
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}

	settings, err := config.ReadNATS(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	security, err := broker.SecurityOptions(settings)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	nc, err := broker.Connect(natsURL, "cpcancel-publish", discard, append(security, nats.MaxReconnects(0))...)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	var results jetstream.ConsumeContext
	found := make(chan *event.Event, 1)
	if *wait > 0 {
		// Watch before publishing so a fast result is not missed.
		if results, err = watchResults(ctx, js, *resultPrefix, jetstream.DeliverNewPolicy, func(r *event.Event) {
			var d cancelevent.ResultData
			if json.Unmarshal(r.Data(), &d) == nil && d.RequestID == *id && d.RequestSource == *source {
				select {
				case found <- r:
				default:
				}
			}
		}); err != nil {
			return fmt.Errorf("publish: watch results: %w", err)
		}
		defer results.Stop()
	}
	ack, err := publishRequest(ctx, js, *subject, ev, mode)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Fprintf(stdout, "published request id=%s source=%s stream=%s seq=%d\n", *id, *source, ack.Stream, ack.Sequence)
	if *wait == 0 {
		return nil
	}
	select {
	case r := <-found:
		printResult(stdout, r)
		return nil
	case <-time.After(*wait):
		return fmt.Errorf("publish: no result within %s (is cpcancel running?)", *wait)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishRequest stores a request event in JetStream, with its id as Nats-Msg-Id so that an
// accidental re-send inside the duplicate window is dropped.
func publishRequest(ctx context.Context, js jetstream.JetStream, subject string, ev *event.Event, mode natsce.Mode) (*jetstream.PubAck, error) {
	msg, err := natsce.NewMsg(ctx, subject, ev, mode)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, config.PublishTimeout)
	defer cancel()
	return js.PublishMsg(pctx, msg, jetstream.WithMsgID(ev.ID()))
}

// watchResults calls fn with every result event stored from now on (or from the start, with
// DeliverAllPolicy), through an ordered consumer that leaves nothing behind.
func watchResults(ctx context.Context, js jetstream.JetStream, prefix string, from jetstream.DeliverPolicy, fn func(*event.Event)) (jetstream.ConsumeContext, error) {
	c, err := js.OrderedConsumer(ctx, streamFor(ctx, js, prefix+".>"), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ".>"}, DeliverPolicy: from,
	})
	if err != nil {
		return nil, err
	}
	return c.Consume(func(m jetstream.Msg) {
		if ev, err := natsce.Decode(ctx, m.Headers(), m.Data()); err == nil {
			fn(ev)
		}
	})
}

// streamFor finds the stream that holds subject, falling back to the default result stream.
func streamFor(ctx context.Context, js jetstream.JetStream, subject string) string {
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return config.Default().Streams.ResultStream
	}
	return name
}

// printResult writes one result event as a headline and its data.
func printResult(w io.Writer, ev *event.Event) {
	fmt.Fprintf(w, "%-10s %s  id=%s\n  %s\n", cancelevent.OutcomeOf(ev.Type()), ev.Subject(), ev.ID(), ev.Data())
}
