// Package cli is the command line of the consumer binary: the service itself, -dev mode, and the
// publish and emulator subcommands.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

// Main runs the command named by args until SIGINT or SIGTERM, as a process does: it reports an
// error on stderr after name and returns the exit status.
func Main(name string, args []string, build metrics.Build) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, args, build, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return exitStatus(err)
	}
	return 0
}

// Run runs the command named by args (without the program name) until ctx is done.
func Run(ctx context.Context, args []string, build metrics.Build, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "publish":
			return runPublish(ctx, args[1:], stdout, stderr)
		case "emulator":
			return runEmulator(ctx, args[1:], stderr)
		case "status":
			return runStatus(ctx, args[1:], stdout, stderr)
		case "deadletter":
			return runDeadLetter(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "run on an embedded JetStream server and the built-in API emulator, publish one sample request per outcome and print the results")
	trace := fs.Bool("trace", false, "with -dev: print each span as it ends (exported to OTEL_EXPORTER_OTLP_ENDPOINT instead when that is set)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { usage(fs, stdout) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown command %q (want publish, emulator, status or deadletter; -h for help)", fs.Arg(0))
	}
	if *version {
		fmt.Fprintf(stdout, "cpcancel %s (revision %s)\n", build.Version, build.Revision)
		return nil
	}
	if *trace && !*dev {
		return errors.New("-trace is for -dev; the service traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/tracing.md)")
	}
	if *dev {
		return runDev(ctx, build, *trace, stdout, stderr)
	}
	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := cfg.Log.Logger(stderr)
	tp, err := tracing.New(ctx, os.LookupEnv, tracing.Options{Version: build.Version})
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log.Info("starting cpcancel", "version", build.Version, "revision", build.Revision, "gogc", setGCPercent(),
		"tracing", tp.Tracer() != nil)
	return service.New(cfg, build, log).WithTracing(tp).Run(ctx)
}

// defaultGCPercent is the garbage collector's target unless GOGC is set. cpcancel's live heap is
// small (3–4 MiB with 256 requests in flight) and it allocates ~25 KiB per request, so at Go's
// default of 100 the collector runs about 40 times a second under load, mostly for its fixed
// costs; 200 halves that for a few MiB more memory. GOMEMLIMIT (set from the container's limit
// in deploy/kubernetes) still bounds the heap: near it the collector runs as often as it must.
const defaultGCPercent = 200

// setGCPercent applies defaultGCPercent unless GOGC is set, and returns the target in force.
func setGCPercent() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `cpcancel consumes CloudEvents cancel requests from NATS JetStream, calls the Cloud Partner
Portal Cancel operation API and publishes one result event per request.

Usage:
  consumer [-dev [-trace]] [-version]
                                  run the service, configured by the environment below
  consumer publish -h             publish a cancel request
  consumer emulator -h            run the Cloud Partner API emulator on its own
  consumer status -h              print a request's state, results, following and dead letters
  consumer deadletter -h          list, show and replay dead letters

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nEnvironment:\n")
	config.Usage(w)
}

// discard is a logger for quiet subcommands.
var discard = slog.New(slog.DiscardHandler)
