package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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

	child *exec.Cmd
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
	ns, err := broker.StartEmbedded("127.0.0.1:0", dir)
	if err != nil {
		return "", err
	}
	*stops = append(*stops, func() { ns.Shutdown(); ns.WaitForShutdown() })

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
		"CPCANCEL_NATS_URL="+ns.ClientURL(),
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
	*stops = append(*stops, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	return ns.ClientURL(), nil
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
