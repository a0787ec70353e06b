package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/servicetest"
)

const testToken = "test-token-5f1d"

// stack is a running cpcancel on a real embedded nats-server and the API emulator.
type stack struct {
	nats *natstest.Server
	// natsURL, when set, is where cpcancel connects instead of nats (a nats-server process).
	natsURL string
	js      jetstream.JetStream
	emu     *emulator.Emulator
	emuURL  string
	svc     *service.Service
}

// startStack runs the service with env on top of a test configuration; it stops when the test ends.
func startStack(t *testing.T, env map[string]string) *stack {
	t.Helper()
	st := newStack(t, emulator.Options{})
	st.svc = startService(t, st.env(env))
	return st
}

// newStack is what a cpcancel runs on: an embedded nats-server with the test's connection to it,
// and the emulator configured by opts; it stops when the test ends.
func newStack(t *testing.T, opts emulator.Options) *stack {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	st := &stack{nats: ns, js: js}
	st.serveEmulator(t, opts)
	return st
}

// serveEmulator serves an emulator configured by opts that requires testToken, until the test
// ends.
func (st *stack) serveEmulator(t *testing.T, opts emulator.Options) {
	t.Helper()
	opts.Token = testToken
	st.emu = emulator.New(opts)
	hs := httptest.NewServer(st.emu)
	t.Cleanup(hs.Close)
	st.emuURL = hs.URL
}

func (st *stack) env(extra map[string]string) map[string]string {
	url := st.natsURL
	if url == "" {
		url = st.nats.ClientURL()
	}
	env := map[string]string{
		"CPCANCEL_NATS_URL":              url,
		"CPCANCEL_CLOUDPARTNER_BASE_URL": st.emuURL,
		"CPCANCEL_CLOUDPARTNER_TOKEN":    testToken,
		"CPCANCEL_HTTP_ADDR":             "127.0.0.1:0",
		"CPCANCEL_CONCURRENCY":           "4",
		"CPCANCEL_HTTP_TIMEOUT":          "5s",
		"CPCANCEL_SHUTDOWN_TIMEOUT":      "15s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func startService(t *testing.T, env map[string]string) *service.Service {
	t.Helper()
	svc := newService(t, env)
	servicetest.Start(t, svc)
	return svc
}

// runService runs a service configured by env, for tests that stop it themselves or expect it
// not to start.
func runService(t *testing.T, env map[string]string) (*service.Service, chan error, context.CancelFunc) {
	t.Helper()
	svc := newService(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return svc, done, cancel
}

// newService is a service configured by env alone, logging to the test's log with -v.
func newService(t *testing.T, env map[string]string) *service.Service {
	t.Helper()
	cfg, err := config.Load(func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	return service.New(cfg, metrics.Build{Version: "test", Revision: "abc123"}, log)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// publish stores a cancel request in the given content mode.
func (st *stack) publish(t *testing.T, mode natsce.Mode, ev *event.Event) {
	t.Helper()
	hdr, body, err := natsce.Encode(context.Background(), ev, mode)
	if err != nil {
		t.Fatal(err)
	}
	st.publishRaw(t, hdr, body)
}

func (st *stack) publishRaw(t *testing.T, hdr nats.Header, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := st.js.PublishMsg(ctx, &nats.Msg{Subject: "cloudpartner.cancel.requests", Header: hdr, Data: body}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func request(t *testing.T, source, id, publisher, offer string, emails ...string) *event.Event {
	t.Helper()
	ev, err := cancelevent.NewRequest(source, id, cancelevent.RequestData{
		PublisherID: publisher, OfferID: offer, NotificationEmails: emails,
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// stored is one message of a stream, decoded where it is a result.
type stored struct {
	subject string
	header  nats.Header
	body    []byte
	ev      *event.Event
	data    cancelevent.ResultData
}

// waitMsgs waits until the message count of stream satisfies ok, failing the test after timeout.
func (st *stack) waitMsgs(t *testing.T, stream string, timeout time.Duration, want string, ok func(n uint64) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := st.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for {
		info, err := s.Info(ctx)
		if err == nil {
			if n = info.State.Msgs; ok(n) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream %s holds %d messages after %s, want %s", stream, n, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitStream returns the messages of stream once it holds want of them (or fails after timeout).
func (st *stack) waitStream(t *testing.T, stream string, want int, timeout time.Duration) []stored {
	t.Helper()
	st.waitMsgs(t, stream, timeout, fmt.Sprint(want), func(n uint64) bool { return n >= uint64(want) })
	s, err := st.js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		r := stored{subject: m.Subject, header: m.Header, body: m.Data}
		if ev, err := natsce.Decode(context.Background(), m.Header, m.Data); err == nil {
			r.ev = ev
			_ = json.Unmarshal(ev.Data(), &r.data)
		}
		out = append(out, r)
	}
	if len(out) != want {
		t.Fatalf("stream %s holds %d messages after %s, want %d", stream, len(out), timeout, want)
	}
	return out
}

// byRequest indexes results by request id.
func byRequest(t *testing.T, rs []stored) map[string]stored {
	t.Helper()
	m := make(map[string]stored, len(rs))
	for _, r := range rs {
		if r.ev == nil {
			t.Fatalf("result on %s is not a CloudEvent: %q", r.subject, r.body)
		}
		if _, dup := m[r.data.RequestID]; dup {
			t.Fatalf("two results for request %s", r.data.RequestID)
		}
		m[r.data.RequestID] = r
	}
	return m
}

// metricValue reads a counter or gauge from reg; labels are name, value pairs.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
