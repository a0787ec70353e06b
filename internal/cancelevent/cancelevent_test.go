package cancelevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

const (
	testSource      = "/publisher/app"
	testID          = "req-0001"
	testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTraceState  = "congo=t61rcWkgMzE"
)

// requestEvent is a request event as natsce.Decode hands it over: data given as raw bytes.
func requestEvent(t *testing.T, contentType string, data []byte) *event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID(testID)
	ev.SetSource(testSource)
	ev.SetType(RequestType)
	ev.SetExtension("traceparent", testTraceParent)
	ev.SetExtension("tracestate", testTraceState)
	if contentType != "" {
		ev.SetDataContentType(contentType)
	}
	ev.DataEncoded = data
	return &ev
}

func TestParseRequest(t *testing.T) {
	const (
		badPublisher = "publisherId must be 1 to 64 of [A-Za-z0-9._-], not . or .."
		badOffer     = "offerId must be 1 to 64 of [A-Za-z0-9._-], not . or .."
		notObject    = "data is not a JSON object with publisherId and offerId: "
	)
	valid := func(emails ...string) *Request {
		return &Request{
			ID: testID, Source: testSource, PublisherID: "contoso", OfferID: "contoso-offer",
			Emails: emails, TraceParent: testTraceParent, TraceState: testTraceState,
		}
	}
	twenty := make([]string, 20)
	for i := range twenty {
		twenty[i] = fmt.Sprintf("user%d@contoso.com", i)
	}
	tests := []struct {
		file        string // under testdata/requests
		contentType string // of the data; "" means application/json
		want        *Request
		wantReason  string // exact InvalidError.Reason
	}{
		{file: "valid-emails-array.json", want: valid("jondoe@contoso.com", "Jane.Roe@Contoso.com", "ops@contoso.com")},
		{file: "valid-emails-string.json", want: valid("jondoe@contoso.com", "jane@contoso.com")},
		{file: "valid-emails-20.json", want: valid(twenty...)},
		{file: "valid-no-emails.json", want: valid()},
		{file: "valid-null-emails.json", want: valid()},
		{file: "valid-empty-emails.json", want: valid()},
		{file: "valid-no-emails.json", contentType: "application/json; charset=utf-8", want: valid()},
		{file: "valid-no-emails.json", contentType: "application/vnd.contoso.cancel+json", want: valid()},
		{file: "valid-no-emails.json", contentType: "none", want: valid()},
		{
			file: "valid-64-chars.json",
			want: &Request{
				ID: testID, Source: testSource, PublisherID: "Aa0._-" + strings.Repeat("a", 58), OfferID: "contoso-offer",
				TraceParent: testTraceParent, TraceState: testTraceState,
			},
		},
		{file: "publisher-empty.json", wantReason: badPublisher},
		{file: "publisher-missing.json", wantReason: badPublisher},
		{file: "publisher-65-chars.json", wantReason: badPublisher},
		{file: "publisher-dot.json", wantReason: badPublisher},
		{file: "publisher-dotdot.json", wantReason: badPublisher},
		{file: "publisher-slash.json", wantReason: badPublisher},
		{file: "publisher-percent-slash.json", wantReason: badPublisher},
		{file: "publisher-space.json", wantReason: badPublisher},
		{file: "publisher-control-char.json", wantReason: badPublisher},
		{file: "publisher-non-ascii.json", wantReason: badPublisher},
		{file: "offer-dotdot.json", wantReason: badOffer},
		{file: "both-invalid.json", wantReason: badPublisher + "; " + badOffer + `; notificationEmails: "nope" is not a plain email address`},
		{file: "null.json", wantReason: badPublisher + "; " + badOffer},
		{file: "not-json.json", wantReason: notObject + "syntax error at byte 1"},
		{file: "trailing-garbage.json", wantReason: notObject + "syntax error at byte 53"},
		{file: "array.json", wantReason: notObject + "it is a JSON array"},
		{file: "publisher-number.json", wantReason: notObject + `field "publisherId" has the wrong type`},
		{file: "emails-number.json", wantReason: "notificationEmails must be an array of addresses or a comma-separated string"},
		{file: "emails-array-of-numbers.json", wantReason: "notificationEmails must be an array of addresses or a comma-separated string"},
		{file: "email-invalid.json", wantReason: `notificationEmails: "jondoe-at-contoso.com" is not a plain email address`},
		{file: "email-display-name.json", wantReason: `notificationEmails: "Jon Doe <jondoe@contoso.com>" is not a plain email address`},
		{file: "email-display-name-in-string.json", wantReason: `notificationEmails: "Jon Doe <jondoe@contoso.com>" is not a plain email address`},
		{file: "email-comma-in-array.json", wantReason: `notificationEmails: "a@contoso.com,b@contoso.com" is not a plain email address`},
		{file: "email-quoted-space.json", wantReason: `notificationEmails: "\"jon doe\"@contoso.com" is not a plain email address`},
		{file: "emails-21.json", wantReason: "notificationEmails has 21 addresses, at most 20 allowed"},
		{file: "invalid-utf8.json", wantReason: "data is not valid UTF-8"},
		{file: "valid-no-emails.json", contentType: "text/plain", wantReason: `datacontenttype "text/plain" is not JSON`},
		{file: "valid-no-emails.json", contentType: "text/plain; charset=utf-8", wantReason: `datacontenttype "text/plain" is not JSON`},
	}
	for _, tc := range tests {
		name := strings.TrimSuffix(tc.file, ".json")
		if tc.contentType != "" {
			name += " as " + tc.contentType
		}
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "requests", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			ct := tc.contentType
			switch ct {
			case "":
				ct = event.ApplicationJSON
			case "none":
				ct = ""
			}
			got, err := ParseRequest(requestEvent(t, ct, data))
			if got.ID != testID || got.Source != testSource || got.TraceParent != testTraceParent || got.TraceState != testTraceState {
				t.Errorf("identity and trace context = %q %q %q %q, want them copied even when invalid",
					got.ID, got.Source, got.TraceParent, got.TraceState)
			}
			if tc.want == nil {
				var invalid *InvalidError
				if !errors.As(err, &invalid) {
					t.Fatalf("ParseRequest = %+v, %v; want an *InvalidError", got, err)
				}
				if invalid.Reason != tc.wantReason {
					t.Errorf("reason\n got  %s\n want %s", invalid.Reason, tc.wantReason)
				}
				if err.Error() != "invalid request: "+tc.wantReason {
					t.Errorf("Error() = %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if len(got.Emails) == 0 {
				got.Emails = nil // no addresses, however spelled
			}
			if !reflect.DeepEqual(got, *tc.want) {
				t.Errorf("ParseRequest\n got  %+v\n want %+v", got, *tc.want)
			}
		})
	}
}

func TestParseRequestWithoutTraceContext(t *testing.T) {
	ev := event.New()
	ev.SetID(testID)
	ev.SetSource(testSource)
	ev.SetType(RequestType)
	if err := ev.SetData(event.ApplicationJSON, []byte(`{"publisherId":"contoso","offerId":"contoso-offer"}`)); err != nil {
		t.Fatal(err)
	}
	got, err := ParseRequest(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if got.TraceParent != "" || got.TraceState != "" {
		t.Errorf("trace context = %q, %q; want empty", got.TraceParent, got.TraceState)
	}
}

func TestResultID(t *testing.T) {
	// Pinned: a change of namespace or algorithm would give redelivered requests new result ids,
	// and JetStream would no longer drop the duplicates.
	golden := map[Outcome]string{
		Cancelled:  "82b29ec4-2fe0-5fb6-8b10-fbfe3734afc2",
		Cancelling: "a6652ac9-37cd-51a5-b8a3-5508a060d970",
		Failed:     "2798726b-9e54-5986-afb8-929b3a876f88",
	}
	for o, want := range golden {
		if got := ResultID(testSource, testID, o); got != want {
			t.Errorf("ResultID(%q, %q, %s) = %s, want %s", testSource, testID, o, got, want)
		}
	}

	id := ResultID(testSource, testID, Cancelled)
	if again := ResultID(testSource, testID, Cancelled); again != id {
		t.Errorf("ResultID is not deterministic: %s then %s", id, again)
	}
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id || u.Version() != 5 || u.Variant() != uuid.RFC4122 {
		t.Errorf("ResultID = %q, want a canonical RFC 4122 version 5 UUID (%v)", id, err)
	}
	for name, other := range map[string]string{
		"outcome":                  ResultID(testSource, testID, Failed),
		"source":                   ResultID("/publisher/other", testID, Cancelled),
		"id":                       ResultID(testSource, "req-0002", Cancelled),
		"source and id swapped":    ResultID(testID, testSource, Cancelled),
		"boundary between the two": ResultID(testSource+"r", "eq-0001", Cancelled),
	} {
		if other == id {
			t.Errorf("changing the %s gives the same id %s", name, id)
		}
	}
}

func TestNewResult(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	req := Request{
		ID: testID, Source: testSource, PublisherID: "contoso", OfferID: "contoso-offer",
		TraceParent: testTraceParent, TraceState: testTraceState,
	}
	const location = "https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31"
	ev, err := NewResult("/cpcancel", req, Cancelling, ResultData{
		StatusCode: 202, Location: location, OperationID: "contoso$contoso-offer$2$preview",
		CorrelationID: "corr-1", Attempts: 1,
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"id", ev.ID(), "a6652ac9-37cd-51a5-b8a3-5508a060d970"},
		{"type", ev.Type(), "cloudpartner.offer.cancel.cancelling"},
		{"source", ev.Source(), "/cpcancel"},
		{"subject", ev.Subject(), "publishers/contoso/offers/contoso-offer"},
		{"time", ev.Time().Format(time.RFC3339Nano), "2024-05-06T07:08:09Z"},
		{"datacontenttype", ev.DataContentType(), "application/json"},
		{"data", string(ev.Data()), `{"publisherId":"contoso","offerId":"contoso-offer","requestId":"req-0001","requestSource":"/publisher/app",` +
			`"statusCode":202,"location":"` + location + `","operationId":"contoso$contoso-offer$2$preview","correlationId":"corr-1","attempts":1}`},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s\n got  %s\n want %s", c.name, c.got, c.want)
		}
	}
	wantExt := map[string]any{"traceparent": testTraceParent, "tracestate": testTraceState}
	if !reflect.DeepEqual(ev.Extensions(), wantExt) {
		t.Errorf("extensions = %v, want %v", ev.Extensions(), wantExt)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("result is not a valid CloudEvent: %v", err)
	}
}

func TestNewResultFailedInvalid(t *testing.T) {
	long := strings.Repeat("p", 200)
	tests := []struct {
		name                     string
		publisherID, offerID     string
		wantPublisher, wantOffer string
	}{
		{name: "path traversal", publisherID: "../etc", offerID: "passwd", wantPublisher: "../etc", wantOffer: "passwd"},
		{name: "empty", publisherID: "", offerID: "", wantPublisher: "", wantOffer: ""},
		{name: "too long", publisherID: long, offerID: "a b", wantPublisher: long[:128], wantOffer: "a b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{ID: testID, Source: testSource, PublisherID: tc.publisherID, OfferID: tc.offerID}
			ev, err := NewResult("/cpcancel", req, Failed, ResultData{
				Error: &ErrorData{Code: CodeInvalidRequest, Message: "publisherId must be ..."},
			}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if ev.Subject() != "" {
				t.Errorf("subject = %q, want none for unsafe ids", ev.Subject())
			}
			if len(ev.Extensions()) != 0 {
				t.Errorf("extensions = %v, want none without trace context", ev.Extensions())
			}
			if ev.Type() != "cloudpartner.offer.cancel.failed" || ev.ID() != "2798726b-9e54-5986-afb8-929b3a876f88" {
				t.Errorf("type, id = %s, %s", ev.Type(), ev.ID())
			}
			var d ResultData
			if err := json.Unmarshal(ev.Data(), &d); err != nil {
				t.Fatal(err)
			}
			want := ResultData{
				PublisherID: tc.wantPublisher, OfferID: tc.wantOffer, RequestID: testID, RequestSource: testSource,
				Error: &ErrorData{Code: CodeInvalidRequest, Message: "publisherId must be ..."},
			}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("data\n got  %+v\n want %+v", d, want)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("result is not a valid CloudEvent: %v", err)
			}
		})
	}
}

func TestNewResultBoundsErrorMessage(t *testing.T) {
	req := Request{ID: testID, Source: testSource, PublisherID: "contoso", OfferID: "contoso-offer"}
	tests := []struct {
		name, message, want string
	}{
		{name: "short", message: "no access", want: "no access"},
		{name: "exactly 512 bytes", message: strings.Repeat("x", 512), want: strings.Repeat("x", 512)},
		{name: "rune across the bound", message: strings.Repeat("x", 511) + "é tail", want: strings.Repeat("x", 511)},
		{name: "multibyte only", message: strings.Repeat("€", 300), want: strings.Repeat("€", 170)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errData := &ErrorData{Code: "Forbidden", Message: tc.message}
			ev, err := NewResult("/cpcancel", req, Failed, ResultData{StatusCode: 403, Error: errData}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var d ResultData
			if err := json.Unmarshal(ev.Data(), &d); err != nil {
				t.Fatal(err)
			}
			if d.Error == nil || d.Error.Message != tc.want {
				t.Fatalf("message = %+v, want %d bytes %q…", d.Error, len(tc.want), Truncate(tc.want, 16))
			}
			if len(d.Error.Message) > 512 || !utf8.ValidString(d.Error.Message) {
				t.Errorf("message of %d bytes, valid UTF-8 %v", len(d.Error.Message), utf8.ValidString(d.Error.Message))
			}
			if errData.Message != tc.message {
				t.Errorf("NewResult changed the caller's ErrorData")
			}
		})
	}
}

func TestNewRequestIsAccepted(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	ev, err := NewRequest(testSource, testID, RequestData{
		PublisherID: "contoso", OfferID: "contoso-offer", NotificationEmails: []string{"jondoe@contoso.com"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type() != RequestType || ev.ID() != testID || ev.Source() != testSource || !ev.Time().Equal(now) {
		t.Errorf("event = %s", ev)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("request is not a valid CloudEvent: %v", err)
	}
	want := `{"publisherId":"contoso","offerId":"contoso-offer","notificationEmails":["jondoe@contoso.com"]}`
	if string(ev.Data()) != want || ev.DataContentType() != event.ApplicationJSON {
		t.Errorf("data = %s (%s), want %s", ev.Data(), ev.DataContentType(), want)
	}
	got, err := ParseRequest(ev)
	if err != nil {
		t.Fatalf("ParseRequest(NewRequest(...)): %v", err)
	}
	wantReq := Request{ID: testID, Source: testSource, PublisherID: "contoso", OfferID: "contoso-offer", Emails: []string{"jondoe@contoso.com"}}
	if !reflect.DeepEqual(got, wantReq) {
		t.Errorf("ParseRequest\n got  %+v\n want %+v", got, wantReq)
	}
}

func TestNewRequestRejectsMissingIdentity(t *testing.T) {
	d := RequestData{PublisherID: "contoso", OfferID: "contoso-offer"}
	if _, err := NewRequest(testSource, "", d, time.Now()); err == nil {
		t.Error("NewRequest with an empty id succeeded")
	}
	if _, err := NewRequest("", testID, d, time.Now()); err == nil {
		t.Error("NewRequest with an empty source succeeded")
	}
}

func TestSubject(t *testing.T) {
	tests := []struct{ publisher, offer, want string }{
		{"contoso", "contoso-offer", "publishers/contoso/offers/contoso-offer"},
		{"contoso", "..", ""},
		{"a/b", "contoso-offer", ""},
		{"", "contoso-offer", ""},
	}
	for _, tc := range tests {
		if got := Subject(tc.publisher, tc.offer); got != tc.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tc.publisher, tc.offer, got, tc.want)
		}
	}
	for _, o := range Outcomes {
		if got, want := o.Type(), "cloudpartner.offer.cancel."+string(o); got != want {
			t.Errorf("%s.Type() = %q, want %q", o, got, want)
		}
		if got := OutcomeOf(o.Type()); got != o {
			t.Errorf("OutcomeOf(%q) = %q, want %q", o.Type(), got, o)
		}
	}
	if RequestType != "cloudpartner.offer.cancel.requested" {
		t.Errorf("RequestType = %q", RequestType)
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"contoso", true},
		{"contoso-offer", true},
		{"Contoso.Ltd_2", true},
		{"...", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a%2Fb", false},
		{strings.Repeat("a", 65), false},
		{"a b", false},
		{"é", false},
		{"a$b", false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			if got := ValidID(tc.id); got != tc.want {
				t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}
