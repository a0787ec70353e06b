package cli

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150)
	if got := setGCPercent(); got != "150" {
		t.Errorf("with GOGC=150: setGCPercent() = %q, want 150", got)
	}
	if prev := debug.SetGCPercent(150); prev != 150 {
		t.Errorf("with GOGC=150 the GC percent became %d, want it left at 150", prev)
	}

	os.Unsetenv("GOGC") // t.Setenv restores it
	if got := setGCPercent(); got != "200" {
		t.Errorf("without GOGC: setGCPercent() = %q, want 200", got)
	}
	if prev := debug.SetGCPercent(100); prev != defaultGCPercent {
		t.Errorf("without GOGC the GC percent is %d, want %d", prev, defaultGCPercent)
	}
}
