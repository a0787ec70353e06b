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

// TestMain lets the test binary be the children a Stack starts (it re-executes itself), as
// cmd/loadgen's binary is: cpcancel configured by the environment the Stack set (ChildEnv=1), or
// nats-server (NATSChildEnv), each stopped by the Stack's SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv(loadgen.ChildEnv) == "1" {
		os.Exit(cli.Main("cpcancel child", nil, metrics.Build{Version: "loadgen-test"}))
	}
	if listen := os.Getenv(loadgen.NATSChildEnv); listen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := loadgen.RunNATS(ctx, listen, os.Getenv(loadgen.NATSChildDirEnv))
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "nats-server child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
