package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCompareLoadTool builds the load tool and compares two of its command lines over two rounds:
// every run's figures come back, and the table holds a row per command with its processes' CPU.
func TestCompareLoadTool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "loadgen")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/cpcancel/cpcancel/cmd/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("build the load tool: %v\n%s", err, out)
	}
	commands := []string{bin + " -n 200 -concurrency 16", bin + " -n 200 -concurrency 16 -nats-process"}
	figures, err := measure(ctx, commands, 2, time.Minute, io.Discard)
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	for i, runs := range figures {
		if len(runs) != 2 {
			t.Fatalf("command #%d: %d runs, want 2", i+1, len(runs))
		}
		for _, f := range runs {
			if f.Consumer != "cpcancel" || f.Requests != 200 || f.Results != 200 || f.Throughput <= 0 || f.P99 <= 0 {
				t.Errorf("command #%d: figures %+v; want cpcancel, 200 requests and results, throughput and p99 above 0", i+1, f)
			}
		}
	}
	var table strings.Builder
	printTable(&table, commands, figures)
	t.Logf("table:\n%s", table.String())
	for _, want := range []string{
		"medians of 2 runs, interleaved",
		"| 1 | ", "| 1.00 | cpcancel ", "| 2 | ", " + nats-server ", " + load tool and emulator ", " µs = ",
		"1. `" + commands[0] + "`", "2. `" + commands[1] + "`",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// TestRunOnceRefuses: a run that fails, writes no figures, loses a result or outlives its bound
// stops the comparison, with the end of what it printed.
func TestRunOnceRefuses(t *testing.T) {
	figures := func(results, lost int) string {
		return `echo '{"consumer":"cpcancel","requests":5,"results":` + strconv.Itoa(results) + `,"lost":` + strconv.Itoa(lost) + `,"throughput":10}'; :`
	}
	for _, tc := range []struct {
		name, command string
		timeout       time.Duration
		want          []string
	}{
		{"fails", "echo lost 3 of 5 >&2; exit 3; :", time.Minute, []string{"exit status 3", "lost 3 of 5"}},
		{"no figures", "echo throughput 10 requests/s; :", time.Minute, []string{"not the load tool's -json figures"}},
		{"too much output", "head -c 100000 /dev/zero | tr '\\0' x; :", time.Minute, []string{"not the load tool's -json figures"}},
		{"lost", figures(4, 1), time.Minute, []string{"4 results of 5 requests, 1 lost"}},
		{"no result", figures(0, 0), time.Minute, []string{"0 results of 5 requests"}},
		{"too long", "echo started >&2; sleep 60; :", 300 * time.Millisecond, []string{"not done within 300ms", "started"}},
		{"only the end of its output", "head -c 10000 /dev/zero | tr '\\0' x >&2; echo the end >&2; exit 1; :", time.Minute, []string{"the end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := runOnce(context.Background(), tc.command, tc.timeout)
			if err == nil {
				t.Fatal("runOnce: no error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("runOnce: %v; want it to say %q", err, want)
				}
			}
			if len(err.Error()) > 5<<10 {
				t.Errorf("runOnce's error holds %d bytes; want the output's last 4 KiB and the command", len(err.Error()))
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("runOnce took %s", took)
			}
		})
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.4: "999", 6750: "6,750", 1234567.5: "1,234,568", -4321: "-4,321"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}
