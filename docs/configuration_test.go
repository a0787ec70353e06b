package docs_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/cpcancel/cpcancel/internal/config"
)

// TestConfigurationReference fails when the variables' reference in configuration.md is not what
// the tags in internal/config say: a variable added, renamed, or given another default or
// description there must show here.
func TestConfigurationReference(t *testing.T) {
	const page = "configuration.md"
	got, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.UpdateReference(got)
	if err != nil {
		t.Fatalf("%s: %v", page, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("docs/%s differs from the tags in internal/config: run go generate ./internal/config", page)
	}
	for _, v := range config.Variables() {
		if !bytes.Contains(got, []byte("| `"+v.Name+"` |")) {
			t.Errorf("docs/%s has no row for %s", page, v.Name)
		}
	}
}
