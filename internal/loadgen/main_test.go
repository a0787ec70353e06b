package loadgen_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
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
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := cli.Run(ctx, nil, metrics.Build{Version: "loadgen-test"}, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpcancel child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
