package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// The documents under test, relative to this package's directory.
const (
	asyncAPIFile      = "asyncapi.yaml"
	requestSchemaFile = "schemas/cancel-request.json"
	resultSchemaFile  = "schemas/cancel-result.json"
)

// loadDoc reads a JSON or YAML document as the generic values jsonschema validates: maps,
// slices, strings, json.Number, bools and nil. A JSON document must be valid UTF-8, as RFC 8259
// §8.1 requires of a JSON text, and hold exactly one value.
func loadDoc(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(path, ".yaml") {
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if b, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("%s: not JSON-compatible: %w", path, err)
		}
	}
	return parseJSON(b)
}

func parseJSON(b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("not valid UTF-8, so not a JSON text")
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

func mustLoad(t *testing.T, path string) any {
	t.Helper()
	v, err := loadDoc(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fileURL is the absolute file URL of a path relative to this package.
func fileURL(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// asyncAPICompiler compiles schemas inside asyncapi.yaml and the files they reference. AsyncAPI
// 3.0 Schema Objects are a superset of JSON Schema draft-07, which asserts formats, so format is
// asserted here; the files under schemas/ declare draft 2020-12 themselves.
func asyncAPICompiler(t *testing.T) *jsonschema.Compiler {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(fileURL(t, asyncAPIFile), mustLoad(t, asyncAPIFile)); err != nil {
		t.Fatal(err)
	}
	return c
}

// compileAt compiles the schema at the JSON pointer ptr ("" for the root) of file.
func compileAt(t *testing.T, c *jsonschema.Compiler, file, ptr string) *jsonschema.Schema {
	t.Helper()
	loc := fileURL(t, file)
	if ptr != "" {
		loc += "#" + ptr
	}
	s, err := c.Compile(loc)
	if err != nil {
		t.Fatalf("compile %s: %v", loc, err)
	}
	return s
}

// lookup follows a JSON pointer ("" or "/a/b") through doc.
func lookup(doc any, ptr string) (any, error) {
	if ptr == "" {
		return doc, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, fmt.Errorf("%q is not a JSON pointer", ptr)
	}
	v := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = n[tok]; !ok {
				return nil, fmt.Errorf("%q: no member %q", ptr, tok)
			}
		case []any:
			var i int
			if _, err := fmt.Sscanf(tok, "%d", &i); err != nil || i < 0 || i >= len(n) || fmt.Sprint(i) != tok {
				return nil, fmt.Errorf("%q: no element %q", ptr, tok)
			}
			v = n[i]
		default:
			return nil, fmt.Errorf("%q: %q is inside a scalar", ptr, tok)
		}
	}
	return v, nil
}

// object returns the object at ptr in doc, failing the test if there is none.
func object(t *testing.T, doc any, ptr string) map[string]any {
	t.Helper()
	v, err := lookup(doc, ptr)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is a %T, want an object", ptr, v)
	}
	return m
}

// ref returns the $ref of a Reference Object, or "".
func ref(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["$ref"].(string)
	return s
}
