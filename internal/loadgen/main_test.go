package loadgen_test

import (
	"os"
	"testing"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/loadgen"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// TestMain lets the test binary be the cpcancel child a Stack starts (it re-executes itself with
// loadgen.ChildEnv=1), as cmd/loadgen's binary is: cpcancel configured by the environment the
// Stack set, stopped by the Stack's SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv(loadgen.ChildEnv) == "1" {
		os.Exit(cli.Main("cpcancel child", nil, metrics.Build{Version: "loadgen-test"}))
	}
	os.Exit(m.Run())
}
