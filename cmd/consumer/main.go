// Command consumer runs cpcancel: it consumes CloudEvents cancel requests from NATS JetStream,
// calls the Cloud Partner Portal Cancel operation API and publishes one result per request.
// `consumer -h` lists the subcommands and every configuration variable.
package main

import (
	"os"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// Set at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = "unknown"
)

func main() {
	os.Exit(cli.Main("consumer", os.Args[1:], metrics.Build{Version: version, Revision: revision}))
}
