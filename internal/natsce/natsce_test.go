package natsce

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

// decoded is what a receiver sees of an event: every attribute, the extensions and the data.
type decoded struct {
	SpecVersion, ID, Source, Type, Subject, Time, DataContentType, DataSchema string
	Extensions                                                                map[string]any
	Data                                                                      string
}

func view(ev *event.Event) decoded {
	d := decoded{
		SpecVersion:     ev.SpecVersion(),
		ID:              ev.ID(),
		Source:          ev.Source(),
		Type:            ev.Type(),
		Subject:         ev.Subject(),
		DataContentType: ev.DataContentType(),
		DataSchema:      ev.DataSchema(),
		Extensions:      ev.Extensions(),
		Data:            string(ev.Data()),
	}
	if !ev.Time().IsZero() {
		d.Time = ev.Time().UTC().Format(time.RFC3339Nano)
	}
	if len(d.Extensions) == 0 {
		d.Extensions = nil
	}
	return d
}

// readFixture returns a fixture's bytes as stored, byte for byte.
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// binaryFixture is a binary-mode NATS message written down as JSON: its headers, spelled as
// they are sent, and its body.
type binaryFixture struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func readBinaryFixture(t *testing.T, name string) (nats.Header, []byte) {
	t.Helper()
	var f binaryFixture
	if err := json.Unmarshal(readFixture(t, filepath.Join("binary", name)), &f); err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	h := nats.Header{}
	for k, v := range f.Headers {
		h[k] = []string{v} // as is: nats.Header.Set would not canonicalise either, but be explicit
	}
	return h, []byte(f.Body)
}

const (
	traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	requestType = "cloudpartner.offer.cancel.requested"
	requestData = `{"publisherId":"contoso","offerId":"contoso-offer"}`
)

func TestDecode(t *testing.T) {
	structured := func(name string, h nats.Header) func(*testing.T) (nats.Header, []byte) {
		return func(t *testing.T) (nats.Header, []byte) {
			return h, readFixture(t, filepath.Join("structured", name))
		}
	}
	binary := func(name string) func(*testing.T) (nats.Header, []byte) {
		return func(t *testing.T) (nats.Header, []byte) { return readBinaryFixture(t, name) }
	}
	inline := func(h nats.Header, body string) func(*testing.T) (nats.Header, []byte) {
		return func(*testing.T) (nats.Header, []byte) { return h, []byte(body) }
	}
	fullRequest := decoded{
		SpecVersion:     "1.0",
		ID:              "req-0001",
		Source:          "/publisher/app",
		Type:            requestType,
		Subject:         "publishers/contoso/offers/contoso-offer",
		Time:            "2024-05-06T07:08:09.123456789Z",
		DataContentType: "application/json",
		Extensions:      map[string]any{"traceparent": traceParent, "tracestate": "congo=t61rcWkgMzE"},
		Data:            `{"publisherId":"contoso","offerId":"contoso-offer","notificationEmails":["jondoe@contoso.com"]}`,
	}
	binaryRequest := fullRequest
	binaryRequest.Data = requestData
	bare := decoded{SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType}

	tests := []struct {
		name    string
		message func(*testing.T) (nats.Header, []byte)
		want    decoded
		wantErr string // substring of the error, which must also say it is not a CloudEvent
	}{
		{
			name:    "structured with Content-Type",
			message: structured("request.json", nats.Header{"Content-Type": {"application/cloudevents+json"}}),
			want:    fullRequest,
		},
		{
			name:    "structured with lowercase content-type and charset",
			message: structured("request.json", nats.Header{"content-type": {"application/cloudevents+json; charset=utf-8"}}),
			want:    fullRequest,
		},
		{
			name:    "structured without any header, as sdk-go's NATS sender writes it",
			message: structured("request.json", nil),
			want:    fullRequest,
		},
		{
			name:    "structured minimal",
			message: structured("minimal.json", nats.Header{}),
			want:    decoded{SpecVersion: "1.0", ID: "min-1", Source: "urn:publisher:min", Type: requestType},
		},
		{
			name:    "binary with lowercase ce- headers",
			message: binary("lowercase.json"),
			want:    binaryRequest,
		},
		{
			name:    "binary with mixed-case headers",
			message: binary("mixed-case.json"),
			want: decoded{
				SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType,
				DataContentType: "application/json",
				Extensions:      map[string]any{"traceparent": traceParent},
				Data:            requestData,
			},
		},
		{
			name:    "binary with percent-encoded values",
			message: binary("percent-encoded.json"),
			want: decoded{
				SpecVersion: "1.0", ID: "a+b%c d", Source: "/a/b", Type: requestType,
				Subject:    `café+"x"`,
				Extensions: map[string]any{"tracestate": "vendor=a,b"},
			},
		},
		{
			name:    "binary datacontenttype from Content-Type",
			message: binary("content-type.json"),
			want:    decoded{SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType, DataContentType: "application/json", Data: requestData},
		},
		{
			name:    "binary datacontenttype from lowercase content-type",
			message: binary("content-type-lowercase.json"),
			want:    decoded{SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType, DataContentType: "text/plain; charset=utf-8", Data: "cancel please"},
		},
		{
			name:    "binary ce-datacontenttype wins over Content-Type",
			message: binary("datacontenttype-wins.json"),
			want:    decoded{SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType, DataContentType: "application/json", Data: requestData},
		},
		{
			name: "binary without body",
			message: inline(nats.Header{
				"ce-specversion": {"1.0"}, "ce-id": {"req-0001"}, "ce-source": {"/publisher/app"}, "ce-type": {requestType},
			}, ""),
			want: bare,
		},
		{
			// sdk-go's NATS sender does not percent-encode: a stray % is taken literally.
			name:    "binary raw percent sign kept",
			message: binary("raw-percent.json"),
			want:    decoded{SpecVersion: "1.0", ID: "req-0001", Source: "/publisher/app", Type: requestType, Subject: "100%zz off"},
		},
		{name: "binary percent-encoded invalid UTF-8", message: binary("percent-invalid-utf8.json"), wantErr: "not valid UTF-8"},
		{
			name: "binary raw invalid UTF-8",
			message: inline(nats.Header{
				"ce-specversion": {"1.0"}, "ce-id": {"req-0001"}, "ce-source": {"/publisher/app"}, "ce-type": {requestType},
				"ce-subject": {"caf\xe9"},
			}, ""),
			wantErr: "not valid UTF-8",
		},
		{
			name: "binary raw invalid UTF-8 in Content-Type",
			message: inline(nats.Header{
				"ce-specversion": {"1.0"}, "ce-id": {"req-0001"}, "ce-source": {"/publisher/app"}, "ce-type": {requestType},
				"Content-Type": {"text/\xff"},
			}, "x"),
			wantErr: "not valid UTF-8",
		},
		{name: "binary same attribute twice in different case", message: binary("duplicate-id.json"), wantErr: `given twice`},
		{name: "binary specversion twice in different case", message: binary("duplicate-specversion.json"), wantErr: `given twice`},
		{name: "binary Content-Type twice in different case", message: binary("duplicate-content-type.json"), wantErr: `given twice`},
		{name: "binary missing id", message: binary("missing-id.json"), wantErr: "id: MUST be a non-empty string"},
		{name: "binary missing source", message: binary("missing-source.json"), wantErr: "source: REQUIRED"},
		{name: "binary unknown specversion", message: binary("unknown-specversion.json"), wantErr: `unsupported specversion "2.0"`},
		{name: "binary empty specversion", message: binary("empty-specversion.json"), wantErr: `unsupported specversion ""`},
		{
			name:    "attribute headers without ce-specversion",
			message: binary("no-specversion.json"),
			wantErr: "no ce-specversion header and no JSON event body",
		},
		{name: "structured missing id", message: structured("missing-id.json", nil), wantErr: "id: MUST be a non-empty string"},
		{name: "structured missing source", message: structured("missing-source.json", nil), wantErr: "source: REQUIRED"},
		{name: "structured unknown specversion", message: structured("unknown-specversion.json", nil), wantErr: "unknown value: 2.0"},
		{
			name:    "structured invalid UTF-8",
			message: structured("invalid-utf8.json", nats.Header{"Content-Type": {"application/cloudevents+json"}}),
			wantErr: "structured event is not valid UTF-8",
		},
		{
			name:    "plain JSON without specversion",
			message: structured("no-specversion.json", nil),
			wantErr: "no specversion",
		},
		{
			name:    "plain JSON with Content-Type application/json",
			message: structured("no-specversion.json", nats.Header{"Content-Type": {"application/json"}}),
			wantErr: "no ce-specversion header and no JSON event body",
		},
		{
			name:    "plain text",
			message: structured("plain.txt", nil),
			wantErr: "no ce-specversion header and no JSON event body",
		},
		{
			name:    "plain text with Content-Type",
			message: structured("plain.txt", nats.Header{"Content-Type": {"text/plain"}}),
			wantErr: "no ce-specversion header and no JSON event body",
		},
		{
			name:    "structured event sent as text/plain",
			message: structured("request.json", nats.Header{"Content-Type": {"text/plain"}}),
			wantErr: "no ce-specversion header and no JSON event body",
		},
		{name: "empty message", message: inline(nil, ""), wantErr: "no ce-specversion header and no JSON event body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, body := tc.message(t)
			ev, err := Decode(context.Background(), h, body)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Decode = %+v, want error containing %q", view(ev), tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "not a CloudEvent: ") {
					t.Errorf("error %q does not say it is not a CloudEvent", err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := view(ev); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decode\n got  %+v\n want %+v", got, tc.want)
			}
		})
	}
}

// A source is a URI-reference in sdk-go: the decoded value is "/a b", which sdk-go renders
// escaped again.
func TestDecodePercentEncodedSource(t *testing.T) {
	h := nats.Header{
		"ce-specversion": {"1.0"}, "ce-id": {"req-0001"}, "ce-type": {requestType},
		"ce-source": {"%2Fa%20b"},
	}
	ev, err := Decode(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.Context.AsV1().Source.Path; got != "/a b" {
		t.Errorf("source path = %q, want %q", got, "/a b")
	}
	if got := ev.Source(); got != "/a%20b" {
		t.Errorf("Source() = %q, want sdk-go's rendering %q", got, "/a%20b")
	}
}

func TestDecodeValue(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/cpcancel", want: "/cpcancel"},
		{in: "%2Fa%20b", want: "/a b"},
		{in: "a+b", want: "a+b"},
		{in: "caf%C3%A9", want: "café"},
		{in: "café", want: "café"},
		{in: "%25", want: "%"},
		{in: "%zz", want: "%zz"},
		{in: "100%", want: "100%"},
		{in: "%FF", wantErr: true},
		{in: "caf\xe9", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := decodeValue(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("decodeValue(%q) = %q, %v; want error %v", tc.in, got, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("decodeValue(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestEncodeValueEscapesOnlyWhatTheBindingRequires(t *testing.T) {
	for c := 0; c < 256; c++ {
		in := string([]byte{byte(c)})
		got := encodeValue(in)
		escape := c <= 0x20 || c == '"' || c == '%' || c >= 0x7F
		if escape && got != "%"+strings.ToUpper(hex2(byte(c))) {
			t.Errorf("encodeValue(%#02x) = %q, want it percent-encoded", c, got)
		}
		if !escape && got != in {
			t.Errorf("encodeValue(%#02x) = %q, want it unchanged", c, got)
		}
	}
	for _, s := range []string{"/cpcancel", "a b", `"quoted"`, "100%", "café", "tab\there", "urn:x:y?z=1&w=2#f", "\x00\x7f"} {
		if got, err := decodeValue(encodeValue(s)); err != nil || got != s {
			t.Errorf("decodeValue(encodeValue(%q)) = %q, %v", s, got, err)
		}
	}
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xF]})
}

// newEvent is a result-like event with every kind of attribute, and values that need escaping.
func newEvent(t *testing.T) *event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("7f1c%0a 1")
	ev.SetSource("/cpcancel")
	ev.SetType("cloudpartner.offer.cancel.cancelling")
	ev.SetSubject(`publishers/contoso/offers/contoso offer "é"`)
	ev.SetTime(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	ev.SetExtension("traceparent", traceParent)
	ev.SetExtension("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
	if err := ev.SetData(event.ApplicationJSON, map[string]any{"publisherId": "contoso", "statusCode": 202}); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestEncodeBinary(t *testing.T) {
	ev := newEvent(t)
	h, body, err := Encode(context.Background(), ev, Binary)
	if err != nil {
		t.Fatal(err)
	}
	want := nats.Header{
		"ce-specversion":     {"1.0"},
		"ce-id":              {"7f1c%250a%201"},
		"ce-source":          {"/cpcancel"},
		"ce-type":            {"cloudpartner.offer.cancel.cancelling"},
		"ce-subject":         {"publishers/contoso/offers/contoso%20offer%20%22%C3%A9%22"},
		"ce-time":            {"2024-05-06T07:08:09.123456789Z"},
		"ce-datacontenttype": {"application/json"},
		"Content-Type":       {"application/json"},
		"ce-traceparent":     {traceParent},
		"ce-tracestate":      {"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
	}
	if !maps.EqualFunc(h, want, slicesEqual) {
		t.Errorf("headers\n got  %q\n want %q", h, want)
	}
	for k := range h {
		if k != "Content-Type" && (k != strings.ToLower(k) || !strings.HasPrefix(k, "ce-")) {
			t.Errorf("header %q: want only lowercase ce- headers besides Content-Type", k)
		}
	}
	if string(body) != `{"publisherId":"contoso","statusCode":202}` {
		t.Errorf("body = %s, want the data alone", body)
	}
}

func TestEncodeBinaryWithoutData(t *testing.T) {
	ev := event.New()
	ev.SetID("1")
	ev.SetSource("/cpcancel")
	ev.SetType("t")
	h, body, err := Encode(context.Background(), &ev, Binary)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != 0 {
		t.Errorf("body = %q, want empty", body)
	}
	if _, ok := h["Content-Type"]; ok {
		t.Errorf("Content-Type = %q without datacontenttype", h["Content-Type"])
	}
}

func TestEncodeStructured(t *testing.T) {
	ev := newEvent(t)
	h, body, err := Encode(context.Background(), ev, Structured)
	if err != nil {
		t.Fatal(err)
	}
	if want := (nats.Header{"Content-Type": {"application/cloudevents+json"}}); !maps.EqualFunc(h, want, slicesEqual) {
		t.Errorf("headers = %q, want %q", h, want)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	want := map[string]any{
		"specversion":     "1.0",
		"id":              "7f1c%0a 1",
		"source":          "/cpcancel",
		"type":            "cloudpartner.offer.cancel.cancelling",
		"subject":         `publishers/contoso/offers/contoso offer "é"`,
		"time":            "2024-05-06T07:08:09.123456789Z",
		"datacontenttype": "application/json",
		"traceparent":     traceParent,
		"tracestate":      "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		"data":            map[string]any{"publisherId": "contoso", "statusCode": float64(202)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got  %v\n want %v", got, want)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	events := map[string]func(*testing.T) *event.Event{
		"escaped values": newEvent,
		"source with a space": func(t *testing.T) *event.Event {
			ev := newEvent(t)
			ev.SetSource("/a b/é")
			return ev
		},
		"text data": func(t *testing.T) *event.Event {
			ev := newEvent(t)
			if err := ev.SetData("text/plain; charset=utf-8", []byte("cancel: done\n")); err != nil {
				t.Fatal(err)
			}
			return ev
		},
	}
	for name, build := range events {
		for _, mode := range []Mode{Binary, Structured} {
			t.Run(name+"/"+mode.String(), func(t *testing.T) {
				ev := build(t)
				h, body, err := Encode(context.Background(), ev, mode)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Decode(context.Background(), h, body)
				if err != nil {
					t.Fatalf("Decode(Encode(ev)): %v\nheaders %q\nbody %s", err, h, body)
				}
				if g, w := view(got), view(ev); !reflect.DeepEqual(g, w) {
					t.Errorf("round trip\n got  %+v\n want %+v", g, w)
				}
			})
		}
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{in: "binary", want: Binary},
		{in: "structured", want: Structured},
		{in: "", wantErr: true},
		{in: "json", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMode(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseMode(%q) = %v, %v", tc.in, got, err)
			}
			if err == nil && got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

// message is handed to sdk-go as a binding.Message; its metadata reader must agree with Decode.
func TestMessageMetadata(t *testing.T) {
	m := newMessage(readBinaryFixture(t, "percent-encoded.json"))
	if _, v := m.GetAttribute(spec.Subject); v != `café+"x"` {
		t.Errorf("subject = %#v, want the percent-decoded value", v)
	}
	if _, v := m.GetAttribute(spec.DataContentType); v != nil {
		t.Errorf("datacontenttype = %#v, want nil", v)
	}
	if v := m.GetExtension("tracestate"); v != "vendor=a,b" {
		t.Errorf("tracestate = %#v, want the percent-decoded value", v)
	}
	if v := m.GetExtension("traceparent"); v != nil {
		t.Errorf("traceparent = %#v, want nil", v)
	}
}

func slicesEqual(a, b []string) bool { return reflect.DeepEqual(a, b) }

// TestMarshalStructured checks that MarshalStructured gives what sdk-go's MarshalJSON gives.
func TestMarshalStructured(t *testing.T) {
	for _, base64 := range []bool{false, true} {
		ev := resultEvent(t)
		ev.DataBase64 = base64
		want, err := ev.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		got, err := MarshalStructured(ev)
		if err != nil || string(got) != string(want) {
			t.Errorf("MarshalStructured = %s, %v; want %s", got, err, want)
		}
	}
}

// A result published from its record's bytes is the message that encoding the event makes.
func TestStructuredMsgMatchesNewMsg(t *testing.T) {
	ev := newEvent(t)
	want, err := NewMsg(context.Background(), "results.cancelling", ev, Structured)
	if err != nil {
		t.Fatal(err)
	}
	body, err := MarshalStructured(ev)
	if err != nil {
		t.Fatal(err)
	}
	got := StructuredMsg("results.cancelling", body)
	if got.Subject != want.Subject || !maps.EqualFunc(got.Header, want.Header, slicesEqual) {
		t.Errorf("StructuredMsg = %s %q, want %s %q", got.Subject, got.Header, want.Subject, want.Header)
	}
	decoded, err := Decode(context.Background(), got.Header, got.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decoded, ev) {
		t.Errorf("decoded %v, want %v", decoded, ev)
	}
}
