package service_test

import (
	"os"
	"testing"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// childEnv makes the test binary run cpcancel itself, as `consumer` would, so that failure tests
// can kill a real process.
const childEnv = "CPCANCEL_TEST_CHILD"

func TestMain(m *testing.M) {
	natstest.MaybeRunServerProcess()
	if os.Getenv(childEnv) == "1" {
		os.Exit(cli.Main("child", nil, metrics.Build{Version: "child"}))
	}
	os.Exit(m.Run())
}
