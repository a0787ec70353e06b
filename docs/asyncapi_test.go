package docs_test

import (
	"context"
	"maps"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natsce"
)

// specSubjects are the subjects of docs/contract.md §2–3, fixed by contract.
var specSubjects = []string{
	"cloudpartner.cancel.requests",
	"cloudpartner.cancel.results.cancelled",
	"cloudpartner.cancel.results.cancelling",
	"cloudpartner.cancel.results.failed",
	"cloudpartner.cancel.deadletter",
}

const requestSubject = "cloudpartner.cancel.requests"

// binaryHeaders are the CloudEvents NATS binding headers a binary-mode request may carry and a
// result does carry. The trace context travels as the extensions ce-traceparent and
// ce-tracestate: natsce reads and writes every extension as ce-<name>.
var binaryHeaders = []string{
	"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-datacontenttype", "ce-subject", "ce-time",
	"ce-traceparent", "ce-tracestate", "Nats-Msg-Id", "Content-Type",
}

// TestAsyncAPIIsValid validates asyncapi.yaml against the AsyncAPI Initiative's JSON Schema of
// AsyncAPI 3.0.0 (testdata/asyncapi-specs): a misspelt or misplaced field fails here.
func TestAsyncAPIIsValid(t *testing.T) {
	doc := mustLoad(t, asyncAPIFile)
	if v := object(t, doc, "")["asyncapi"]; v != "3.0.0" {
		t.Fatalf("asyncapi = %v, want 3.0.0", v)
	}
	s := compileAt(t, jsonschema.NewCompiler(), "testdata/asyncapi-specs/3.0.0.json", "")
	if err := s.Validate(doc); err != nil {
		t.Errorf("asyncapi.yaml is not a valid AsyncAPI 3.0.0 document:\n%v", err)
	}
}

// TestAsyncAPIChannels checks that the channels are exactly the contract's subjects, which are also the
// service's defaults, and that the operations state cpcancel's viewpoint: it receives requests
// and sends results and dead letters, one operation per channel, with the channel's messages.
func TestAsyncAPIChannels(t *testing.T) {
	doc := mustLoad(t, asyncAPIFile)

	defaults := configDefaults(t)
	fromCode := []string{defaults["CPCANCEL_REQUEST_SUBJECT"], defaults["CPCANCEL_DEADLETTER_SUBJECT"]}
	for _, o := range cancelevent.Outcomes {
		fromCode = append(fromCode, defaults["CPCANCEL_RESULT_SUBJECT_PREFIX"]+"."+string(o))
	}
	slices.Sort(fromCode)
	spec := slices.Sorted(slices.Values(specSubjects))
	if !slices.Equal(fromCode, spec) {
		t.Errorf("the service's default subjects %v are not the contract's %v", fromCode, spec)
	}

	channels := object(t, doc, "/channels")
	var addresses []string
	for name, ch := range channels {
		addr, _ := ch.(map[string]any)["address"].(string)
		addresses = append(addresses, addr)
		if msgs, _ := ch.(map[string]any)["messages"].(map[string]any); len(msgs) == 0 {
			t.Errorf("channel %s has no messages", name)
		}
	}
	slices.Sort(addresses)
	if !slices.Equal(addresses, spec) {
		t.Errorf("channel addresses %v, want the contract's subjects %v", addresses, spec)
	}

	used := map[string]int{}
	for name, op := range object(t, doc, "/operations") {
		op := op.(map[string]any)
		chRef := ref(op["channel"])
		chName, ok := strings.CutPrefix(chRef, "#/channels/")
		ch, found := channels[chName].(map[string]any)
		if !ok || !found {
			t.Errorf("operation %s: channel %q is not a channel of this document", name, chRef)
			continue
		}
		used[chName]++
		want := "send"
		if ch["address"] == requestSubject {
			want = "receive"
		}
		if op["action"] != want {
			t.Errorf("operation %s on %s: action %v, want %s (cpcancel's viewpoint)", name, ch["address"], op["action"], want)
		}
		var opMsgs []string
		for _, m := range op["messages"].([]any) {
			msg, ok := strings.CutPrefix(ref(m), chRef+"/messages/")
			if !ok {
				t.Errorf("operation %s: message %q is not one of its channel's", name, ref(m))
			}
			opMsgs = append(opMsgs, msg)
		}
		slices.Sort(opMsgs)
		if chMsgs := slices.Sorted(maps.Keys(ch["messages"].(map[string]any))); !slices.Equal(opMsgs, chMsgs) {
			t.Errorf("operation %s: messages %v, want all of its channel's %v", name, opMsgs, chMsgs)
		}
	}
	for name := range channels {
		if used[name] != 1 {
			t.Errorf("channel %s is used by %d operations, want 1", name, used[name])
		}
	}
}

// configDefaults maps each CPCANCEL_* variable to its default, read from config.Config's tags.
func configDefaults(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range config.Variables() {
		out[v.Name] = v.Default
	}
	return out
}

// TestAsyncAPIRefsResolve follows every $ref of asyncapi.yaml and of the files it references to
// an existing file and JSON pointer, and wants every file under schemas/ referenced.
func TestAsyncAPIRefsResolve(t *testing.T) {
	docs := map[string]any{} // by path relative to this package
	var visit func(file string)
	visit = func(file string) {
		if _, done := docs[file]; done {
			return
		}
		doc, err := loadDoc(file)
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		docs[file] = doc
		walkRefs(doc, "", func(at, r string) {
			u, err := url.Parse(r)
			if err != nil {
				t.Errorf("%s#%s: $ref %q: %v", file, at, r, err)
				return
			}
			target := file
			if u.Path != "" {
				if u.IsAbs() || path.IsAbs(u.Path) {
					t.Errorf("%s#%s: $ref %q is not relative to the document", file, at, r)
					return
				}
				target = path.Join(path.Dir(file), u.Path)
				visit(target)
			}
			if tdoc, ok := docs[target]; ok {
				if _, err := lookup(tdoc, u.Fragment); err != nil {
					t.Errorf("%s#%s: $ref %q does not resolve: %v", file, at, r, err)
				}
			}
		})
	}
	visit(asyncAPIFile)
	for _, f := range []string{requestSchemaFile, resultSchemaFile} {
		if _, ok := docs[f]; !ok {
			t.Errorf("%s is not referenced by %s", f, asyncAPIFile)
		}
	}
}

// walkRefs calls fn with the location and value of every $ref string in v.
func walkRefs(v any, at string, fn func(at, ref string)) {
	switch n := v.(type) {
	case map[string]any:
		for k, c := range n {
			if s, ok := c.(string); ok && k == "$ref" {
				fn(at, s)
				continue
			}
			walkRefs(c, at+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), fn)
		}
	case []any:
		for i, c := range n {
			walkRefs(c, at+"/"+strconv.Itoa(i), fn)
		}
	}
}

// message is one message of a channel, with its schemas compiled.
type message struct {
	name, address    string
	ptr              string // of the Message Object in asyncapi.yaml
	structured       bool
	def              map[string]any
	headers, payload *jsonschema.Schema
}

// messages returns every channel's messages, compiled as AsyncAPI tools read them.
func messages(t *testing.T) []message {
	t.Helper()
	doc := mustLoad(t, asyncAPIFile)
	c := asyncAPICompiler(t)
	defaultCT, _ := object(t, doc, "")["defaultContentType"].(string)
	var out []message
	for chName, ch := range object(t, doc, "/channels") {
		ch := ch.(map[string]any)
		for name, m := range ch["messages"].(map[string]any) {
			ptr := strings.TrimPrefix(ref(m), "#")
			if ptr == "" {
				ptr = "/channels/" + chName + "/messages/" + name
			}
			def := object(t, doc, ptr)
			ct, _ := def["contentType"].(string)
			if ct == "" {
				ct = defaultCT
			}
			msg := message{name: name, address: ch["address"].(string), ptr: ptr, def: def,
				structured: ct == "application/cloudevents+json"}
			for _, part := range []string{"headers", "payload"} {
				if _, ok := def[part]; !ok {
					t.Fatalf("message %s has no %s: every cpcancel message has both", name, part)
				}
			}
			msg.headers = compileAt(t, c, asyncAPIFile, ptr+"/headers")
			msg.payload = compileAt(t, c, asyncAPIFile, ptr+"/payload")
			out = append(out, msg)
		}
	}
	return out
}

// TestAsyncAPIHeaders checks that the binary-mode messages list the CloudEvents binding headers
// and the dead letter lists the headers the handler adds.
func TestAsyncAPIHeaders(t *testing.T) {
	doc := mustLoad(t, asyncAPIFile)
	checked := 0
	for _, m := range messages(t) {
		ptr := m.ptr + "/headers"
		names := headerNames(t, doc, ptr)
		var want []string
		switch {
		case m.address == "cloudpartner.cancel.deadletter":
			want = []string{cancelevent.HeaderReason, cancelevent.HeaderStream, cancelevent.HeaderStreamSequence, "Nats-Msg-Id"}
			if !documentsPattern(t, doc, ptr, "Cpcancel-Original-Nats-Msg-Id") {
				t.Errorf("%s: renamed original headers (Cpcancel-Original-Nats-*) are not documented", m.name)
			}
		case m.structured:
			want = []string{"Content-Type", "Nats-Msg-Id"}
		default:
			want = binaryHeaders
		}
		for _, h := range want {
			if !slices.Contains(names, h) {
				t.Errorf("%s: header %s is not documented (documented: %v)", m.name, h, names)
			}
		}
		checked++
	}
	if checked != 9 {
		t.Errorf("checked the headers of %d messages, want 9 (2 request, 6 result, 1 dead letter)", checked)
	}
}

// headerNames lists the properties of the headers schema at ptr, through $ref and allOf.
func headerNames(t *testing.T, doc any, ptr string) []string {
	t.Helper()
	s := object(t, doc, ptr)
	if r := ref(s); r != "" {
		return headerNames(t, doc, strings.TrimPrefix(r, "#"))
	}
	props, _ := s["properties"].(map[string]any)
	names := slices.Collect(maps.Keys(props))
	allOf, _ := s["allOf"].([]any)
	for i := range allOf {
		names = append(names, headerNames(t, doc, ptr+"/allOf/"+strconv.Itoa(i))...)
	}
	return names
}

// documentsPattern reports whether a patternProperties key of the schema at ptr matches name.
func documentsPattern(t *testing.T, doc any, ptr, name string) bool {
	t.Helper()
	s := object(t, doc, ptr)
	if r := ref(s); r != "" {
		return documentsPattern(t, doc, strings.TrimPrefix(r, "#"), name)
	}
	pp, _ := s["patternProperties"].(map[string]any)
	for p := range pp {
		if strings.HasPrefix(name, strings.TrimPrefix(p, "^")) {
			return true
		}
	}
	return false
}

// TestAsyncAPIExamples validates every message example against its message's schemas, follows
// its correlationId, and recomputes the result ids it shows.
func TestAsyncAPIExamples(t *testing.T) {
	doc := mustLoad(t, asyncAPIFile)
	examples := 0
	for _, m := range messages(t) {
		exs, _ := m.def["examples"].([]any)
		corr, hasCorr := m.def["correlationId"]
		if !hasCorr && m.address != "cloudpartner.cancel.deadletter" {
			t.Errorf("%s has no correlationId", m.name)
		}
		if len(exs) == 0 && !m.structured {
			t.Errorf("%s has no example", m.name)
		}
		for i, ex := range exs {
			examples++
			ex := ex.(map[string]any)
			headers, _ := ex["headers"].(map[string]any)
			payload := ex["payload"]
			if err := m.headers.Validate(headers); err != nil {
				t.Errorf("%s example %d headers: %v", m.name, i, err)
			}
			if err := m.payload.Validate(payload); err != nil {
				t.Errorf("%s example %d payload: %v", m.name, i, err)
			}
			if hasCorr {
				checkCorrelation(t, doc, m, i, corr, headers, payload)
			}
			if outcome, ok := strings.CutPrefix(m.address, "cloudpartner.cancel.results."); ok {
				checkResultExample(t, m, i, cancelevent.Outcome(outcome), headers, payload)
			}
		}
	}
	if examples < 6 {
		t.Errorf("%d examples, want one per request mode, per binary result and the dead letter at least", examples)
	}
}

// checkCorrelation evaluates the message's correlationId location against an example.
func checkCorrelation(t *testing.T, doc any, m message, i int, corr any, headers map[string]any, payload any) {
	t.Helper()
	c := corr.(map[string]any)
	if r := ref(c); r != "" {
		c = object(t, doc, strings.TrimPrefix(r, "#"))
	}
	loc, _ := c["location"].(string)
	var from any
	var ptr string
	switch {
	case strings.HasPrefix(loc, "$message.header#"):
		from, ptr = headers, strings.TrimPrefix(loc, "$message.header#")
	case strings.HasPrefix(loc, "$message.payload#"):
		from, ptr = payload, strings.TrimPrefix(loc, "$message.payload#")
	default:
		t.Errorf("%s: correlationId location %q is not a runtime expression on the header or payload", m.name, loc)
		return
	}
	v, err := lookup(from, ptr)
	if s, _ := v.(string); err != nil || s == "" {
		t.Errorf("%s example %d: correlationId %s finds %v (%v), want the request id", m.name, i, loc, v, err)
	}
}

// checkResultExample wants a result example's ids to be what cpcancel would compute.
func checkResultExample(t *testing.T, m message, i int, o cancelevent.Outcome, headers map[string]any, payload any) {
	t.Helper()
	id, subject, data := headers["ce-id"], headers["ce-subject"], payload
	if m.structured {
		ev := payload.(map[string]any)
		id, subject, data = ev["id"], ev["subject"], ev["data"]
	}
	d := data.(map[string]any)
	reqSource, _ := d["requestSource"].(string)
	reqID, _ := d["requestId"].(string)
	pub, _ := d["publisherId"].(string)
	offer, _ := d["offerId"].(string)
	if want := cancelevent.ResultID(reqSource, reqID, o); id != want {
		t.Errorf("%s example %d: id %v, want %s, the result id of (%s, %s, %s)", m.name, i, id, want, reqSource, reqID, o)
	}
	if headers["Nats-Msg-Id"] != id {
		t.Errorf("%s example %d: Nats-Msg-Id %v, want the id %v", m.name, i, headers["Nats-Msg-Id"], id)
	}
	if want := cancelevent.Subject(pub, offer); want == "" && subject != nil || want != "" && subject != want {
		t.Errorf("%s example %d: subject %v, want %q", m.name, i, subject, want)
	}
}

// TestAsyncAPIDescribesEncodedEvents encodes requests and results the way the service does
// (cancelevent, then natsce, then Nats-Msg-Id as the publish adds it), in each message's mode, and
// validates headers and body against the message of their channel, and against no other.
func TestAsyncAPIDescribesEncodedEvents(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req := cancelevent.Request{ID: "req-0001", Source: "/my-service", PublisherID: "contoso", OfferID: "contoso-offer",
		TraceParent: traceParent, TraceState: "congo=t61rcWkgMzE"}
	const location = "https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31"
	results := map[cancelevent.Outcome][]*event.Event{}
	addResult := func(final bool, r cancelevent.Request, o cancelevent.Outcome, d cancelevent.ResultData) {
		build := cancelevent.NewResult
		if final {
			build = cancelevent.NewFinalResult
		}
		ev, err := build("/cpcancel", r, o, d, now)
		if err != nil {
			t.Fatal(err)
		}
		results[o] = append(results[o], ev)
	}
	addResult(false, req, cancelevent.Cancelled, cancelevent.ResultData{StatusCode: 200, CorrelationID: "c-1", Attempts: 1})
	addResult(true, req, cancelevent.Cancelled, cancelevent.ResultData{StatusCode: 200, Location: location,
		OperationID: "contoso$contoso-offer$2$preview", Attempts: 3, OperationStatus: "canceled"})
	addResult(false, req, cancelevent.Cancelling, cancelevent.ResultData{StatusCode: 202, Location: location,
		OperationID: "contoso$contoso-offer$2$preview", CorrelationID: "c-1", Attempts: 1})
	addResult(false, req, cancelevent.Failed, cancelevent.ResultData{StatusCode: 503, CorrelationID: "c-1", Attempts: 5,
		Error: &cancelevent.ErrorData{Code: "ServiceUnavailable", Message: "Service Unavailable"}})
	addResult(false, cancelevent.Request{ID: "req 2", Source: "/my service", PublisherID: "../etc", OfferID: "a b"}, cancelevent.Failed,
		cancelevent.ResultData{Attempts: 1, Error: &cancelevent.ErrorData{Code: cancelevent.CodeInvalidRequest, Message: "publisherId must be ..."}})
	addResult(true, req, cancelevent.Failed, cancelevent.ResultData{StatusCode: 200, Location: location, Attempts: 4,
		OperationStatus: "Failed", Messages: []string{"step 2 failed"}, Error: &cancelevent.ErrorData{Code: "operation_failed", Message: "the operation ended Failed"}})

	request, err := cancelevent.NewRequest("/my-service", "req-0001", cancelevent.RequestData{
		PublisherID: "contoso", OfferID: "contoso-offer", NotificationEmails: []string{"jondoe@contoso.com"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	request.SetExtension("traceparent", traceParent)

	checked := 0
	for _, m := range messages(t) {
		mode := natsce.Binary
		if m.structured {
			mode = natsce.Structured
		}
		var fits, misfits []*event.Event
		outcome, isResult := strings.CutPrefix(m.address, "cloudpartner.cancel.results.")
		switch {
		case m.address == requestSubject:
			fits = []*event.Event{request}
		case isResult:
			for o, evs := range results {
				if string(o) == outcome {
					fits = append(fits, evs...)
				} else {
					misfits = append(misfits, evs...)
				}
			}
		default:
			continue // dead letters: the original bytes, checked by internal/service/schema_test.go
		}
		for _, ev := range append(fits, misfits...) {
			hdr, body, err := natsce.Encode(context.Background(), ev, mode)
			if err != nil {
				t.Fatal(err)
			}
			hdr.Set("Nats-Msg-Id", ev.ID()) // jetstream.WithMsgID(ev.ID()), as the handler publishes
			payload, err := parseJSON(body)
			if err != nil {
				t.Fatal(err)
			}
			herr, perr := m.headers.Validate(headerMap(hdr)), m.payload.Validate(payload)
			if slices.Contains(fits, ev) {
				checked++
				if herr != nil || perr != nil {
					t.Errorf("%s: %s %s does not fit:\nheaders %v: %v\nbody %s: %v", m.name, ev.Type(), ev.ID(), hdr, herr, body, perr)
				}
			} else if perr == nil || herr == nil && !m.structured { // structured headers carry no type
				t.Errorf("%s: a %s event fits it (headers %v, payload %v)", m.name, ev.Type(), herr == nil, perr == nil)
			}
		}
	}
	if want := 2 + 2*len(slices.Concat(slices.Collect(maps.Values(results))...)); checked != want {
		t.Errorf("checked %d encoded events, want %d", checked, want)
	}
}

// headerMap is a NATS header as a JSON object of single values, as the AsyncAPI headers describe.
func headerMap(h nats.Header) map[string]any {
	out := make(map[string]any, len(h))
	for k, vs := range h {
		if len(vs) == 1 {
			out[k] = vs[0]
		} else {
			out[k] = vs // several values: refused by a string schema
		}
	}
	return out
}
