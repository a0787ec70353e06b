package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Figures is what one load run measured, as the load tool's -json writes it: the report's
// figures and, where the stack can tell, the consumer's peak RSS and each process's CPU per result.
type Figures struct {
	Consumer   string        `json:"consumer"`
	Requests   int           `json:"requests"`
	Results    int           `json:"results"`
	Lost       int           `json:"lost"`
	Duplicated int           `json:"duplicated"`
	Throughput float64       `json:"throughput"` // results stored per second
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	PeakRSS    int64         `json:"peak_rss_bytes,omitempty"`
	// CPU is each process's CPU time per result, the consumer's first.
	CPU []ProcessCPU `json:"cpu_per_result,omitempty"`
}

// ProcessCPU is one process's CPU time (user and system, start-up included) per result stored.
type ProcessCPU struct {
	Process   string        `json:"process"`
	PerResult time.Duration `json:"ns"`
}

// Figures is r with what s measured of its processes; call it while the children still run.
func (s *Stack) Figures(r Report) Figures {
	f := Figures{
		Consumer: s.ConsumerName(), Requests: r.Requests, Results: r.Results, Lost: r.Lost,
		Duplicated: r.Duplicates, Throughput: r.Throughput(), P50: r.P50, P99: r.P99,
	}
	if rss, ok := s.ChildPeakRSS(); ok {
		f.PeakRSS = rss
	}
	consumer, natsServer, self, ok := s.CPU()
	if !ok || r.Results == 0 {
		return f
	}
	per := func(d time.Duration) time.Duration { return d / time.Duration(r.Results) }
	f.CPU = []ProcessCPU{{f.Consumer, per(consumer)}}
	if s.SeparateNATS {
		f.CPU = append(f.CPU, ProcessCPU{"nats-server", per(natsServer)}, ProcessCPU{"load tool and emulator", per(self)})
	} else {
		f.CPU = append(f.CPU, ProcessCPU{"load tool, emulator and nats-server", per(self)})
	}
	return f
}

// PrintProcesses writes, for a person, what the report does not: peak RSS and CPU per result.
func (f Figures) PrintProcesses(w io.Writer) {
	if f.PeakRSS > 0 {
		fmt.Fprintf(w, "%s peak RSS %.1f MiB\n", f.Consumer, float64(f.PeakRSS)/(1<<20))
	}
	if len(f.CPU) == 0 {
		return
	}
	parts := make([]string, len(f.CPU))
	for i, p := range f.CPU {
		parts[i] = p.Process + " " + p.PerResult.Round(100*time.Nanosecond).String()
	}
	fmt.Fprintf(w, "CPU per result: %s\n", strings.Join(parts, "  "))
}
