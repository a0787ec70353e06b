package natstest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ServerProcessEnv, set to a configuration file, makes MaybeRunServerProcess run a nats-server in
// this process instead of the tests.
const ServerProcessEnv = "CPCANCEL_TEST_NATS_SERVER"

// ServerProcessLogEnv, set to anything in the test's environment, makes server processes log to
// their output (which a failed test logs).
const ServerProcessLogEnv = "CPCANCEL_TEST_NATS_SERVER_LOG"

// Lines the server process prints on its standard output, for the parent to wait on.
const (
	readyLine    = "natstest: ready"
	reloadedLine = "natstest: reloaded"
)

// Credentials of the server process. Clients that send none are the unprivileged user, whose
// publish permissions DenyPublish restricts; AdminURL connects as a user that is never restricted.
const (
	adminUser     = "admin"
	adminPassword = "admin"
	clientUser    = "client"
)

// MaybeRunServerProcess runs a nats-server and exits when this process was started as one by
// StartProcess; otherwise it returns at once. Call it first thing in TestMain of every package
// that uses StartProcess:
//
//	func TestMain(m *testing.M) {
//		natstest.MaybeRunServerProcess()
//		os.Exit(m.Run())
//	}
//
// The server reads the configuration file named by ServerProcessEnv, reloads it on SIGHUP, shuts
// down cleanly on SIGTERM or SIGINT, and exits by itself when its parent goes away (its standard
// input, a pipe from the parent, closes).
func MaybeRunServerProcess() {
	conf := os.Getenv(ServerProcessEnv)
	if conf == "" {
		return
	}
	os.Exit(runServerProcess(conf))
}

func runServerProcess(conf string) int {
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstest server:", err)
		return 2
	}
	opts.NoSigs = true // signals are handled below
	opts.NoLog = os.Getenv(ServerProcessLogEnv) == ""
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstest server:", err)
		return 2
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "natstest server: not ready after 30s")
		return 2
	}
	fmt.Println(readyLine)
	parentGone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin) // returns when the parent's end of the pipe closes
		close(parentGone)
	}()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				err := s.Reload()
				fmt.Println(reloadedLine, err)
				continue
			}
		case <-parentGone:
		}
		s.Shutdown()
		s.WaitForShutdown()
		return 0
	}
}

// Process is a nats-server with JetStream running as a child process of the test, so that it can
// be killed (SIGKILL) and restarted on the same port with the same store. It listens on 127.0.0.1.
// Its methods are safe for concurrent use.
type Process struct {
	dir  string // JetStream store
	conf string
	port int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	out     *Buffer
	deny    []string
	reloads int // reloaded lines seen before the pending reload
}

// StartProcess starts a nats-server process with JetStream storing under dir, on a free loopback
// port, and waits until it accepts connections. The package's TestMain must call
// MaybeRunServerProcess. The server is stopped when the test ends; its output is logged if the
// test failed.
func StartProcess(t testing.TB, dir string) *Process {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: reserve a port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	confDir := t.TempDir()
	p := &Process{dir: dir, conf: filepath.Join(confDir, "nats-server.conf"), port: port, out: &Buffer{}}
	if err := p.writeConfig(); err != nil {
		t.Fatal(err)
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.stop(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Errorf("natstest: stop nats-server: %v", err)
		}
		if t.Failed() {
			t.Logf("nats-server output:\n%s", p.Output())
		}
	})
	return p
}

// URL is the client URL; clients connecting with it (and no credentials) are subject to
// DenyPublish.
func (p *Process) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// AdminURL is the client URL with the credentials of a user DenyPublish never restricts.
func (p *Process) AdminURL() string {
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", adminUser, adminPassword, p.port)
}

// ConnectAdmin returns a connection as the user DenyPublish never restricts, and its JetStream
// context, reconnecting for ever (across restarts) and closed when the test ends.
func (p *Process) ConnectAdmin(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, p.AdminURL())
}

// Output is what the server process wrote so far, across restarts.
func (p *Process) Output() string { return p.out.String() }

// Running reports whether the server process is running.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

func (p *Process) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to exit: no clean shutdown, as in a crash.
func (p *Process) Kill() error { return p.stop(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM and waits for a clean shutdown (at most 15s, then SIGKILL).
func (p *Process) Stop() error { return p.stop(syscall.SIGTERM, 15*time.Second) }

// Restart starts the server again on the same port with the same store, stopping it first
// (SIGTERM) if it is running, and waits until it accepts connections.
func (p *Process) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.start()
}

// DenyPublish replaces the subjects that clients connecting without credentials (URL) may not
// publish to, and reloads the running server's configuration (SIGHUP), waiting until it took
// effect: a way to make part of JetStream unavailable to a client and give it back, without a
// restart. A denied publish is dropped with a permissions error, so a JetStream request to such a
// subject times out. No subjects lifts the restriction. The list also holds across restarts.
func (p *Process) DenyPublish(subjects ...string) error { return p.denyPublish(subjects) }

func (p *Process) denyPublish(subjects []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deny = append([]string(nil), subjects...)
	if err := p.writeConfig(); err != nil {
		return err
	}
	if !p.running() {
		return nil // read at the next start
	}
	before := strings.Count(p.out.String(), reloadedLine)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("natstest: reload nats-server: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(p.out.String(), reloadedLine) == before {
		if time.Now().After(deadline) {
			return fmt.Errorf("natstest: nats-server did not reload within 15s; output:\n%s", p.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if i := strings.LastIndex(p.out.String(), reloadedLine); !strings.HasPrefix(p.out.String()[i:], reloadedLine+" <nil>") {
		line, _, _ := strings.Cut(p.out.String()[i:], "\n")
		return fmt.Errorf("natstest: nats-server reload failed: %s", line)
	}
	return nil
}

// writeConfig writes the configuration file; p.mu is held or p is not shared yet.
func (p *Process) writeConfig() error {
	var perms string
	if len(p.deny) > 0 {
		quoted := make([]string, len(p.deny))
		for i, s := range p.deny {
			quoted[i] = strconv.Quote(s)
		}
		perms = fmt.Sprintf(", permissions: { publish: { deny: [%s] } }", strings.Join(quoted, ", "))
	}
	conf := fmt.Sprintf(`# written by natstest.Process
server_name: natstest
listen: "127.0.0.1:%d"
jetstream { store_dir: %s }
authorization {
  users = [
    { user: %q, password: %q }
    { user: %q, password: %q%s }
  ]
}
no_auth_user: %q
`, p.port, strconv.Quote(p.dir), adminUser, adminPassword, clientUser, "client-"+strconv.Itoa(p.port), perms, clientUser)
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("natstest: write nats-server configuration: %w", err)
	}
	return nil
}

// start runs the server process and waits until it is ready.
func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running() {
		return nil
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ServerProcessEnv+"="+p.conf)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// The child exits when this pipe closes, which the OS does when this process dies.
	if _, err := cmd.StdinPipe(); err != nil {
		return err
	}
	mark := strings.Count(p.out.String(), readyLine)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natstest: start nats-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for strings.Count(p.out.String(), readyLine) == mark {
		select {
		case <-exited:
			return fmt.Errorf("natstest: nats-server exited at start (%v); output:\n%s", cmd.ProcessState, p.out)
		case <-deadline.C:
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("natstest: nats-server not ready after 30s; output:\n%s", p.out)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// stop signals a running server process and waits for it to exit, killing it after timeout.
func (p *Process) stop(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("natstest: signal nats-server: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("natstest: nats-server still running %s after %v; killed", timeout, sig)
	}
}

// Buffer collects what concurrent writers write (a process's output, logs); safe for concurrent
// use. The zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
