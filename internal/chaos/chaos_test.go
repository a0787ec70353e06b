//go:build chaos

package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/chaos"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

var (
	flagDuration = flag.Duration("chaos.duration", 60*time.Second, "how long the fault schedule runs (requests are published over it)")
	flagRequests = flag.Int("chaos.requests", 2000, "cancel requests published over the schedule")
	flagSeed     = flag.Uint64("chaos.seed", 0, "seed of the fault schedule and the requests; 0 picks one from the clock (always printed)")
	flagReplicas = flag.Int("chaos.replicas", 3, "cpcancel processes")
	flagDump     = flag.String("chaos.dump", "", "write what the run left (results, API calls, polls, faults) to this JSON file, to investigate a failure")
)

// The replicas' settings: short follow intervals so that a run sees many polls, an API timeout
// the slow-API fault exceeds.
const (
	httpTimeout     = 2 * time.Second
	followInterval  = time.Second
	followFirstPoll = 500 * time.Millisecond
	followTimeout   = 45 * time.Second
	shutdownTimeout = 15 * time.Second
	maxAttempts     = 8
	// operationDuration is how long the emulator's operations run before they end.
	operationDuration = 3 * time.Second
	// publishPerTry bounds one publish attempt of the test's publisher.
	publishPerTry = 3 * time.Second
	// Stream names cpcancel provisions by default.
	requestStream    = "CPCANCEL_REQUESTS"
	resultStream     = "CPCANCEL_RESULTS"
	deadLetterStream = "CPCANCEL_DEADLETTER"
	followStream     = "CPCANCEL_FOLLOW"
	requestSubject   = "cloudpartner.cancel.requests"
)

// TestChaos runs cpcancel replicas and nats-server as processes, publishes planned requests while a
// seeded schedule of faults runs, lets everything settle, and checks the guarantees on what was
// stored and what the API saw (see package chaos).
func TestChaos(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	// Printed at once and again on failure, so that -chaos.seed replays the run.
	fmt.Fprintf(os.Stderr, "chaos: seed %d (replay with -chaos.seed=%d -chaos.duration=%s -chaos.requests=%d -chaos.replicas=%d)\n",
		seed, seed, *flagDuration, *flagRequests, *flagReplicas)
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with -chaos.seed=%d -chaos.duration=%s -chaos.requests=%d -chaos.replicas=%d",
				seed, seed, *flagDuration, *flagRequests, *flagReplicas)
		}
	})
	if *flagReplicas < 1 || *flagRequests < 1 || *flagDuration < 5*time.Second {
		t.Fatal("want -chaos.replicas >= 1, -chaos.requests >= 1, -chaos.duration >= 5s")
	}
	schedule := chaos.NewSchedule(seed, chaos.ScheduleOptions{Duration: *flagDuration, Replicas: *flagReplicas, HTTPTimeout: httpTimeout})
	plan := chaos.NewPlan(seed, *flagRequests, *flagDuration)
	for _, f := range schedule {
		t.Logf("planned: %s", f)
	}

	h := newHarness(t, seed)
	obs := h.run(t, plan, schedule)
	if *flagDump != "" {
		b, err := json.MarshalIndent(struct {
			Seed     uint64
			Plan     chaos.Plan
			Observed chaos.Observed
		}{seed, plan, obs}, "", " ")
		if err == nil {
			err = os.WriteFile(*flagDump, b, 0o644)
		}
		if err != nil {
			t.Errorf("-chaos.dump: %v", err)
		}
	}
	report := chaos.Check(plan, obs, chaos.CheckOptions{
		FollowInterval: followInterval, PollTolerance: 0.2,
		// The API call and storing its outcome: one HTTP timeout plus two publishes.
		InFlight: httpTimeout + 10*time.Second,
	})
	t.Logf("seed %d, %d requests, %s schedule, %d replicas\n%s", seed, len(plan.Requests), *flagDuration, *flagReplicas, report.Summary())
	const shown = 100
	for i, v := range report.Violations {
		if i == shown {
			t.Errorf("seed %d: … and %d more violations (-chaos.dump writes what the run left, to investigate)", seed, len(report.Violations)-shown)
			break
		}
		t.Errorf("seed %d: %s", seed, v)
	}
	if t.Failed() {
		for _, r := range h.replicas {
			t.Logf("replica %d: starts, stops, errors (last 80):\n%s", r.idx, tail(grepLines(r.out.String(), "===", "level=ERROR", "panic", "fatal", "exit"), 80))
		}
	}
}

// harness is the running system: nats-server and replicas as processes, the emulator in this one.
type harness struct {
	seed      uint64
	dir       string
	nats      *natstest.Process
	nc        *nats.Conn
	js        jetstream.JetStream
	emu       *emulator.Emulator
	tokenFile string
	tokenMu   sync.Mutex
	token     string // the API's current token
	replicas  []*replica
	// stateStreams are the streams of the state bucket(s), found after start-up.
	stateStreams []string
	// outages are the subjects each kind of outage denies; outagesOn, those on now.
	outages   map[chaos.Kind][]string
	outageMu  sync.Mutex
	outagesOn map[chaos.Kind]bool
	start     time.Time
}

func newHarness(t *testing.T, seed uint64) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{seed: seed, dir: dir, tokenFile: filepath.Join(dir, "token"), token: fmt.Sprintf("token-%d-0", seed),
		outagesOn: map[chaos.Kind]bool{}}
	h.nats = natstest.StartProcess(t, filepath.Join(dir, "nats"))
	nc, err := nats.Connect(h.nats.AdminURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectBufSize(-1), // publishes while disconnected fail at once; the publisher retries
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	h.nc = nc
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	h.emu = emulator.New(emulator.Options{Token: h.token, OperationDuration: operationDuration})
	hs := httptest.NewServer(h.emu)
	t.Cleanup(hs.Close)
	if err := writeToken(h.tokenFile, h.token); err != nil {
		t.Fatal(err)
	}
	env := []string{
		replicaEnv + "=1",
		"NATS_URL=" + h.nats.URL(), "CPCANCEL_NATS_URL=" + h.nats.URL(),
		"CPCANCEL_CLOUDPARTNER_BASE_URL=" + hs.URL,
		"CPCANCEL_CLOUDPARTNER_TOKEN_FILE=" + h.tokenFile,
		"CPCANCEL_FOLLOW=true",
		"CPCANCEL_FOLLOW_INTERVAL=" + followInterval.String(),
		"CPCANCEL_FOLLOW_FIRST_POLL=" + followFirstPoll.String(),
		"CPCANCEL_FOLLOW_TIMEOUT=" + followTimeout.String(),
		"CPCANCEL_HTTP_TIMEOUT=" + httpTimeout.String(),
		"CPCANCEL_SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
		"CPCANCEL_HTTP_ADDR=127.0.0.1:0",
		"CPCANCEL_LOG_LEVEL=warn",
		fmt.Sprintf("CPCANCEL_MAX_ATTEMPTS=%d", maxAttempts),
	}
	for i := range *flagReplicas {
		r := &replica{idx: i, env: append(cleanEnv(), env...), out: &cappedBuffer{max: 8 << 20}}
		h.replicas = append(h.replicas, r)
		if err := r.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if code, took, err := r.stop(syscall.SIGTERM, shutdownTimeout+10*time.Second); err != nil || code != 0 {
				t.Errorf("replica %d at the end: exit %d after %s (%v); SIGTERM should exit 0", r.idx, code, took, err)
			}
		})
	}
	h.waitProvisioned(t)
	return h
}

// cleanEnv is this process's environment without cpcancel's or NATS's settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CPCANCEL_") && !strings.HasPrefix(kv, "NATS_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

// writeToken replaces the token file in one step, as a mounted secret changes.
func writeToken(path, token string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// waitProvisioned waits for the replicas to create the streams, consumers and state bucket.
func (h *harness) waitProvisioned(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		var missing []string
		for _, s := range []struct{ stream, consumer string }{{requestStream, "cpcancel"}, {resultStream, ""}, {deadLetterStream, ""}, {followStream, "cpcancel-follow"}} {
			st, err := h.js.Stream(ctx, s.stream)
			if err == nil && s.consumer != "" {
				_, err = st.Consumer(ctx, s.consumer)
			}
			if err != nil {
				missing = append(missing, s.stream+" "+s.consumer)
			}
		}
		h.stateStreams = h.stateStreams[:0]
		names := h.js.StreamNames(ctx)
		for n := range names.Name() {
			if strings.HasPrefix(n, "KV_") || strings.Contains(n, "IDEMPOTENCY") || strings.Contains(n, "STATE") {
				h.stateStreams = append(h.stateStreams, n)
			}
		}
		if len(h.stateStreams) == 0 {
			missing = append(missing, "a state bucket (KV_*)")
		}
		if len(missing) == 0 {
			t.Logf("provisioned; state streams %v", h.stateStreams)
			return
		}
		if ctx.Err() != nil {
			for _, r := range h.replicas {
				t.Logf("replica %d output:\n%s", r.idx, tail(r.out.String(), 40))
			}
			t.Fatalf("not provisioned after 60s: missing %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// outage starts or ends an outage of kind: nats-server denies cpcancel publishing to the subjects
// of every outage on at the time (a state and a result outage may overlap).
func (h *harness) outage(kind chaos.Kind, on bool) error {
	h.outageMu.Lock()
	defer h.outageMu.Unlock()
	if on {
		h.outagesOn[kind] = true
	} else {
		delete(h.outagesOn, kind)
	}
	var deny []string
	for _, k := range chaos.Kinds {
		if h.outagesOn[k] {
			deny = append(deny, h.outages[k]...)
		}
	}
	return h.nats.DenyPublish(deny...)
}

// run publishes the plan while the schedule runs, waits for the system to settle and collects
// what it left.
func (h *harness) run(t *testing.T, plan chaos.Plan, schedule []chaos.Fault) chaos.Observed {
	// The subjects an outage denies are read now, while nats-server is up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	stateSubjects, err := natstest.OutageSubjects(ctx, h.js, h.stateStreams...)
	if err != nil {
		t.Fatalf("harness: the state bucket's subjects: %v", err)
	}
	resultSubjects, err := natstest.OutageSubjects(ctx, h.js, resultStream)
	if err != nil {
		t.Fatalf("harness: the result stream's subjects: %v", err)
	}
	cancel()
	h.outages = map[chaos.Kind][]string{chaos.StateOutage: stateSubjects, chaos.ResultOutage: resultSubjects}
	t.Logf("a state outage denies publishing to %v", stateSubjects)
	t.Logf("a result outage denies publishing to %v", resultSubjects)

	h.start = time.Now()
	obs := chaos.Observed{Start: h.start, Published: map[int]time.Time{}, Resent: map[int]time.Time{}}
	faults := make([]chaos.FaultRecord, len(schedule))
	var wg sync.WaitGroup
	stopWatch := make(chan struct{})
	var unexpected []string
	startFailures := map[int]int{}
	var unexpectedMu sync.Mutex
	for _, r := range h.replicas {
		wg.Go(func() { // restart a replica that exits without being told to, and report it
			for {
				select {
				case <-stopWatch:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if code, ok := r.exitedByItself(); ok {
					last := tail(r.out.String(), 1)
					unexpectedMu.Lock()
					if strings.Contains(last, "connect to NATS") {
						// It started while nats-server was down and gave up; a supervisor restarts it.
						startFailures[r.idx]++
					} else {
						unexpected = append(unexpected, fmt.Sprintf("replica %d exited by itself at +%s with status %d; its last lines:\n%s",
							r.idx, time.Since(h.start).Round(100*time.Millisecond), code, tail(r.out.String(), 5)))
					}
					unexpectedMu.Unlock()
					time.Sleep(time.Second) // a supervisor's restart delay
					r.start()
				}
			}
		})
	}
	var faultWG sync.WaitGroup
	for i, f := range schedule {
		faultWG.Go(func() { faults[i] = h.inject(t, f) })
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		h.publish(t, plan, &obs)
	}()
	faultWG.Wait()
	<-pubDone
	scheduleEnd := time.Now()
	t.Logf("schedule over after %s; settling", scheduleEnd.Sub(h.start).Round(100*time.Millisecond))

	obs.SettledOK = h.settle(t, plan)
	obs.Settled = time.Since(scheduleEnd)
	close(stopWatch)
	wg.Wait()
	obs.Faults = faults
	obs.Unexpected = unexpected
	for i, n := range startFailures {
		obs.StartFailures = append(obs.StartFailures, fmt.Sprintf("replica %d: %d starts ended 'connect to NATS: no servers available' (nats-server down), restarted after 1s", i, n))
	}
	h.collect(t, &obs)
	return obs
}

// inject runs one fault at its time and returns its record.
func (h *harness) inject(t *testing.T, f chaos.Fault) chaos.FaultRecord {
	rec := chaos.FaultRecord{Fault: f}
	time.Sleep(time.Until(h.start.Add(f.At)))
	rec.Start = time.Now()
	switch f.Kind {
	case chaos.KillReplica, chaos.TermReplica:
		r := h.replicas[f.Target]
		sig, wait := syscall.SIGKILL, 10*time.Second
		if f.Kind == chaos.TermReplica {
			sig, wait = syscall.SIGTERM, shutdownTimeout+10*time.Second
		}
		code, took, err := r.stop(sig, wait)
		switch {
		case errors.Is(err, errNotRunning):
			rec.Skipped = "replica not running"
			return rec
		case err != nil:
			rec.Violation = err.Error()
		case f.Kind == chaos.TermReplica:
			rec.Note = fmt.Sprintf("exited %d after %s", code, took.Round(10*time.Millisecond))
			if code != 0 {
				rec.Violation = fmt.Sprintf("SIGTERM: exit status %d after %s, want 0; output:\n%s", code, took.Round(10*time.Millisecond), tail(r.out.String(), 20))
			}
		}
		time.Sleep(f.For)
		if err := r.start(); err != nil {
			rec.Violation = "restart: " + err.Error()
		}
	case chaos.KillNATS:
		if err := h.nats.Kill(); err != nil {
			rec.Violation = err.Error()
		}
		time.Sleep(f.For)
		if err := h.nats.Restart(); err != nil {
			t.Errorf("harness: restart nats-server: %v", err)
		}
	case chaos.StateOutage, chaos.ResultOutage:
		if err := h.outage(f.Kind, true); err != nil {
			t.Errorf("harness: %s: %v", f.Kind, err)
		}
		time.Sleep(f.For)
		if err := h.outage(f.Kind, false); err != nil {
			t.Errorf("harness: end %s: %v", f.Kind, err)
		}
	case chaos.ServerErrors:
		h.emu.SetRates(emulator.Rates{ServerError: f.Rate})
		time.Sleep(f.For)
		h.emu.SetRates(emulator.Rates{})
	case chaos.Throttle:
		h.emu.SetRates(emulator.Rates{Throttle: f.Rate, RetryAfter: fmt.Sprint(f.RetryAfter)})
		time.Sleep(f.For)
		h.emu.SetRates(emulator.Rates{})
	case chaos.SlowAPI:
		h.emu.SetLatency(f.Latency)
		time.Sleep(f.For)
		h.emu.SetLatency(0)
	case chaos.RotateToken:
		// As a rotated secret is rolled out: the API accepts both tokens while the file changes,
		// then only the new one; replicas that cached the old one get a 401 and re-read the file.
		h.tokenMu.Lock()
		defer h.tokenMu.Unlock()
		old, next := h.token, fmt.Sprintf("token-%d-%d", h.seed, f.At.Milliseconds())
		h.emu.SetToken(old, next)
		if err := writeToken(h.tokenFile, next); err != nil {
			t.Errorf("harness: write token: %v", err)
		}
		time.Sleep(f.For)
		h.emu.SetToken(next)
		h.token = next
	}
	rec.End = time.Now()
	return rec
}

// publish publishes the plan's requests, re-sends and dead letters at their times, retrying each
// until it is stored; every message carries a Nats-Msg-Id, so a retry never stores it twice.
func (h *harness) publish(t *testing.T, plan chaos.Plan, obs *chaos.Observed) {
	type job struct {
		at     time.Duration
		req    *chaos.Request
		resend bool
		dead   string
	}
	var jobs []job
	for i := range plan.Requests {
		q := &plan.Requests[i]
		jobs = append(jobs, job{at: q.At, req: q})
		if q.ResendAt > 0 {
			jobs = append(jobs, job{at: q.ResendAt, req: q, resend: true})
		}
	}
	for _, d := range plan.DeadLetters {
		jobs = append(jobs, job{at: d.At, dead: d.Body})
	}
	slices.SortStableFunc(jobs, func(a, b job) int { return int(a.at - b.at) })
	deadline := h.start.Add(*flagDuration + 2*time.Minute)
	var mu sync.Mutex
	var failed []string
	ch := make(chan job)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for j := range ch {
				var msg *nats.Msg
				var id string
				switch {
				case j.dead != "":
					msg = &nats.Msg{Subject: requestSubject, Header: nats.Header{"Content-Type": {"text/plain"}}, Data: []byte(j.dead)}
					id = "chaos-dead:" + j.dead
				default:
					var err error
					if msg, err = requestMsg(*j.req, j.resend); err != nil {
						t.Errorf("harness: %v", err)
						continue
					}
					id = "chaos:" + j.req.ID
					if j.resend {
						id = "chaos-resend:" + j.req.ID
					}
				}
				at, err := publishRetry(h.js, msg, id, deadline)
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, fmt.Sprintf("%s: %v", id, err))
				case j.req != nil && j.resend:
					obs.Resent[j.req.Index] = at
				case j.req != nil:
					obs.Published[j.req.Index] = at
				}
				mu.Unlock()
			}
		})
	}
	for _, j := range jobs {
		time.Sleep(time.Until(h.start.Add(j.at)))
		ch <- j
	}
	close(ch)
	wg.Wait()
	for _, f := range failed {
		t.Errorf("harness: could not publish %s", f)
	}
}

// requestMsg encodes a planned request; a re-send uses the other content mode.
func requestMsg(q chaos.Request, resend bool) (*nats.Msg, error) {
	ev, err := cancelevent.NewRequest(q.Source, q.ID, cancelevent.RequestData{PublisherID: q.PublisherID, OfferID: q.OfferID, NotificationEmails: q.Emails}, time.Now())
	if err != nil {
		return nil, err
	}
	mode := natsce.Binary
	if q.Structured != resend {
		mode = natsce.Structured
	}
	hdr, body, err := natsce.Encode(context.Background(), ev, mode)
	if err != nil {
		return nil, err
	}
	return &nats.Msg{Subject: requestSubject, Header: hdr, Data: body}, nil
}

func publishRetry(js jetstream.JetStream, msg *nats.Msg, id string, deadline time.Time) (time.Time, error) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), publishPerTry)
		m := &nats.Msg{Subject: msg.Subject, Header: nats.Header{}, Data: msg.Data}
		for k, v := range msg.Header {
			m.Header[k] = v
		}
		_, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settleWithin bounds the wait for everything to settle after the schedule: a request that the
// API failed just before the end may wait out the longest retry delay (a minute, the service's
// default), then be accepted and followed for the follow timeout, then stored.
const settleWithin = time.Minute + followTimeout + 15*time.Second

// settle waits until the request and follow streams are empty, their consumers hold nothing and
// no result was stored for 5s; at most settleWithin.
func (h *harness) settle(t *testing.T, plan chaos.Plan) bool {
	deadline := time.Now().Add(settleWithin)
	var lastResults uint64
	lastChange := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		streams, consumers, err := h.pending(ctx)
		results, rerr := h.streamMsgs(ctx, resultStream)
		cancel()
		if rerr == nil && results != lastResults {
			lastResults, lastChange = results, time.Now()
		}
		idle := err == nil && rerr == nil
		for _, s := range streams {
			idle = idle && s.Msgs == 0
		}
		for _, c := range consumers {
			idle = idle && c.Pending == 0 && c.AckPending == 0
		}
		if idle && time.Since(lastChange) >= 5*time.Second {
			return true
		}
		if time.Now().After(deadline) {
			t.Logf("not settled after %s: streams %+v, consumers %+v, %d results (err %v)", settleWithin, streams, consumers, results, errors.Join(err, rerr))
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (h *harness) streamMsgs(ctx context.Context, name string) (uint64, error) {
	s, err := h.js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// pending reads the request and follow streams and their consumers.
func (h *harness) pending(ctx context.Context) ([]chaos.StreamState, []chaos.ConsumerState, error) {
	var streams []chaos.StreamState
	var consumers []chaos.ConsumerState
	for _, name := range []string{requestStream, followStream} {
		s, err := h.js.Stream(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, nil, err
		}
		streams = append(streams, chaos.StreamState{Name: name, Msgs: info.State.Msgs})
		for ci := range s.ListConsumers(ctx).Info() {
			consumers = append(consumers, chaos.ConsumerState{Stream: name, Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending})
		}
	}
	return streams, consumers, nil
}

// collect reads what the run left: streams, the API's records.
func (h *harness) collect(t *testing.T, obs *chaos.Observed) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if obs.Streams, obs.Consumers, err = h.pending(ctx); err != nil {
		t.Errorf("harness: read the request and follow streams: %v", err)
	}
	msgs, err := readStream(ctx, h.js, resultStream)
	if err != nil {
		t.Errorf("harness: read results: %v", err)
	}
	for _, m := range msgs {
		res := chaos.StoredResult{Seq: m.Sequence, Stored: m.Time}
		ev, err := natsce.Decode(ctx, m.Header, m.Data)
		if err == nil {
			res.ID, res.Type = ev.ID(), ev.Type()
			err = json.Unmarshal(ev.Data(), &res.Data)
		}
		res.Err = err
		obs.Results = append(obs.Results, res)
	}
	dead, err := readStream(ctx, h.js, deadLetterStream)
	if err != nil {
		t.Errorf("harness: read dead letters: %v", err)
	}
	for _, m := range dead {
		obs.DeadLetters = append(obs.DeadLetters, string(m.Data))
	}
	obs.Calls = h.emu.Calls()
	obs.Operations = h.emu.AllOperations()
}

// readStream returns every message of a stream, oldest first.
func readStream(ctx context.Context, js jetstream.JetStream, name string) ([]*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%s seq %d: %w", name, seq, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// replica is one cpcancel process, started again after each stop.
type replica struct {
	idx int
	env []string
	out *cappedBuffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	stopping bool // the harness stopped it; an exit otherwise is unexpected
	reported bool // its unexpected exit was reported
}

var errNotRunning = errors.New("not running")

func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = r.env
	fmt.Fprintf(r.out, "=== start at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if _, err := cmd.StdinPipe(); err != nil { // the replica exits when this process does
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start replica %d: %w", r.idx, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited, r.stopping, r.reported = cmd, exited, false, false
	return nil
}

// stop signals the replica and waits for it to exit (SIGKILL after wait), returning its exit
// status and how long it took.
func (r *replica) stop(sig syscall.Signal, wait time.Duration) (int, time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0, 0, errNotRunning
	}
	select {
	case <-r.exited:
		return 0, 0, errNotRunning
	default:
	}
	r.stopping = true
	fmt.Fprintf(r.out, "=== %v at %s\n", sig, time.Now().Format(time.RFC3339Nano))
	sent := time.Now()
	if err := r.cmd.Process.Signal(sig); err != nil {
		return 0, 0, err
	}
	select {
	case <-r.exited:
	case <-time.After(wait):
		r.cmd.Process.Kill()
		<-r.exited
		return -1, time.Since(sent), fmt.Errorf("replica %d still running %s after %v; killed", r.idx, wait, sig)
	}
	return r.cmd.ProcessState.ExitCode(), time.Since(sent), nil
}

// exitedByItself reports, once, an exit the harness did not cause.
func (r *replica) exitedByItself() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.stopping || r.reported {
		return 0, false
	}
	select {
	case <-r.exited:
		r.reported = true
		return r.cmd.ProcessState.ExitCode(), true
	default:
		return 0, false
	}
}

// cappedBuffer keeps the first max bytes written and counts the rest.
type cappedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	max     int
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := b.max - b.b.Len(); room < n {
		b.dropped += n - max(room, 0)
		p = p[:max(room, 0)]
	}
	b.b.Write(p)
	return n, nil // all of it, kept or not: a short count would stop the child's output
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return b.b.String() + fmt.Sprintf("\n[%d bytes not kept]\n", b.dropped)
	}
	return b.b.String()
}

// grepLines keeps the lines of s holding any of words.
func grepLines(s string, words ...string) string {
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				keep = append(keep, line)
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
