// Command compare runs load tool command lines in turn, for several rounds, and prints a table of
// each one's medians: throughput, its ratio to the first command's in the same round, the CPU per
// result of each process, peak RSS and p99 latency. Interleaving spreads a noisy machine's drift
// over every command, so that the ratios hold where single figures do not; it is how the tables
// in docs/performance.md were made.
//
//	go build -o loadgen ./cmd/loadgen && go build -o floor ./bench/floor
//	go run ./bench/compare -runs 5 \
//	  './loadgen -nats-process -prefill -n 20000 -concurrency 256 -env CPCANCEL_CONCURRENCY_MIN=256 -env CPCANCEL_RESULT_MODE=structured' \
//	  './loadgen -nats-process -peer ./floor -n 20000 -concurrency 256'
//
// Each COMMAND runs with sh -c and -json added at its end, so it must be a load tool command line
// (any binary of it: before and after a change, say). A run that fails, or loses or duplicates a
// result, stops the comparison with the end of what it printed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cpcancel/cpcancel/internal/loadgen"
)

func main() {
	runs := flag.Int("runs", 5, "rounds: each command runs once a round, in the order given (1 to 100)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound of each run")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: compare [-runs N] [-timeout D] COMMAND...\n\n"+
			"Each COMMAND is a load tool command line; compare adds -json to it.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *runs < 1 || *runs > 100 || *timeout <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	figures, err := measure(ctx, flag.Args(), *runs, *timeout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, flag.Args(), figures)
}

// measure runs every command once a round, in order, and returns figures[command][round].
func measure(ctx context.Context, commands []string, runs int, timeout time.Duration, progress io.Writer) ([][]loadgen.Figures, error) {
	figures := make([][]loadgen.Figures, len(commands))
	for round := range runs {
		for i, command := range commands {
			f, err := runOnce(ctx, command, timeout)
			if err != nil {
				return nil, fmt.Errorf("round %d, #%d: %w", round+1, i+1, err)
			}
			fmt.Fprintf(progress, "round %d/%d  #%d  %.0f requests/s\n", round+1, runs, i+1, f.Throughput)
			figures[i] = append(figures[i], f)
		}
	}
	return figures, nil
}

// runOnce runs one load tool command line with -json and decodes what it wrote.
func runOnce(ctx context.Context, command string, timeout time.Duration) (loadgen.Figures, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", command+" -json")
	// The load tool stops its children at SIGTERM; the whole group gets it, in case sh is still
	// between them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	// The figures are one line of JSON; a command that writes more is not the load tool.
	stdout, stderr := &tail{max: 64 << 10}, &tail{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		err = fmt.Errorf("not done within %s", timeout)
	}
	if err != nil {
		return loadgen.Figures{}, fmt.Errorf("%s: %w\n%s", command, err, stderr)
	}
	var f loadgen.Figures
	if err := json.Unmarshal(stdout.b, &f); err != nil {
		return loadgen.Figures{}, fmt.Errorf("%s: not the load tool's -json figures (%v)\n%s", command, err, stderr)
	}
	if f.Results == 0 || f.Lost > 0 || f.Duplicated > 0 {
		return loadgen.Figures{}, fmt.Errorf("%s: %d results of %d requests, %d lost, %d duplicated\n%s",
			command, f.Results, f.Requests, f.Lost, f.Duplicated, stderr)
	}
	return f, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

// printTable writes one Markdown row per command, of medians over its runs, then the commands.
// The ratio is the median, over rounds, of the command's throughput over the first command's in
// the same round.
func printTable(w io.Writer, commands []string, figures [][]loadgen.Figures) {
	fmt.Fprintf(w, "medians of %d runs, interleaved\n\n", len(figures[0]))
	fmt.Fprintln(w, "| # | throughput | runs | ratio to #1 | CPU per result | consumer peak RSS | p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for i, runs := range figures {
		throughput := make([]float64, len(runs))
		ratios := make([]float64, len(runs))
		rss := make([]float64, len(runs))
		p99 := make([]float64, len(runs))
		for r, f := range runs {
			throughput[r] = f.Throughput
			ratios[r] = f.Throughput / figures[0][r].Throughput
			rss[r] = float64(f.PeakRSS) / (1 << 20)
			p99[r] = f.P99.Seconds()
		}
		fmt.Fprintf(w, "| %d | %s requests/s | %s–%s | %.2f | %s | %.0f MiB | %.2f s |\n", i+1,
			thousands(median(throughput)), thousands(slices.Min(throughput)), thousands(slices.Max(throughput)), median(ratios),
			cpuText(runs), median(rss), median(p99))
	}
	fmt.Fprintln(w)
	for i, c := range commands {
		fmt.Fprintf(w, "%d. `%s`\n", i+1, c)
	}
}

// cpuText is each process's median CPU per result, in the order of the first run, and their sum.
func cpuText(runs []loadgen.Figures) string {
	var parts []string
	all := 0.0
	for _, p := range runs[0].CPU {
		var per []float64
		for _, f := range runs {
			for _, q := range f.CPU {
				if q.Process == p.Process {
					per = append(per, float64(q.PerResult)/float64(time.Microsecond))
				}
			}
		}
		m := median(per)
		all += m
		parts = append(parts, fmt.Sprintf("%s %.0f µs", p.Process, m))
	}
	if len(parts) == 0 {
		return "not measured"
	}
	return fmt.Sprintf("%s = %.0f µs", strings.Join(parts, " + "), all)
}

// thousands is v rounded, with a comma between thousands: 6,750.
func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// median of v, which is not empty.
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
