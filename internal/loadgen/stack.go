package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
)

// ChildEnv, set to 1, makes the load tool's binary run cpcancel itself (see Stack).
const ChildEnv = "CPCANCEL_LOADGEN_CHILD"

// NATSChildEnv, set to host:port, makes the load tool's binary run nats-server with JetStream
// itself, listening there and storing in NATSChildDirEnv (see Stack.SeparateNATS and RunNATS).
const (
	NATSChildEnv    = "CPCANCEL_LOADGEN_NATS_LISTEN"
	NATSChildDirEnv = "CPCANCEL_LOADGEN_NATS_DIR"
)

// Stack is what a load run talks to: an existing NATS server with cpcancel on it, or one started
// here: an embedded JetStream server and the API emulator in this process, and cpcancel in a
// child process (this binary run again with ChildEnv=1), so that its memory can be measured alone.
type Stack struct {
	NATSURL     string
	Latency     time.Duration
	Concurrency int
	// CPUProfile, when set, makes the cpcancel child write a CPU profile there.
	CPUProfile string
	// Env is added to the cpcancel child's environment (KEY=VALUE), after the settings above.
	Env []string
	// MemProfile, when set, makes the cpcancel child write an allocation profile there as it stops.
	MemProfile string
	// SeparateNATS runs nats-server in a child process of its own instead of in this one, so that
	// its CPU is measured apart from the load's and the emulator's, as in a deployment.
	SeparateNATS bool

	child, natsChild *exec.Cmd
}

// Start connects to NATSURL, or starts the self-contained stack; stop undoes it.
func (s *Stack) Start(ctx context.Context) (js jetstream.JetStream, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	url := s.NATSURL
	if url == "" {
		if url, err = s.startLocal(&stops); err != nil {
			return nil, stop, err
		}
	}
	nc, err := nats.Connect(url, nats.Name("cpcancel-loadgen"))
	if err != nil {
		return nil, stop, fmt.Errorf("connect: %w", err)
	}
	stops = append(stops, nc.Close)
	if js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, stop, err
	}
	if s.child != nil {
		err = waitConsuming(ctx, js)
	}
	return js, stop, err
}

func (s *Stack) startLocal(stops *[]func()) (string, error) {
	dir, err := os.MkdirTemp("", "cpcancel-loadgen-")
	if err != nil {
		return "", err
	}
	*stops = append(*stops, func() { os.RemoveAll(dir) })
	natsURL, err := s.startNATS(dir, stops)
	if err != nil {
		return "", err
	}

	// A token that no id or location contains: cpcancel refuses a location holding its token.
	token := rand.Text()
	emu, err := emulator.Listen("127.0.0.1:0", emulator.Options{Token: token, Latency: s.Latency, OperationDuration: time.Minute})
	if err != nil {
		return "", err
	}
	*stops = append(*stops, func() { emu.Close() })

	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), ChildEnv+"=1",
		"CPCANCEL_NATS_URL="+natsURL,
		"CPCANCEL_CLOUDPARTNER_BASE_URL="+emu.URL,
		"CPCANCEL_CLOUDPARTNER_TOKEN="+token, "CPCANCEL_CLOUDPARTNER_TOKEN_FILE=",
		"CPCANCEL_HTTP_ADDR=127.0.0.1:0",
		"CPCANCEL_CONCURRENCY="+strconv.Itoa(s.Concurrency),
		"CPCANCEL_LOG_LEVEL=warn",
		"CPCANCEL_LOADGEN_CPUPROFILE="+s.CPUProfile,
		"CPCANCEL_LOADGEN_MEMPROFILE="+s.MemProfile)
	cmd.Env = append(cmd.Env, s.Env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start cpcancel: %w", err)
	}
	s.child = cmd
	*stops = append(*stops, func() { stopChild(cmd) })
	return natsURL, nil
}

// startNATS starts nats-server with JetStream storing in dir: in this process, or in a child
// process of its own when SeparateNATS is set.
func (s *Stack) startNATS(dir string, stops *[]func()) (url string, err error) {
	if !s.SeparateNATS {
		ns, err := broker.StartEmbedded("127.0.0.1:0", dir)
		if err != nil {
			return "", err
		}
		*stops = append(*stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
		return ns.ClientURL(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a port that was free a moment ago
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), NATSChildEnv+"="+addr, NATSChildDirEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start nats-server: %w", err)
	}
	s.natsChild = cmd
	*stops = append(*stops, func() { stopChild(cmd) })
	url = "nats://" + addr
	for range 100 { // 10s
		if nc, err := nats.Connect(url); err == nil {
			nc.Close()
			return url, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", errors.New("nats-server child not accepting connections after 10s")
}

func stopChild(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// RunNATS is the nats-server child of a Stack with SeparateNATS: it serves with JetStream on
// listen, storing in dir, until ctx is done.
func RunNATS(ctx context.Context, listen, dir string) error {
	ns, err := broker.StartEmbedded(listen, dir)
	if err != nil {
		return err
	}
	<-ctx.Done()
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}

// waitConsuming waits until cpcancel's consumer exists and has a pull request waiting.
func waitConsuming(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	streams := config.Default().Streams // the child's, unless its environment names others
	for {
		if c, err := js.Consumer(ctx, streams.RequestStream, streams.Consumer); err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumWaiting > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("cpcancel did not start consuming within 30s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ChildPeakRSS is the peak resident set size of the cpcancel child, while it still runs.
func (s *Stack) ChildPeakRSS() (bytes int64, ok bool) {
	if s.child == nil {
		return 0, false
	}
	return peakRSS("/proc/" + strconv.Itoa(s.child.Process.Pid) + "/status")
}

// CPU is the processor time (user and system) each process of the stack has used so far, while
// the children still run: cpcancel, nats-server (zero when it runs in this process) and this
// process (the load, the emulator, and nats-server unless it is separate). ok is false where
// /proc cannot tell.
func (s *Stack) CPU() (cpcancel, natsServer, self time.Duration, ok bool) {
	if s.child == nil {
		return 0, 0, 0, false
	}
	if cpcancel, ok = processCPU(strconv.Itoa(s.child.Process.Pid)); !ok {
		return 0, 0, 0, false
	}
	if s.natsChild != nil {
		if natsServer, ok = processCPU(strconv.Itoa(s.natsChild.Process.Pid)); !ok {
			return 0, 0, 0, false
		}
	}
	self, ok = processCPU("self")
	return cpcancel, natsServer, self, ok
}

// processCPU reads a process's user and system time from /proc/PID/stat (fields 14 and 15, in
// clock ticks of 1/100 s, Linux's USER_HZ).
func processCPU(pid string) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces: count after it.
	_, rest, found := strings.Cut(string(b), ") ")
	fields := strings.Fields(rest)
	if !found || len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

// peakRSS reads VmHWM from a Linux /proc status file.
func peakRSS(status string) (int64, bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
