// Command consumer runs cpcancel: it consumes CloudEvents cancel requests from NATS JetStream,
// calls the Cloud Partner Portal Cancel operation API and publishes one result per request.
// `consumer -h` lists the subcommands and every configuration variable.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// Set at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], metrics.Build{Version: version, Revision: revision}, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
