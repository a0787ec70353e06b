package docs_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
)

// requestFixtures are the request data the service's own tests parse (cancelevent_test.go).
const requestFixtures = "../internal/cancelevent/testdata/requests"

// beyondSchema lists the fixtures the service rejects for a reason a JSON Schema cannot state,
// and why. The test checks that the schema alone indeed lets each of them through (or that there
// is no JSON value to validate), so that the list stays true.
var beyondSchema = map[string]string{
	"not-json.json":         "not JSON: there is no value to validate (any JSON parser refuses it)",
	"trailing-garbage.json": "two JSON values: a schema sees one, the parser must refuse the rest",
	"invalid-utf8.json": "invalid UTF-8 is a property of the bytes, and a schema sees decoded strings " +
		"(a JSON text must be UTF-8, RFC 8259 §8.1, so a strict parser refuses it)",
	"email-display-name-in-string.json": "a comma-separated string of addresses: a schema cannot split a string, " +
		"so only the array form's items are checked as emails",
	"email-quoted-space.json": `format "email" allows a quoted local part with a space ("jon doe"@contoso.com); ` +
		"the service refuses a space or a comma in any address, as the API takes them as one comma-separated string",
}

// beyondContract lists the fixtures the service accepts although they break the documented
// contract when formats are asserted, and why: the service is lenient, the contract is not.
var beyondContract = map[string]string{
	"valid-emails-array.json": "the service trims spaces around an address and accepts <address> (net/mail); " +
		`the contract promises plain addresses (format "email")`,
}

// serviceAccepts is the service's own verdict: cancelevent.ParseRequest on data as it arrives.
func serviceAccepts(data []byte) bool {
	ev := event.New()
	ev.SetID("req-0001")
	ev.SetSource("/docs-test")
	ev.SetType(cancelevent.RequestType)
	ev.SetDataContentType(event.ApplicationJSON)
	ev.DataEncoded = data
	_, err := cancelevent.ParseRequest(&ev)
	return err == nil
}

// schemaReaders are the ways a publisher's validator may read a schema under schemas/: as JSON
// Schema 2020-12 defines it (format is an annotation), with formats asserted, and as draft-07 (how
// AsyncAPI tools read a Schema Object; draft-07 asserts formats).
type schemaReaders struct {
	annotated, asserted, draft07 *jsonschema.Schema
}

func compileReaders(t *testing.T, file string) schemaReaders {
	t.Helper()
	var r schemaReaders
	r.annotated = compileAt(t, jsonschema.NewCompiler(), file, "")
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	r.asserted = compileAt(t, c, file, "")
	doc := mustLoad(t, file).(map[string]any)
	doc["$schema"] = "http://json-schema.org/draft-07/schema#"
	c = jsonschema.NewCompiler()
	if err := c.AddResource(fileURL(t, file), doc); err != nil {
		t.Fatal(err)
	}
	r.draft07 = compileAt(t, c, file, "")
	return r
}

// TestSchemaFilesDescribeThemselves checks what a reader of the schema files relies on: the
// draft, an $id naming the file, and a title and description on the schema and on every member.
func TestSchemaFilesDescribeThemselves(t *testing.T) {
	files, err := filepath.Glob("schemas/*.json")
	if err != nil || len(files) != 2 {
		t.Fatalf("schemas/*.json = %v, %v; want cancel-request.json and cancel-result.json", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			doc := mustLoad(t, file).(map[string]any)
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v, want draft 2020-12", doc["$schema"])
			}
			if id, _ := doc["$id"].(string); !strings.HasPrefix(id, "https://") || !strings.HasSuffix(id, "/docs/"+filepath.ToSlash(file)) {
				t.Errorf("$id = %q, want an https URL ending in /docs/%s", id, file)
			}
			for _, k := range []string{"title", "description"} {
				if s, _ := doc[k].(string); s == "" {
					t.Errorf("no %s", k)
				}
			}
			checkDescribed(t, doc, "", false)
		})
	}
}

// checkDescribed wants a description on every member schema under properties, in schema and in
// its $defs, except where a $defs entry only refines the root's members (allOf the root).
func checkDescribed(t *testing.T, schema map[string]any, at string, refines bool) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		p := p.(map[string]any)
		_, isRef := p["$ref"]
		if d, _ := p["description"].(string); d == "" && !isRef && !refines {
			t.Errorf("%s/properties/%s has no description", at, name)
		}
		checkDescribed(t, p, at+"/properties/"+name, refines)
	}
	defs, _ := schema["$defs"].(map[string]any)
	for name, d := range defs {
		d := d.(map[string]any)
		if s, _ := d["description"].(string); s == "" {
			t.Errorf("%s/$defs/%s has no description", at, name)
		}
		_, refinesRoot := d["allOf"]
		checkDescribed(t, d, "/$defs/"+name, refinesRoot)
	}
}

// TestRequestSchemaAgreesWithService validates every request fixture against cancel-request.json
// and compares the verdict with the service's own (cancelevent.ParseRequest): what the service
// accepts the schema accepts, and what it rejects the schema rejects, but for the listed reasons.
func TestRequestSchemaAgreesWithService(t *testing.T) {
	r := compileReaders(t, requestSchemaFile)
	files, err := filepath.Glob(filepath.Join(requestFixtures, "*.json"))
	if err != nil || len(files) < 20 {
		t.Fatalf("request fixtures: %d files, %v", len(files), err)
	}
	seen := map[string]bool{}
	for _, file := range files {
		name := filepath.Base(file)
		seen[name] = true
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			accepts := serviceAccepts(data)
			v, parseErr := parseJSON(data)
			fits := func(s *jsonschema.Schema) error {
				if parseErr != nil {
					return parseErr
				}
				return s.Validate(v)
			}
			annotated, asserted, draft07 := fits(r.annotated), fits(r.asserted), fits(r.draft07)
			if (asserted == nil) != (draft07 == nil) {
				t.Errorf("draft-07 readers disagree with 2020-12 readers asserting formats: %v / %v", draft07, asserted)
			}
			why, beyond := beyondSchema[name]
			lenient, tolerated := beyondContract[name]
			switch {
			case !accepts && !beyond && parseErr != nil:
				t.Errorf("not a JSON value (%v): list it in beyondSchema", parseErr)
			case accepts && annotated != nil:
				t.Errorf("the service accepts it, the schema does not: %v", annotated)
			case accepts && tolerated && asserted == nil:
				t.Errorf("listed in beyondContract (%s) but fits the schema with formats asserted: remove it from the list", lenient)
			case accepts && !tolerated && asserted != nil:
				t.Errorf("the service accepts it, the schema asserting formats does not: %v", asserted)
			case !accepts && beyond && parseErr == nil && asserted != nil:
				t.Errorf("listed in beyondSchema (%s) but the schema rejects it: remove it from the list", why)
			case !accepts && !beyond && asserted == nil:
				t.Errorf("the service rejects it, the schema accepts it: make the schema say why, or list the reason in beyondSchema")
			case !accepts && beyond:
				t.Logf("rejected by the service only: %s", why)
			}
			if beyond && accepts {
				t.Errorf("listed in beyondSchema, but the service accepts it")
			}
		})
	}
	for name := range beyondSchema {
		if !seen[name] {
			t.Errorf("beyondSchema names %s, which is not a fixture", name)
		}
	}
	for name := range beyondContract {
		if !seen[name] {
			t.Errorf("beyondContract names %s, which is not a fixture", name)
		}
	}
}

// TestSchemaExamples checks the examples inside both schema files: request examples are accepted
// by the service too, and each result example fits one outcome.
func TestSchemaExamples(t *testing.T) {
	req := compileReaders(t, requestSchemaFile)
	doc := mustLoad(t, requestSchemaFile).(map[string]any)
	examples, _ := doc["examples"].([]any)
	if len(examples) == 0 {
		t.Error("cancel-request.json has no examples")
	}
	for i, ex := range examples {
		b, err := json.Marshal(ex)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.asserted.Validate(ex); err != nil {
			t.Errorf("request example %d: %v", i, err)
		}
		if !serviceAccepts(b) {
			t.Errorf("request example %d %s is refused by the service", i, b)
		}
	}

	results := resultSchemas(t, false)
	doc = mustLoad(t, resultSchemaFile).(map[string]any)
	examples, _ = doc["examples"].([]any)
	if len(examples) == 0 {
		t.Error("cancel-result.json has no examples")
	}
	for i, ex := range examples {
		if err := results.root.Validate(ex); err != nil {
			t.Errorf("result example %d: %v", i, err)
		}
		fit := 0
		for _, s := range results.outcome {
			if s.Validate(ex) == nil {
				fit++
			}
		}
		if fit != 1 {
			t.Errorf("result example %d fits %d outcomes, want 1", i, fit)
		}
	}
}

// resultSchemaSet is cancel-result.json compiled as a whole and per outcome, formats asserted.
type resultSchemaSet struct {
	root    *jsonschema.Schema
	outcome map[cancelevent.Outcome]*jsonschema.Schema
}

// resultSchemas compiles cancel-result.json; with draft07, as AsyncAPI tools read it: as JSON
// Schema draft-07.
func resultSchemas(t *testing.T, draft07 bool) resultSchemaSet {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if draft07 {
		doc := mustLoad(t, resultSchemaFile).(map[string]any)
		doc["$schema"] = "http://json-schema.org/draft-07/schema#"
		if err := c.AddResource(fileURL(t, resultSchemaFile), doc); err != nil {
			t.Fatal(err)
		}
	}
	set := resultSchemaSet{root: compileAt(t, c, resultSchemaFile, ""), outcome: map[cancelevent.Outcome]*jsonschema.Schema{}}
	for _, o := range cancelevent.Outcomes {
		set.outcome[o] = compileAt(t, c, resultSchemaFile, "/$defs/"+string(o))
	}
	return set
}

// TestResultSchemaFieldsAreResultData compares the result schema's members with the JSON fields
// of cancelevent.ResultData and ErrorData: a field added to the code without the schema (or the
// other way round) fails here, even before a test publishes it.
func TestResultSchemaFieldsAreResultData(t *testing.T) {
	doc := mustLoad(t, resultSchemaFile)
	for _, c := range []struct {
		ptr string
		typ reflect.Type
	}{
		{"", reflect.TypeFor[cancelevent.ResultData]()},
		{"/$defs/error", reflect.TypeFor[cancelevent.ErrorData]()},
	} {
		schema := object(t, doc, c.ptr)
		var fields, required []string
		for f := range c.typ.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Fatalf("%s.%s has no JSON name", c.typ.Name(), f.Name)
			}
			fields = append(fields, name)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
		var props []string
		for name := range schema["properties"].(map[string]any) {
			props = append(props, name)
		}
		var req []string
		for _, r := range schema["required"].([]any) {
			req = append(req, r.(string))
		}
		slices.Sort(fields)
		slices.Sort(props)
		slices.Sort(required)
		slices.Sort(req)
		if !slices.Equal(fields, props) {
			t.Errorf("%s: schema%s properties %v, want the JSON fields %v", c.typ.Name(), c.ptr, props, fields)
		}
		if !slices.Equal(required, req) {
			t.Errorf("%s: schema%s required %v, want the fields without omitempty %v", c.typ.Name(), c.ptr, req, required)
		}
		if schema["additionalProperties"] != false {
			t.Errorf("schema%s: additionalProperties = %v, want false", c.ptr, schema["additionalProperties"])
		}
	}
}

// TestResultSchemaAcceptsBuiltResults validates results built by cancelevent itself, at the
// edges the service can reach (ids cut to 128 bytes, a message cut to 512, the final result of a
// followed operation), and checks that each outcome's schema refuses the others' data.
func TestResultSchemaAcceptsBuiltResults(t *testing.T) {
	readers := map[string]resultSchemaSet{"2020-12": resultSchemas(t, false), "draft-07": resultSchemas(t, true)}
	valid := cancelevent.Request{ID: "req-0001", Source: "/my-service", PublisherID: "contoso", OfferID: "contoso-offer"}
	invalid := cancelevent.Request{ID: "req-0002", Source: "//orders.example/svc", PublisherID: strings.Repeat("p", 200), OfferID: "../etc"}
	empty := cancelevent.Request{ID: "req-0003", Source: "/my-service"}
	const location = "https://cloudpartner.azure.com/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31"
	cases := []struct {
		name  string
		req   cancelevent.Request
		o     cancelevent.Outcome
		final bool
		d     cancelevent.ResultData
	}{
		{name: "cancelled", req: valid, o: cancelevent.Cancelled, d: cancelevent.ResultData{StatusCode: 200, CorrelationID: "c-1", Attempts: 1}},
		{name: "cancelling", req: valid, o: cancelevent.Cancelling,
			d: cancelevent.ResultData{StatusCode: 202, Location: location, OperationID: "contoso$contoso-offer$2$preview", CorrelationID: "c-1", Attempts: 2}},
		{name: "cancelling without location", req: valid, o: cancelevent.Cancelling, d: cancelevent.ResultData{StatusCode: 202, Attempts: 1}},
		{name: "failed 404", req: valid, o: cancelevent.Failed,
			d: cancelevent.ResultData{StatusCode: 404, CorrelationID: "c-1", Attempts: 1, Error: &cancelevent.ErrorData{Code: "OfferNotFound", Message: "Offer not found."}}},
		{name: "failed transport error, long message", req: valid, o: cancelevent.Failed,
			d: cancelevent.ResultData{Attempts: 5, Error: &cancelevent.ErrorData{Code: "transport_error", Message: strings.Repeat("é", 400)}}},
		{name: "failed invalid, long ids", req: invalid, o: cancelevent.Failed,
			d: cancelevent.ResultData{Attempts: 1, Error: &cancelevent.ErrorData{Code: cancelevent.CodeInvalidRequest, Message: "publisherId must be ..."}}},
		{name: "failed invalid, empty ids", req: empty, o: cancelevent.Failed,
			d: cancelevent.ResultData{Attempts: 1, Error: &cancelevent.ErrorData{Code: cancelevent.CodeInvalidRequest, Message: "publisherId must be ..."}}},
		{name: "final cancelled", req: valid, o: cancelevent.Cancelled, final: true,
			d: cancelevent.ResultData{StatusCode: 200, Location: location, OperationID: "contoso$contoso-offer$2$preview", Attempts: 3, OperationStatus: "canceled"}},
		{name: "final failed", req: valid, o: cancelevent.Failed, final: true,
			d: cancelevent.ResultData{StatusCode: 200, Location: location, Attempts: 3, OperationStatus: "failed", Messages: []string{"step 2 failed"},
				Error: &cancelevent.ErrorData{Code: "operation_failed", Message: "the operation ended failed: step 2 failed"}}},
		{name: "final failed at the follow deadline", req: valid, o: cancelevent.Failed, final: true,
			d: cancelevent.ResultData{Location: location, Attempts: 120, Error: &cancelevent.ErrorData{Code: "follow_timeout", Message: "the operation was still running"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			build := cancelevent.NewResult
			if c.final {
				build = cancelevent.NewFinalResult
			}
			ev, err := build("/cpcancel", c.req, c.o, c.d, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			data, err := parseJSON(ev.Data())
			if err != nil {
				t.Fatal(err)
			}
			for reader, set := range readers {
				if err := set.root.Validate(data); err != nil {
					t.Errorf("%s: %s\n%v", reader, ev.Data(), err)
				}
				for o, s := range set.outcome {
					err := s.Validate(data)
					switch {
					case o == c.o && err != nil:
						t.Errorf("%s: does not fit $defs/%s: %s\n%v", reader, o, ev.Data(), err)
					case o != c.o && err == nil:
						t.Errorf("%s: %s data also fits $defs/%s: %s", reader, c.o, o, ev.Data())
					}
				}
			}
		})
	}
}

// TestResultSchemaListsEveryCode checks that the error codes the result schema names as
// cpcancel's own are exactly those cpcancel writes: cancelevent.Codes and http_<status>.
func TestResultSchemaListsEveryCode(t *testing.T) {
	code := object(t, mustLoad(t, resultSchemaFile), "/$defs/error/properties/code")
	desc, _ := code["description"].(string)
	const lead = "one of cpcancel's: "
	_, list, ok := strings.Cut(desc, lead)
	if !ok || !strings.HasSuffix(list, ".") {
		t.Fatalf("description %q does not list cpcancel's codes after %q, ending with a full stop", desc, lead)
	}
	got := strings.Split(strings.TrimSuffix(list, "."), ", ")
	want := append([]string{"http_<status>"}, cancelevent.Codes...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the schema lists the codes\n%q\nwant (cancelevent.Codes and http_<status>)\n%q", got, want)
	}
	if h := cancelevent.HTTPCode(503); h != "http_503" {
		t.Errorf("HTTPCode(503) = %q, want http_503, as http_<status> promises", h)
	}
}
