package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/servicetest"
)

// operatorStack is the service as deployed, on a real nats-server and the API emulator, with
// NATS_URL pointing the operator commands at it.
type operatorStack struct {
	cfg config.Config
	js  jetstream.JetStream
}

const followInterval = time.Second

func startOperatorStack(t *testing.T) *operatorStack {
	t.Helper()
	srv := natstest.Start(t)
	emu := httptest.NewServer(emulator.New(emulator.Options{Token: "test-token", OperationDuration: time.Hour}))
	t.Cleanup(emu.Close)

	t.Setenv("NATS_URL", srv.ClientURL())
	t.Setenv("CPCANCEL_NATS_URL", "")
	// The operator commands read the follow interval as the service does.
	t.Setenv("CPCANCEL_FOLLOW_INTERVAL", followInterval.String())
	cfg := config.Default()
	cfg.NATS.URL = srv.ClientURL()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.CloudPartner.BaseURL, cfg.CloudPartner.Token = emu.URL, "test-token"
	cfg.Follow.Enabled, cfg.Follow.FirstPoll, cfg.Follow.Interval = true, 100*time.Millisecond, followInterval
	const testBytes = 64 << 20
	cfg.Streams.RequestStreamMaxBytes, cfg.Streams.ResultStreamMaxBytes, cfg.Streams.DeadLetterStreamMaxBytes = testBytes, testBytes, testBytes
	cfg.Follow.StreamMaxBytes, cfg.Idempotency.MaxBytes = testBytes, testBytes
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	servicetest.Start(t, service.New(cfg, metrics.Build{Version: "test"}, slog.New(slog.DiscardHandler)))
	_, js := srv.Connect(t)
	return &operatorStack{cfg: cfg, js: js}
}

// runCmd runs a command line as the binary would, and returns its output and exit status.
func runCmd(t *testing.T, ctx context.Context, args ...string) (stdout string, status int, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(ctx, args, metrics.Build{}, &out, &errOut)
	if err != nil {
		status = exitStatus(err)
	}
	return out.String(), status, err
}

// publishRaw stores a message on the request subject as any publisher could.
func (s *operatorStack) publishRaw(t *testing.T, hdr nats.Header, body []byte) {
	t.Helper()
	if _, err := s.js.PublishMsg(t.Context(), &nats.Msg{Subject: s.cfg.Streams.RequestSubject, Header: hdr, Data: body}); err != nil {
		t.Fatal(err)
	}
}

// deadLetters reads every dead letter stored now.
func (s *operatorStack) deadLetters(t *testing.T) []results.DeadLetter {
	t.Helper()
	dls, err := results.OpenDeadLetters(t.Context(), s.js, s.cfg.Streams.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	var all []results.DeadLetter
	if _, err := dls.Scan(t.Context(), 0, func(dl results.DeadLetter) bool { all = append(all, dl); return true }); err != nil {
		t.Fatal(err)
	}
	return all
}

// waitDeadLetters waits until match holds for the stored dead letters, and returns them.
func (s *operatorStack) waitDeadLetters(t *testing.T, what string, match func([]results.DeadLetter) bool) []results.DeadLetter {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		all := s.deadLetters(t)
		if match(all) {
			return all
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 15s; dead letters: %v", what, describe(all))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func describe(dls []results.DeadLetter) []string {
	var out []string
	for _, d := range dls {
		out = append(out, strconv.FormatUint(d.Seq, 10)+": "+d.Reason())
	}
	return out
}

func replaysOf(dls []results.DeadLetter, seq uint64) []results.DeadLetter {
	var out []results.DeadLetter
	for _, d := range dls {
		if d.Header.Get(cancelevent.HeaderReplayedFrom) == strconv.FormatUint(seq, 10) {
			out = append(out, d)
		}
	}
	return out
}

func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	s := startOperatorStack(t)
	ctx := t.Context()

	t.Run("status of an answered request", func(t *testing.T) {
		if out, _, err := runCmd(t, ctx, "publish", "-source", "/ops", "-id", "sync-1", "-publisher", "contoso", "-offer", "sync-offer", "-wait", "10s"); err != nil {
			t.Fatalf("publish: %v\n%s", err, out)
		}
		out, status, err := runCmd(t, ctx, "status", "-source", "/ops", "-id", "sync-1")
		if err != nil {
			t.Fatalf("status: %v (exit %d)", err, status)
		}
		resultID := cancelevent.ResultID("/ops", "sync-1", cancelevent.Cancelled)
		for _, want := range []string{"state        answered", "attempts     1", "cancelled id=" + resultID + " status=200", "dead letters none"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}

		out, _, err = runCmd(t, ctx, "status", "-json", "-source", "/ops", "-id", "sync-1")
		if err != nil {
			t.Fatal(err)
		}
		var rep statusReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("status -json: %v\n%s", err, out)
		}
		if !rep.Found || rep.Phase != "answered" || rep.Attempts != 1 || rep.Result == nil ||
			rep.Result.ID != resultID || rep.Result.Outcome != "cancelled" || rep.Follow != nil {
			t.Errorf("status -json = %+v, want an answered record with its cancelled result", rep)
		}
	})

	t.Run("status of a followed request", func(t *testing.T) {
		if out, _, err := runCmd(t, ctx, "publish", "-source", "/ops", "-id", "follow-1", "-publisher", "contoso", "-offer", "contoso-offer", "-wait", "10s"); err != nil {
			t.Fatalf("publish: %v\n%s", err, out)
		}
		var rep statusReport
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, _, err := runCmd(t, ctx, "status", "-json", "-source", "/ops", "-id", "follow-1")
			if err != nil {
				t.Fatal(err)
			}
			rep = statusReport{}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Follow != nil && !rep.Follow.LastPoll.IsZero() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the operation was not polled within 15s: %+v", rep)
			}
			time.Sleep(100 * time.Millisecond)
		}
		f := rep.Follow
		if rep.Phase != "following" || rep.Result == nil || rep.Result.Outcome != "cancelling" || rep.Final != nil {
			t.Errorf("status = %+v, want following with a cancelling result and no final one", rep)
		}
		if !strings.Contains(f.Location, "/operations/") || f.OperationStatus == "" || f.Terminal {
			t.Errorf("follow = %+v, want the running operation's location and status", f)
		}
		if want := f.LastPoll.Add(followInterval); !f.NextPoll.Equal(want) {
			t.Errorf("next poll %s, want an interval after the last poll: %s", f.NextPoll, want)
		}
		out, _, err := runCmd(t, ctx, "status", "-source", "/ops", "-id", "follow-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"state        following", "following    " + f.Location, "next poll due", "final        none"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("status of an unknown request", func(t *testing.T) {
		out, status, err := runCmd(t, ctx, "status", "-source", "/ops", "-id", "never-sent")
		if status != exitUnknown || !errors.Is(err, errUnknownRequest) {
			t.Errorf("status of an unknown request: exit %d, %v; want exit 1 and unknown request", status, err)
		}
		if !strings.Contains(out, "no record") || !strings.Contains(out, "dead letters none (looked at stream CPCANCEL_DEADLETTER") {
			t.Errorf("status says:\n%s", out)
		}
	})

	// Three messages that are not cancel requests: binary headers without a type, a structured
	// event of another type, and a binary body.
	s.publishRaw(t, nats.Header{"ce-id": {"dl-1"}, "ce-source": {"/ops"}, "ce-specversion": {"1.0"},
		"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "Nats-Msg-Id": {"original-1"}}, []byte(`{"publisherId":"contoso"}`))
	s.publishRaw(t, nats.Header{"Content-Type": {"application/cloudevents+json"}},
		[]byte(`{"specversion":"1.0","type":"example.other","source":"/ops","id":"dl-2"}`))
	s.publishRaw(t, nil, []byte{0x00, 0xff, 0x10, 'x'})
	first := s.waitDeadLetters(t, "3 dead letters", func(d []results.DeadLetter) bool { return len(d) == 3 })
	seqOf := map[string]uint64{}
	for _, d := range first {
		_, id := d.Request()
		seqOf[id] = d.Seq
	}
	if seqOf["dl-1"] == 0 || seqOf["dl-2"] == 0 || seqOf[""] == 0 {
		t.Fatalf("dead letters by request id: %v, want dl-1, dl-2 and one without an id", seqOf)
	}
	seq := func(id string) string { return strconv.FormatUint(seqOf[id], 10) }

	t.Run("status finds dead letters in both modes", func(t *testing.T) {
		for _, id := range []string{"dl-1", "dl-2"} {
			out, status, err := runCmd(t, ctx, "status", "-source", "/ops", "-id", id)
			if err != nil {
				t.Fatalf("status of dead-lettered %s: exit %d, %v", id, status, err)
			}
			if !strings.Contains(out, "dead letters 1 (looked at stream CPCANCEL_DEADLETTER, 3 of 3 messages") ||
				!strings.Contains(out, "seq "+seq(id)+" at ") {
				t.Errorf("status of %s:\n%s", id, out)
			}
		}
		// The three are dead-lettered in whatever order the workers finish them: ask for one that
		// is not the newest.
		older := "dl-1"
		if seqOf["dl-2"] < seqOf["dl-1"] {
			older = "dl-2"
		}
		out, status, err := runCmd(t, ctx, "status", "-deadletter-scan", "1", "-source", "/ops", "-id", older)
		if status != exitUnknown || err == nil || !strings.Contains(out, "1 of 3 messages") {
			t.Errorf("status scanning only the newest dead letter: exit %d, %v\n%s", status, err, out)
		}
	})

	t.Run("list", func(t *testing.T) {
		out, _, err := runCmd(t, ctx, "deadletter", "list")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"TIME", "SEQ", "REASON", "3 of 3 dead letters in CPCANCEL_DEADLETTER", "example.other"} {
			if !strings.Contains(out, want) {
				t.Errorf("list lacks %q:\n%s", want, out)
			}
		}
		out, _, _ = runCmd(t, ctx, "deadletter", "list", "-limit", "1")
		if !strings.Contains(out, "1 of 3 dead letters") || strings.Count(out, "\n") != 3 {
			t.Errorf("list -limit 1:\n%s", out)
		}
	})

	t.Run("show", func(t *testing.T) {
		out, _, err := runCmd(t, ctx, "deadletter", "show", seq("dl-1"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Cpcancel-Reason: ", "Cpcancel-Original-Nats-Msg-Id: original-1", "traceparent: 00-4bf9", `{"publisherId":"contoso"}`} {
			if !strings.Contains(out, want) {
				t.Errorf("show lacks %q:\n%s", want, out)
			}
		}
		out, _, err = runCmd(t, ctx, "deadletter", "show", seq(""))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "binary, as hex") || !strings.Contains(out, "00 ff 10 78") {
			t.Errorf("show of a binary body:\n%s", out)
		}
		out, _, _ = runCmd(t, ctx, "deadletter", "show", "-max-body", "5", seq("dl-2"))
		if !strings.Contains(out, `{"spe`+"\n") || !strings.Contains(out, "more bytes not shown") {
			t.Errorf("show -max-body 5:\n%s", out)
		}
		_, status, err := runCmd(t, ctx, "deadletter", "show", "999")
		if status != exitUnknown || !errors.Is(err, results.ErrNoDeadLetter) {
			t.Errorf("show of a missing dead letter: exit %d, %v", status, err)
		}
	})

	t.Run("replay dry run changes nothing", func(t *testing.T) {
		out, _, err := runCmd(t, ctx, "deadletter", "replay", "-dry-run", "-all")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(out, "would replay") != 4 { // three lines and the summary
			t.Errorf("dry run:\n%s", out)
		}
		if got := s.deadLetters(t); len(got) != 3 {
			t.Errorf("after a dry run: %v", describe(got))
		}
	})

	t.Run("replay dead-lettered again says so", func(t *testing.T) {
		out, _, err := runCmd(t, ctx, "deadletter", "replay", seq("dl-1"))
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		if !strings.Contains(out, "replayed to cloudpartner.cancel.requests as replay-CPCANCEL_DEADLETTER-"+seq("dl-1")) {
			t.Errorf("replay:\n%s", out)
		}
		all := s.waitDeadLetters(t, "dead-lettered replay", func(d []results.DeadLetter) bool { return len(replaysOf(d, seqOf["dl-1"])) == 1 })
		again := replaysOf(all, seqOf["dl-1"])[0]
		if want := "replay of dead letter " + seq("dl-1") + " dead-lettered again: "; !strings.HasPrefix(again.Reason(), want) {
			t.Errorf("reason %q, want it to start with %q", again.Reason(), want)
		}
		if got := again.Header.Get("traceparent"); !strings.HasPrefix(got, "00-4bf9") {
			t.Errorf("traceparent of the replay: %q, want the original's", got)
		}
		if got := again.Header.Get("Cpcancel-Original-Nats-Msg-Id"); got != results.ReplayID(s.cfg.Streams.DeadLetterStream, seqOf["dl-1"]) {
			t.Errorf("the replay's message id was %q", got)
		}
		if !bytes.Equal(again.Data, []byte(`{"publisherId":"contoso"}`)) {
			t.Errorf("replayed body %q", again.Data)
		}
		if _, status, _ := runCmd(t, ctx, "deadletter", "show", seq("dl-1")); status != exitUnknown {
			t.Errorf("the replayed dead letter is still there (show exit %d)", status)
		}
	})

	t.Run("replay interrupted after the publish ack", func(t *testing.T) {
		// As if the process died between the acknowledgement and the removal.
		dls, err := results.OpenDeadLetters(ctx, s.js, s.cfg.Streams.DeadLetterStream)
		if err != nil {
			t.Fatal(err)
		}
		dl, err := dls.Get(ctx, seqOf["dl-2"])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dls.Republish(ctx, dl, s.cfg.Streams.RequestSubject); err != nil {
			t.Fatal(err)
		}
		s.waitDeadLetters(t, "dead-lettered replay", func(d []results.DeadLetter) bool { return len(replaysOf(d, dl.Seq)) == 1 })
		requests, err := s.js.Stream(ctx, s.cfg.Streams.RequestStream)
		if err != nil {
			t.Fatal(err)
		}
		before, err := requests.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}

		out, _, err := runCmd(t, ctx, "deadletter", "replay", seq("dl-2"))
		if err != nil {
			t.Fatalf("replay again: %v\n%s", err, out)
		}
		if !strings.Contains(out, "replayed before") {
			t.Errorf("replay again:\n%s", out)
		}
		after, err := requests.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.State.LastSeq != before.State.LastSeq {
			t.Errorf("the second replay was stored: request stream last seq %d, was %d", after.State.LastSeq, before.State.LastSeq)
		}
		if _, err := dls.Get(ctx, dl.Seq); !errors.Is(err, results.ErrNoDeadLetter) {
			t.Errorf("dead letter %d after the second replay: %v, want it removed", dl.Seq, err)
		}
		time.Sleep(200 * time.Millisecond)
		if n := len(replaysOf(s.deadLetters(t), dl.Seq)); n != 1 {
			t.Errorf("%d dead-lettered replays of %d, want 1", n, dl.Seq)
		}
	})

	t.Run("replay interrupted between messages", func(t *testing.T) {
		for i := range 3 {
			s.publishRaw(t, nats.Header{"ce-id": {"batch-" + strconv.Itoa(i)}}, []byte("not an event"))
		}
		all := s.waitDeadLetters(t, "3 batch dead letters", func(d []results.DeadLetter) bool {
			n := 0
			for _, x := range d {
				if _, id := x.Request(); strings.HasPrefix(id, "batch-") && x.Header.Get(cancelevent.HeaderReplayedFrom) == "" {
					n++
				}
			}
			return n == 3
		})
		var seqs []string
		var batch []uint64
		for _, x := range all {
			if _, id := x.Request(); strings.HasPrefix(id, "batch-") && x.Header.Get(cancelevent.HeaderReplayedFrom) == "" {
				seqs = append(seqs, strconv.FormatUint(x.Seq, 10))
				batch = append(batch, x.Seq)
			}
		}

		// Stop after the first replay, while waiting for the rate limit.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := &cancelOnWrite{cancel: cancel, after: "replayed to"}
		err := Run(cctx, append([]string{"deadletter", "replay", "-rate", "2/s"}, seqs...), metrics.Build{}, w, io.Discard)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted replay: %v, want context canceled\n%s", err, w.String())
		}
		if got := strings.Count(w.String(), "replayed to"); got != 1 {
			t.Fatalf("interrupted replay replayed %d:\n%s", got, w.String())
		}

		out, status, err := runCmd(t, ctx, append([]string{"deadletter", "replay", "-rate", "0"}, seqs...)...)
		if status != exitUnknown || !strings.Contains(out, "seq "+seqs[0]+": no such dead letter") ||
			strings.Count(out, "replayed to") != 2 {
			t.Errorf("replay after the interruption: exit %d, %v\n%s", status, err, out)
		}
		final := s.waitDeadLetters(t, "every batch replay dead-lettered", func(d []results.DeadLetter) bool {
			for _, b := range batch {
				if len(replaysOf(d, b)) == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(200 * time.Millisecond)
		final = s.deadLetters(t)
		for _, b := range batch {
			if n := len(replaysOf(final, b)); n != 1 {
				t.Errorf("dead letter %d replayed %d times, want once", b, n)
			}
		}
	})

	t.Run("replay skips dead letters of other streams", func(t *testing.T) {
		out, status, err := runCmd(t, ctx, "deadletter", "replay", "-request-stream", "ELSEWHERE", "-all")
		if status != exitUnknown || err == nil || !strings.Contains(out, "not the request stream ELSEWHERE: not replayed") ||
			strings.Contains(out, "replayed to") {
			t.Errorf("replay -all from another stream: exit %d, %v\n%s", status, err, out)
		}
	})
}

// cancelOnWrite collects output and cancels once it contains after.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	cancel context.CancelFunc
	after  string
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.after) {
		w.cancel()
	}
	return n, err
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestOperatorCommandUsage(t *testing.T) {
	// Nothing listens here: a command that got as far as connecting would fail with exit 1.
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	t.Setenv("CPCANCEL_NATS_URL", "")
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"status without flags", []string{"status"}, "-source and -id"},
		{"status without -id", []string{"status", "-source", "/s"}, "-source and -id"},
		{"status without -source", []string{"status", "-id", "i"}, "-source and -id"},
		{"status with an argument", []string{"status", "-source", "/s", "-id", "i", "extra"}, `"extra"`},
		{"status unknown flag", []string{"status", "-frobnicate"}, "-frobnicate"},
		{"deadletter alone", []string{"deadletter"}, "list, show or replay"},
		{"deadletter unknown command", []string{"deadletter", "purge"}, `"purge"`},
		{"list with an argument", []string{"deadletter", "list", "7"}, `"7"`},
		{"list bad -limit", []string{"deadletter", "list", "-limit", "-1"}, "-limit"},
		{"show without a sequence", []string{"deadletter", "show"}, "one sequence number"},
		{"show two sequences", []string{"deadletter", "show", "1", "2"}, "one sequence number"},
		{"show a word", []string{"deadletter", "show", "first"}, `"first" is not a sequence number`},
		{"show zero", []string{"deadletter", "show", "0"}, `"0" is not a sequence number`},
		{"replay nothing", []string{"deadletter", "replay"}, "sequence numbers or -all"},
		{"replay both", []string{"deadletter", "replay", "-all", "3"}, "not both"},
		{"replay a word", []string{"deadletter", "replay", "3", "x"}, `"x" is not a sequence number`},
		{"replay bad rate", []string{"deadletter", "replay", "-rate", "fast", "3"}, "-rate"},
		{"replay negative rate", []string{"deadletter", "replay", "-rate", "-1/s", "3"}, "-rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, status, err := runCmd(t, t.Context(), tt.args...)
			if status != exitUsage || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: exit %d, %v; want exit 2 and an error mentioning %s", tt.args, status, err, tt.want)
			}
		})
	}
	for _, args := range [][]string{{"status", "-h"}, {"deadletter", "-h"}, {"deadletter", "replay", "-h"}} {
		if _, status, err := runCmd(t, t.Context(), args...); err != nil {
			t.Errorf("%v: exit %d, %v", args, status, err)
		}
	}
	if out, _, _ := runCmd(t, t.Context(), "-h"); !strings.Contains(out, "consumer status -h") || !strings.Contains(out, "consumer deadletter -h") {
		t.Errorf("consumer -h does not name status and deadletter:\n%s", out)
	}
	// Flags are fine, NATS is not there: not a usage error.
	if _, status, err := runCmd(t, t.Context(), "status", "-source", "/s", "-id", "i"); status != exitUnknown || err == nil {
		t.Errorf("status without NATS: exit %d, %v; want exit 1", status, err)
	}
}

// TestCommandsConnectWhereTheServiceDoes checks -nats's default: the server the service in the
// same environment uses, CPCANCEL_NATS_URL before NATS_URL, as the service reads them.
func TestCommandsConnectWhereTheServiceDoes(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	streams := config.Default().Streams
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: streams.RequestStream,
		Subjects: []string{streams.RequestSubject}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CPCANCEL_NATS_URL", srv.ClientURL())
	t.Setenv("NATS_URL", "nats://127.0.0.1:1") // nothing listens here
	if out, status, err := runCmd(t, t.Context(), "publish", "-publisher", "p", "-offer", "o"); err != nil {
		t.Fatalf("publish: exit %d, %v; output %q", status, err, out)
	}
	if _, status, err := runCmd(t, t.Context(), "status", "-source", "/s", "-id", "unknown"); status != 1 {
		// 1: connected and found nothing; not reaching NATS is also 1, so the message tells them apart.
		t.Fatalf("status: exit %d, %v; want 1", status, err)
	} else if strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("status connected to NATS_URL: %v", err)
	}
	info, err := js.Stream(t.Context(), streams.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("%d requests stored, want the one published", n)
	}
}

// What a dead letter holds is anyone's: printed, it must not drive the operator's terminal.
func TestDeadLetterTextIsTerminalSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain": "plain", "tab\tkept": "tab\tkept", "é ok": "é ok",
		"clear\x1b[2J": "clear?[2J", "csi\u009b31m": "csi?31m", "bell\a": "bell?", "del\x7f": "del?",
	} {
		if got := terminalSafe(in); got != want {
			t.Errorf("terminalSafe(%q) = %q, want %q", in, got, want)
		}
	}
	if printable([]byte("body \u009b31m")) {
		t.Error("a body with a C1 control is printed as text, want a hex dump")
	}
}
