package service_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

// The event API documents, relative to this package's directory.
const (
	asyncAPIDoc      = "../../docs/asyncapi.yaml"
	resultSchemaFile = "../../docs/schemas/cancel-result.json"
)

// TestResultsMatchSchema runs the service against the emulator in each result mode, produces
// every outcome (with the final results of followed operations and a dead letter), and validates
// every stored message against the documents: the result data against cancel-result.json, as a
// whole and for its outcome, and headers and body against the AsyncAPI message of its channel.
// The documents cannot drift from what the service publishes.
func TestResultsMatchSchema(t *testing.T) {
	docs := loadEventDocs(t)
	const source = "/schema-test"
	type result struct {
		outcome cancelevent.Outcome
		final   bool
		status  int
		code    string
	}
	cases := []struct {
		id, publisher, offer string
		emails               []string
		results              []result
	}{
		{id: "cancelled", publisher: "contoso", offer: "sync-offer", emails: []string{"jondoe@contoso.com"},
			results: []result{{outcome: cancelevent.Cancelled, status: 200}}},
		{id: "migrated", publisher: "contoso", offer: "contoso-offer", results: []result{
			{outcome: cancelevent.Cancelling, status: 202}, {outcome: cancelevent.Cancelled, final: true, status: 200}}},
		{id: "legacy", publisher: "contoso", offer: "legacy-offer", results: []result{
			{outcome: cancelevent.Cancelling, status: 202}, {outcome: cancelevent.Cancelled, final: true, status: 200}}},
		{id: "operation-failed", publisher: "contoso", offer: "opfail-offer", results: []result{
			{outcome: cancelevent.Cancelling, status: 202},
			{outcome: cancelevent.Failed, final: true, status: 200, code: cancelevent.CodeOperationFailed}}},
		{id: "unknown", publisher: "contoso", offer: "unknown-offer",
			results: []result{{outcome: cancelevent.Failed, status: 404, code: "OfferNotFound"}}},
		{id: "invalid", publisher: "contoso", offer: "../etc",
			results: []result{{outcome: cancelevent.Failed, code: cancelevent.CodeInvalidRequest}}},
		{id: "invalid-long", publisher: strings.Repeat("p", 200), offer: "a b",
			results: []result{{outcome: cancelevent.Failed, code: cancelevent.CodeInvalidRequest}}},
		{id: "transient", publisher: "contoso", offer: "broken-offer",
			results: []result{{outcome: cancelevent.Failed, status: 503, code: "ServiceUnavailable"}}},
	}

	for _, mode := range []natsce.Mode{natsce.Binary, natsce.Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			st := followStack(t, 300*time.Millisecond)
			env := maps.Clone(followEnv)
			env["CPCANCEL_RESULT_MODE"] = mode.String()
			env["CPCANCEL_MAX_ATTEMPTS"] = "1" // a transient failure fails at once
			st.svc = startService(t, st.env(env))

			expected := map[string]result{} // by result id
			for i, c := range cases {
				ev := request(t, source, c.id, c.publisher, c.offer, c.emails...)
				if i == 0 {
					ev.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
					ev.SetExtension("tracestate", "congo=t61rcWkgMzE")
				}
				st.publish(t, []natsce.Mode{natsce.Binary, natsce.Structured}[i%2], ev)
				for _, r := range c.results {
					id := cancelevent.ResultID(source, c.id, r.outcome)
					if r.final {
						id = cancelevent.FinalResultID(source, c.id, r.outcome)
					}
					expected[id] = r
				}
			}
			st.publishRaw(t, nats.Header{"Nats-Msg-Id": {"schema-test-not-an-event"}}, []byte("cancel contoso-offer please"))

			for _, r := range st.waitStream(t, "CPCANCEL_RESULTS", len(expected), 30*time.Second) {
				if r.ev == nil {
					t.Errorf("result on %s is not a CloudEvent: %s", r.subject, r.body)
					continue
				}
				want, ok := expected[r.ev.ID()]
				if !ok {
					t.Errorf("unexpected result %s %s: %s", r.ev.Type(), r.ev.ID(), r.ev.Data())
					continue
				}
				delete(expected, r.ev.ID())
				d := r.data
				code := ""
				if d.Error != nil {
					code = d.Error.Code
				}
				if r.ev.Type() != want.outcome.Type() || d.StatusCode != want.status || code != want.code {
					t.Errorf("result %s for %s: %s, status %d, code %q; want %s, %d, %q (the test no longer covers what it says)",
						r.ev.ID(), d.RequestID, r.ev.Type(), d.StatusCode, code, want.outcome.Type(), want.status, want.code)
				}
				docs.check(t, r, want.outcome, mode)
			}
			for id, r := range expected {
				t.Errorf("no %s result %s", r.outcome, id)
			}

			dead := st.waitStream(t, "CPCANCEL_DEADLETTER", 1, 10*time.Second)[0]
			if dead.header.Get("Cpcancel-Original-Nats-Msg-Id") != "schema-test-not-an-event" {
				t.Errorf("dead letter headers %v: the original Nats-Msg-Id is not kept", dead.header)
			}
			docs.checkMessage(t, dead, "cloudpartner.cancel.deadletter", natsce.Binary)
		})
	}
}

// eventDocs are the documents under docs/, compiled as a publisher's tools would read them.
type eventDocs struct {
	result   *jsonschema.Schema                         // cancel-result.json
	outcome  map[cancelevent.Outcome]*jsonschema.Schema // cancel-result.json#/$defs/<outcome>
	messages map[string]docMessage                      // by channel address and mode
}

// docMessage is an AsyncAPI message's headers and payload schemas.
type docMessage struct {
	name             string
	headers, payload *jsonschema.Schema
}

func messageKey(address string, mode natsce.Mode) string { return address + " " + mode.String() }

// loadEventDocs compiles cancel-result.json, and every channel message of asyncapi.yaml (AsyncAPI
// Schema Objects, JSON Schema draft-07 with formats asserted).
func loadEventDocs(t *testing.T) *eventDocs {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	docs := &eventDocs{outcome: map[cancelevent.Outcome]*jsonschema.Schema{}, messages: map[string]docMessage{}}
	resultURL := schemaFileURL(t, resultSchemaFile)
	docs.result = compileSchema(t, c, resultURL)
	for _, o := range cancelevent.Outcomes {
		docs.outcome[o] = compileSchema(t, c, resultURL+"#/$defs/"+string(o))
	}

	raw, err := os.ReadFile(asyncAPIDoc)
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("%s: %v", asyncAPIDoc, err)
	}
	doc := yamlToJSONValue(t, y).(map[string]any)
	docURL := schemaFileURL(t, asyncAPIDoc)
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	defaultCT, _ := doc["defaultContentType"].(string)
	components := doc["components"].(map[string]any)["messages"].(map[string]any)
	for _, ch := range doc["channels"].(map[string]any) {
		ch := ch.(map[string]any)
		for _, m := range ch["messages"].(map[string]any) {
			ref, _ := m.(map[string]any)["$ref"].(string)
			name, ok := strings.CutPrefix(ref, "#/components/messages/")
			if !ok {
				t.Fatalf("channel message %v is not a reference to components/messages", m)
			}
			def := components[name].(map[string]any)
			ct, _ := def["contentType"].(string)
			if ct == "" {
				ct = defaultCT
			}
			mode := natsce.Binary
			if ct == "application/cloudevents+json" {
				mode = natsce.Structured
			}
			key := messageKey(ch["address"].(string), mode)
			if _, dup := docs.messages[key]; dup {
				t.Fatalf("two %s messages on %s", mode, ch["address"])
			}
			docs.messages[key] = docMessage{
				name:    name,
				headers: compileSchema(t, c, docURL+"#/components/messages/"+name+"/headers"),
				payload: compileSchema(t, c, docURL+"#/components/messages/"+name+"/payload"),
			}
		}
	}
	return docs
}

// check validates a stored result against the documents.
func (docs *eventDocs) check(t *testing.T, r stored, o cancelevent.Outcome, mode natsce.Mode) {
	t.Helper()
	if r.subject != "cloudpartner.cancel.results."+string(o) {
		t.Errorf("result %s on subject %s", r.ev.ID(), r.subject)
	}
	data := parseJSONValue(t, r.ev.Data())
	if err := docs.result.Validate(data); err != nil {
		t.Errorf("%s data does not fit %s:\n%s\n%v", o, resultSchemaFile, r.ev.Data(), err)
	}
	if err := docs.outcome[o].Validate(data); err != nil {
		t.Errorf("%s data does not fit %s#/$defs/%s:\n%s\n%v", o, resultSchemaFile, o, r.ev.Data(), err)
	}
	docs.checkMessage(t, r, r.subject, mode)
}

// checkMessage validates a stored message's headers and body against the AsyncAPI message of the
// channel at address in that mode.
func (docs *eventDocs) checkMessage(t *testing.T, r stored, address string, mode natsce.Mode) {
	t.Helper()
	m, ok := docs.messages[messageKey(address, mode)]
	if !ok {
		t.Errorf("%s documents no %s message", address, mode)
		return
	}
	hdr := make(map[string]any, len(r.header))
	for k, vs := range r.header {
		if len(vs) == 1 {
			hdr[k] = vs[0]
		} else {
			hdr[k] = vs // not a single value: refused by a string schema
		}
	}
	if err := m.headers.Validate(hdr); err != nil {
		t.Errorf("%s headers do not fit message %s:\n%v\n%v", address, m.name, r.header, err)
	}
	var body any = string(r.body)
	if v, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body)); err == nil {
		body = v
	}
	if err := m.payload.Validate(body); err != nil {
		t.Errorf("%s body does not fit message %s:\n%s\n%v", address, m.name, r.body, err)
	}
}

func compileSchema(t *testing.T, c *jsonschema.Compiler, loc string) *jsonschema.Schema {
	t.Helper()
	s, err := c.Compile(loc)
	if err != nil {
		t.Fatalf("compile %s: %v", loc, err)
	}
	return s
}

func schemaFileURL(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// yamlToJSONValue turns a decoded YAML value into the values jsonschema validates.
func yamlToJSONValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return parseJSONValue(t, b)
}

func parseJSONValue(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}
