package chaos_test

import (
	"io"
	"os"
	"testing"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// replicaEnv makes the test binary run cpcancel itself, as `consumer` does, so that the chaos test
// can kill real processes.
const replicaEnv = "CPCANCEL_TEST_CHAOS_REPLICA"

func TestMain(m *testing.M) {
	natstest.MaybeRunServerProcess()
	if os.Getenv(replicaEnv) == "1" {
		// Standard input is a pipe from the test: when the test process goes away, so does this one.
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(3)
		}()
		os.Exit(cli.Main("cpcancel", nil, metrics.Build{Version: "chaos", Revision: "test"}))
	}
	os.Exit(m.Run())
}
