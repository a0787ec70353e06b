package natsce

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

// readableJSON reports whether b is JSON that a reader into Go values takes: valid, and without
// numbers beyond float64.
func readableJSON(b []byte) bool {
	var v any
	return json.Unmarshal(b, &v) == nil
}

// FuzzDecode feeds arbitrary headers and bodies to Decode: it must not panic, must report every
// failure as "not a CloudEvent: ...", and what it accepts must be a valid event that survives a round
// trip through Encode in both modes.
func FuzzDecode(f *testing.F) {
	f.Add("ce-specversion", "1.0", "ce-id", "req-1", "ce-source", "/s", "ce-type", "t", []byte(`{"publisherId":"p"}`))
	f.Add("CE-SPECVERSION", "1.0", "Ce-Id", "a%20b", "ce-source", "%2Fx", "content-type", "application/json", []byte(`{}`))
	f.Add("Content-Type", "application/cloudevents+json", "", "", "", "", "", "",
		[]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}`))
	f.Add("", "", "", "", "", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}`))
	f.Add("ce-specversion", "0.3", "ce-id", "\xff", "ce-source", "%zz", "ce-type", "t", []byte{0xff})
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3, k4, v4 string, body []byte) {
		h := nats.Header{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {k3, v3}, {k4, v4}} {
			if kv[0] != "" {
				h[kv[0]] = append(h[kv[0]], kv[1])
			}
		}
		ev, err := Decode(context.Background(), h, body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "not a CloudEvent: ") {
				t.Fatalf("error %v does not say it is not a CloudEvent", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		modes := []Mode{Binary}
		if ct := ev.DataMediaType(); len(ev.Data()) == 0 || (readableJSON(ev.Data()) && utf8.Valid(ev.Data())) || (ct != "" && ct != event.ApplicationJSON && !strings.HasSuffix(ct, "+json")) {
			// sdk-go writes JSON-typed (or untyped) data into a structured event as it is, so
			// data that is not JSON, JSON holding invalid UTF-8 (which json.Valid lets through),
			// or a number no float64 holds (1e700: valid JSON, which sdk-go's reader refuses),
			// cannot be re-encoded structured. cpcancel re-encodes only its own results, whose
			// data json.Marshal wrote: valid JSON and UTF-8.
			modes = append(modes, Structured)
		}
		for _, mode := range modes {
			hdr, out, err := Encode(context.Background(), ev, mode)
			if err != nil {
				t.Fatalf("%s: cannot encode an accepted event: %v", mode, err)
			}
			back, err := Decode(context.Background(), hdr, out)
			if err != nil {
				t.Fatalf("%s: cannot decode what Encode wrote: %v\nheader %q\nbody %q", mode, err, hdr, out)
			}
			if back.ID() != ev.ID() || back.Source() != ev.Source() || back.Type() != ev.Type() || back.Subject() != ev.Subject() {
				t.Fatalf("%s round trip changed the event:\n got %s\nwant %s", mode, back, ev)
			}
		}
	})
}
