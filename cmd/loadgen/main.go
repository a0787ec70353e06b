// Command loadgen measures cpcancel end to end on this machine: by default it starts an embedded
// JetStream server and the API emulator with the chosen latency, runs cpcancel as a child process,
// publishes -n requests and prints throughput, latency percentiles, lost/duplicated results and
// cpcancel's peak RSS. With -nats it targets a NATS server where cpcancel already runs. With
// -prefill the requests are all stored before cpcancel starts; with -peer another program
// consumes them instead of cpcancel. With -json the figures go to standard output as one JSON
// object (the report for a person goes to standard error), for bench/compare.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/cpcancel/cpcancel/internal/cli"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/loadgen"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	run := realMain
	switch {
	case os.Getenv(loadgen.ChildEnv) == "1":
		run = runChild
	case os.Getenv(loadgen.NATSChildEnv) != "":
		run = func(ctx context.Context) error {
			return loadgen.RunNATS(ctx, os.Getenv(loadgen.NATSChildEnv), os.Getenv(loadgen.NATSChildDirEnv))
		}
	}
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	var s loadgen.Stack
	var o loadgen.Options
	flag.IntVar(&o.Requests, "n", 5000, "requests to publish")
	flag.Float64Var(&o.Rate, "rate", 0, "offered requests/s (0: as fast as possible)")
	flag.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "bound of the whole run")
	flag.StringVar(&o.Offer, "offer", "loadgen-offer", "offer id of every request (emulator catalogue: sync* answers 200, others 202)")
	flag.StringVar(&s.NATSURL, "nats", "", "NATS URL where cpcancel already runs (empty: start everything here)")
	flag.DurationVar(&s.Latency, "latency", 0, "API emulator latency (embedded stack only)")
	flag.BoolVar(&s.SeparateNATS, "nats-process", false, "run nats-server in a process of its own, so that its CPU is measured apart (embedded stack only)")
	flag.BoolVar(&s.Prefill, "prefill", false, "publish every request and wait for its ack before the consumer starts; elapsed then runs from the consumer's start, and latency includes the wait in the stream (embedded stack only)")
	flag.StringVar(&s.Peer, "peer", "", "shell `COMMAND` to consume instead of cpcancel, with CPCANCEL_NATS_URL, CPCANCEL_CLOUDPARTNER_BASE_URL, CPCANCEL_CLOUDPARTNER_TOKEN, CPCANCEL_REQUEST_STREAM, CPCANCEL_REQUEST_SUBJECT, CPCANCEL_CONSUMER, CPCANCEL_RESULT_SUBJECT_PREFIX, CPCANCEL_CONCURRENCY and -env in its environment; implies -prefill (embedded stack only)")
	flag.IntVar(&s.Concurrency, "concurrency", 2048, "CPCANCEL_CONCURRENCY of the cpcancel (or peer) started here (the default's)")
	flag.StringVar(&s.CPUProfile, "cpuprofile", "", "write a CPU profile of the cpcancel started here to this file")
	flag.StringVar(&s.MemProfile, "memprofile", "", "write an allocation profile of the cpcancel started here to this file when it stops")
	flag.Func("env", "`KEY=VALUE` added to the environment of the cpcancel (or peer) started here, e.g. GOMEMLIMIT=30MiB or CPCANCEL_RESULT_MODE=structured (repeatable)", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		s.Env = append(s.Env, v)
		return nil
	})
	selfProfile := flag.String("self-cpuprofile", "", "write a CPU profile of this process (nats-server, emulator, load) to this file")
	jsonOut := flag.Bool("json", false, "write the figures to standard output as one JSON object, and the report to standard error")
	flag.Parse()
	var out io.Writer = os.Stdout
	if *jsonOut {
		out = os.Stderr
	}
	defaults := config.Default().Streams // the names the cpcancel started here, or targeted with -nats, uses
	o.RequestSubject, o.ResultStream = defaults.RequestSubject, defaults.ResultStream

	js, stopStack, err := s.Start(ctx)
	if err != nil {
		return err
	}
	defer stopStack()
	fmt.Fprintf(out, "loadgen: %d requests, rate %s, API latency %s, concurrency %d\n", o.Requests, rateText(o.Rate), s.Latency, s.Concurrency)
	if s.Prefill {
		o.StartConsumer = s.StartConsumer
		fmt.Fprintf(out, "prefilled: %s starts once every request is stored; elapsed runs from its start, latency includes the wait in the stream\n", s.ConsumerName())
	}
	stopProfile, err := startCPUProfile(*selfProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	o.ConsumerExited = s.ConsumerExited()
	r, err := loadgen.Run(ctx, js, o)
	figures := s.Figures(r)
	r.Print(out)
	figures.PrintProcesses(out)
	if *jsonOut {
		if jerr := json.NewEncoder(os.Stdout).Encode(figures); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

func rateText(r float64) string {
	if r == 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}

// runChild is cpcancel itself, configured by the environment the parent set.
func runChild(ctx context.Context) error {
	stopProfile, err := startCPUProfile(os.Getenv("CPCANCEL_LOADGEN_CPUPROFILE"))
	if err != nil {
		return err
	}
	defer stopProfile()
	err = cli.Run(ctx, nil, metrics.Build{Version: "loadgen"}, os.Stdout, os.Stderr)
	if path := os.Getenv("CPCANCEL_LOADGEN_MEMPROFILE"); path != "" {
		if werr := writeAllocProfile(path); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// writeAllocProfile writes the allocations sampled since the process started to path.
func writeAllocProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile profiles this process into path until stop is called; an empty path does nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
