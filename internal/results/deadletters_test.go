package results_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/results"
)

func TestReplayMsg(t *testing.T) {
	dl := results.DeadLetter{Seq: 42, Data: []byte("body"), Header: nats.Header{
		"ce-id":                         {"r-1"},
		"Content-Type":                  {"application/json"},
		"traceparent":                   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"tracestate":                    {"vendor=1"},
		"Nats-Msg-Id":                   {"deadletter:CPCANCEL_REQUESTS:7"},
		"nats-expected-stream":          {"X"},
		"Cpcancel-Reason":               {"not a CloudEvent"},
		"Cpcancel-Original-Nats-Msg-Id": {"original"},
		"cpcancel-stream":               {"CPCANCEL_REQUESTS"},
		"Cpcancel-Replayed-From":        {"3"},
	}}
	m := results.ReplayMsg(dl, "requests")
	want := []string{"Content-Type", "Cpcancel-Replayed-From", "ce-id", "traceparent", "tracestate"}
	if got := slices.Sorted(maps.Keys(m.Header)); !slices.Equal(got, want) {
		t.Errorf("replay headers %v, want %v", got, want)
	}
	if got := m.Header.Get(cancelevent.HeaderReplayedFrom); got != "42" {
		t.Errorf("%s = %q, want the dead letter's sequence 42", cancelevent.HeaderReplayedFrom, got)
	}
	if m.Subject != "requests" || string(m.Data) != "body" {
		t.Errorf("replay on %q with body %q", m.Subject, m.Data)
	}
	if dl.Header.Get("Nats-Msg-Id") == "" {
		t.Error("ReplayMsg changed the dead letter's headers")
	}
	if got, want := results.ReplayID("DL", 42), "replay-DL-42"; got != want {
		t.Errorf("ReplayID = %q, want %q", got, want)
	}
}

func TestDeadLetterRequest(t *testing.T) {
	tests := []struct {
		name       string
		header     nats.Header
		body       string
		source, id string
	}{
		{"binary", nats.Header{"ce-source": {"/a%20b"}, "ce-id": {"x"}}, "{}", "/a b", "x"},
		{"binary, any case", nats.Header{"Ce-Source": {"/a"}, "CE-ID": {"y"}}, "", "/a", "y"},
		{"structured", nil, `{"specversion":"1.0","source":"/s","id":"z"}`, "/s", "z"},
		{"neither", nil, "\x00\xff", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source, id := results.DeadLetter{Header: tt.header, Data: []byte(tt.body)}.Request()
			if source != tt.source || id != tt.id {
				t.Errorf("Request() = %q, %q; want %q, %q", source, id, tt.source, tt.id)
			}
		})
	}
}

type recorder struct{}

func (recorder) ResultStored(string) {}
func (recorder) DeadLettered()       {}

// deadLetterStream is a dead-letter stream on a real server, and a Publisher storing into it.
func deadLetterStream(t *testing.T) (jetstream.JetStream, *results.Publisher) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "DL", Subjects: []string{"dl"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return js, results.New(results.Config{DeadLetterSubject: "dl", Timeout: 5 * time.Second}, js, recorder{})
}

func TestReplayDeadLetteredAgainSaysSo(t *testing.T) {
	js, p := deadLetterStream(t)
	ctx := t.Context()
	if err := p.DeadLetter(ctx, nats.Header{"ce-id": {"a"}}, nil, "REQ", 1, "not a CloudEvent"); err != nil {
		t.Fatal(err)
	}
	if err := p.DeadLetter(ctx, nats.Header{cancelevent.HeaderReplayedFrom: {"1"}}, nil, "REQ", 2, "not a CloudEvent"); err != nil {
		t.Fatal(err)
	}
	dls, err := results.OpenDeadLetters(ctx, js, "DL")
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	if _, err := dls.Scan(ctx, 0, func(d results.DeadLetter) bool { reasons = append(reasons, d.Reason()); return true }); err != nil {
		t.Fatal(err)
	}
	want := []string{"not a CloudEvent", "replay of dead letter 1 dead-lettered again: not a CloudEvent"}
	if !slices.Equal(reasons, want) {
		t.Errorf("reasons %q, want %q", reasons, want)
	}
}

func TestScan(t *testing.T) {
	js, p := deadLetterStream(t)
	ctx := t.Context()
	for seq := range uint64(6) {
		if err := p.DeadLetter(ctx, nil, []byte{byte('a' + seq)}, "REQ", seq+1, "r"); err != nil {
			t.Fatal(err)
		}
	}
	dls, err := results.OpenDeadLetters(ctx, js, "DL")
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{3, 5, 6} { // gaps, and the last one gone
		if err := dls.Remove(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := dls.Remove(ctx, 5); err != nil {
		t.Errorf("removing a dead letter twice: %v", err)
	}
	scan := func(limit uint64) (string, results.Range) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var got strings.Builder
		r, err := dls.Scan(ctx, limit, func(d results.DeadLetter) bool { got.Write(d.Data); return true })
		if err != nil {
			t.Fatalf("Scan(%d): %v", limit, err)
		}
		return got.String(), r
	}
	tests := []struct {
		limit   uint64
		want    string
		scanned uint64
	}{
		{0, "abd", 3},
		{5, "abd", 3},
		{2, "bd", 2},
		{1, "d", 1},
	}
	for _, tt := range tests {
		got, r := scan(tt.limit)
		if got != tt.want || r.Scanned != tt.scanned || r.Messages != 3 {
			t.Errorf("Scan(%d) read %q, range %+v; want %q, %d of 3 scanned", tt.limit, got, r, tt.want, tt.scanned)
		}
	}
	if _, err := dls.Get(ctx, 3); err == nil || !strings.Contains(err.Error(), "no dead letter") {
		t.Errorf("Get of a removed dead letter: %v", err)
	}
}

// A message whose copy would not fit in one NATS message (a body near the server's max_payload,
// or headers that grow as Nats-* ones are renamed) is still dead-lettered, cut, and says what was
// left out; such a dead letter is not replayed. Refused on every try, it used to be lost.
func TestDeadLetterThatWouldNotFit(t *testing.T) {
	js, p := deadLetterStream(t)
	ctx := t.Context()
	limit := int(js.Conn().MaxPayload())
	many := nats.Header{"ce-id": {"big-headers"}}
	for i := range limit / 40 {
		many.Set(fmt.Sprintf("Nats-H%d", i), "x")
	}
	cases := []struct {
		name string
		hdr  nats.Header
		data []byte
		want string // in HeaderTruncated
	}{
		{"body near max_payload", nats.Header{"ce-id": {"big-body"}, "Nats-Msg-Id": {"m"}}, make([]byte, limit-100), "of the body's"},
		{"headers that grow past it", many, []byte("{}"), "headers"},
	}
	for i, tc := range cases {
		if err := p.DeadLetter(ctx, tc.hdr, tc.data, "REQ", uint64(i+1), "too large"); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	dls, err := results.OpenDeadLetters(ctx, js, "DL")
	if err != nil {
		t.Fatal(err)
	}
	var got []results.DeadLetter
	if _, err := dls.Scan(ctx, 0, func(d results.DeadLetter) bool { got = append(got, d); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(got), len(cases))
	}
	for i, d := range got {
		if cut := d.Header.Get(cancelevent.HeaderTruncated); !strings.Contains(cut, cases[i].want) || d.Reason() != "too large" ||
			d.Header.Get(cancelevent.HeaderStreamSequence) != strconv.Itoa(i+1) {
			t.Errorf("%s: truncated %q, reason %q, headers %d", cases[i].name, cut, d.Reason(), len(d.Header))
		}
		if len(d.Data) == 0 || (i == 1) != (string(d.Data) == "{}") {
			t.Errorf("%s: body of %d bytes kept", cases[i].name, len(d.Data))
		}
		if _, err := dls.Republish(ctx, d, "req"); err == nil || !strings.Contains(err.Error(), "only part of the original") {
			t.Errorf("%s: replay of a cut dead letter: %v", cases[i].name, err)
		}
	}
}
