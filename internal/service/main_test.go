package service_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// childEnv makes the test binary run cpcancel itself, as `consumer` would, so that failure tests
// can kill a real process.
const childEnv = "CPCANCEL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := cli.Run(ctx, nil, metrics.Build{Version: "child"}, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
