package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/service"
)

// ChildEnv, set to 1, makes the load tool's binary run cpcancel itself (see Stack).
const ChildEnv = "CPCANCEL_LOADGEN_CHILD"

// NATSChildEnv, set to host:port, makes the load tool's binary run nats-server with JetStream
// itself, listening there and storing in NATSChildDirEnv (see Stack.SeparateNATS and RunNATS).
const (
	NATSChildEnv    = "CPCANCEL_LOADGEN_NATS_LISTEN"
	NATSChildDirEnv = "CPCANCEL_LOADGEN_NATS_DIR"
)

// PeerConsumer is the durable consumer name a Stack's Peer is given (CPCANCEL_CONSUMER).
const PeerConsumer = "loadgen-peer"

// Stack is what a load run talks to: an existing NATS server with cpcancel on it, or one started
// here: an embedded JetStream server and the API emulator in this process, and the consumer in a
// child process, so that its memory and CPU can be measured alone: cpcancel (this binary run again
// with ChildEnv=1), or a Peer.
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
	// Prefill makes Start create cpcancel's streams and bucket itself (and its consumer, unless a
	// Peer consumes) and leave the consumer child unstarted, so that the requests can all be
	// stored before StartConsumer.
	Prefill bool
	// Peer, when set, is a shell command run instead of cpcancel (sh -c Peer), with the settings
	// above and Env in its environment: CPCANCEL_NATS_URL, CPCANCEL_CLOUDPARTNER_BASE_URL,
	// CPCANCEL_CLOUDPARTNER_TOKEN, CPCANCEL_REQUEST_STREAM, CPCANCEL_REQUEST_SUBJECT,
	// CPCANCEL_CONSUMER (PeerConsumer, which it is to create), CPCANCEL_RESULT_SUBJECT_PREFIX and
	// CPCANCEL_CONCURRENCY. It implies Prefill, which Start sets.
	Peer string

	// child is the consumer (not started yet with Prefill); natsChild is nats-server, with
	// SeparateNATS. exited is closed once the consumer has exited.
	child, natsChild *exec.Cmd
	exited           chan struct{}
}

// Start connects to NATSURL, or starts the self-contained stack; stop undoes it. Unless Prefill
// is set, the stack's consumer is consuming when Start returns.
func (s *Stack) Start(ctx context.Context) (js jetstream.JetStream, stop func(), err error) {
	s.Prefill = s.Prefill || s.Peer != ""
	if s.Prefill && s.NATSURL != "" {
		return nil, func() {}, errors.New("prefill and peer need the stack started here, not a NATS URL")
	}
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
	switch {
	case s.child == nil: // cpcancel already runs at NATSURL
	case s.Prefill:
		err = s.provision(ctx, js)
	default:
		if err = s.StartConsumer(); err == nil {
			err = waitConsuming(ctx, js, s.exited)
		}
	}
	return js, stop, err
}

// StartConsumer starts the consumer child of a self-contained stack. Start does, unless Prefill
// is set; then the caller does, once, when the requests are stored.
func (s *Stack) StartConsumer() error {
	if err := s.child.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.ConsumerName(), err)
	}
	go func() {
		s.child.Wait()
		close(s.exited)
	}()
	return nil
}

// ConsumerExited is closed when the consumer child has exited (a run ends at once: a consumer
// refusing its configuration would otherwise leave it waiting for its timeout); nil when
// cpcancel runs elsewhere.
func (s *Stack) ConsumerExited() <-chan struct{} { return s.exited }

// ConsumerName is what reports call the consumer: "peer" or "cpcancel".
func (s *Stack) ConsumerName() string {
	if s.Peer != "" {
		return "peer"
	}
	return "cpcancel"
}

// provision creates cpcancel's streams, bucket and consumer as cpcancel does with its default
// configuration (which then finds them as it wants them). A peer brings its own consumer, and a
// work-queue stream takes only one per subject: cpcancel's is deleted again.
func (s *Stack) provision(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := service.Topology(config.Default())
	if _, err := broker.Provision(ctx, js, t); err != nil {
		return err
	}
	if s.Peer == "" {
		return nil
	}
	if err := js.DeleteConsumer(ctx, t.RequestStream, t.Consumer); err != nil {
		return fmt.Errorf("delete consumer %s for the peer: %w", t.Consumer, err)
	}
	return nil
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

	if s.child, err = s.consumerCommand(natsURL, emu.URL, token); err != nil {
		return "", err
	}
	s.exited = make(chan struct{})
	*stops = append(*stops, func() {
		if s.child.Process != nil {
			syscall.Kill(-s.child.Process.Pid, syscall.SIGTERM) // as stopChild, reaped by StartConsumer's goroutine
			<-s.exited
		}
	})
	return natsURL, nil
}

// consumerCommand is the consumer child, not yet started: the peer, or this binary as cpcancel.
func (s *Stack) consumerCommand(natsURL, apiURL, token string) (*exec.Cmd, error) {
	env := []string{
		"CPCANCEL_NATS_URL=" + natsURL,
		"CPCANCEL_CLOUDPARTNER_BASE_URL=" + apiURL,
		"CPCANCEL_CLOUDPARTNER_TOKEN=" + token,
		"CPCANCEL_CONCURRENCY=" + strconv.Itoa(s.Concurrency),
	}
	var cmd *exec.Cmd
	if s.Peer != "" {
		streams := config.Default().Streams
		cmd = exec.Command("sh", "-c", s.Peer)
		env = append(env,
			"CPCANCEL_REQUEST_STREAM="+streams.RequestStream,
			"CPCANCEL_REQUEST_SUBJECT="+streams.RequestSubject,
			"CPCANCEL_CONSUMER="+PeerConsumer,
			"CPCANCEL_RESULT_SUBJECT_PREFIX="+streams.ResultSubjectPrefix)
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(self)
		env = append(env, ChildEnv+"=1",
			"CPCANCEL_CLOUDPARTNER_TOKEN_FILE=",
			"CPCANCEL_HTTP_ADDR=127.0.0.1:0",
			"CPCANCEL_LOG_LEVEL=warn",
			"CPCANCEL_LOADGEN_CPUPROFILE="+s.CPUProfile,
			"CPCANCEL_LOADGEN_MEMPROFILE="+s.MemProfile)
	}
	cmd.Env = slices.Concat(os.Environ(), env, s.Env)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // see stopChild
	return cmd, nil
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // see stopChild
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

// stopChild stops a child started in a process group of its own, with what it started (a
// peer's shell and the peer), and waits for the child.
func stopChild(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
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
func waitConsuming(ctx context.Context, js jetstream.JetStream, exited <-chan struct{}) error {
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
		case <-exited:
			return errors.New("cpcancel exited before it started consuming (its error is above)")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ChildPeakRSS is the peak resident set size of the consumer child while it still runs, summed
// over its processes (a peer's shell and what it starts).
func (s *Stack) ChildPeakRSS() (bytes int64, ok bool) {
	pids, ok := s.consumerProcesses()
	for _, pid := range pids {
		rss, found := peakRSS("/proc/" + pid + "/status")
		bytes, ok = bytes+rss, ok && found
	}
	return bytes, ok
}

// CPU is the processor time (user and system) each part of the stack has used so far, while the
// children still run: the consumer (all its processes), nats-server (zero when it runs in this
// process) and this process (the load, the emulator, and nats-server unless it is separate).
// ok is false where /proc cannot tell.
func (s *Stack) CPU() (consumer, natsServer, self time.Duration, ok bool) {
	pids, ok := s.consumerProcesses()
	for _, pid := range pids {
		cpu, found := processCPU(pid)
		consumer, ok = consumer+cpu, ok && found
	}
	if !ok {
		return 0, 0, 0, false
	}
	if s.natsChild != nil {
		if natsServer, ok = processCPU(strconv.Itoa(s.natsChild.Process.Pid)); !ok {
			return 0, 0, 0, false
		}
	}
	self, ok = processCPU("self")
	return consumer, natsServer, self, ok
}

// consumerProcesses is the running consumer child and its descendants, found by their parent
// in /proc/PID/stat (field 4). ok is false when the child has not started or /proc cannot be read.
func (s *Stack) consumerProcesses() (pids []string, ok bool) {
	if s.child == nil || s.child.Process == nil {
		return nil, false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	children := map[string][]string{}
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // not a process, or one that has just ended
		}
		// The command name, field 2, is in parentheses and may hold spaces: count after it.
		if _, rest, found := strings.Cut(string(b), ") "); found {
			if f := strings.Fields(rest); len(f) > 1 {
				children[f[1]] = append(children[f[1]], e.Name())
			}
		}
	}
	pids = []string{strconv.Itoa(s.child.Process.Pid)}
	for i := 0; i < len(pids); i++ { // bounded: each process has one parent
		pids = append(pids, children[pids[i]]...)
	}
	return pids, true
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
