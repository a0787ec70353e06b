package service_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// child is cpcancel running in a separate process.
type child struct {
	cmd *exec.Cmd
	out *natstest.Buffer
}

func startChild(t *testing.T, env map[string]string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &natstest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("child output:\n%s", out)
		}
	})
	return c
}

// failureStack is a nats-server and the emulator in this process, for cpcancel children.
func failureStack(t *testing.T, latency time.Duration) (*stack, map[string]string) {
	t.Helper()
	st := newStack(t, emulator.Options{Latency: latency})
	env := st.env(map[string]string{"CPCANCEL_HTTP_TIMEOUT": "2s", "CPCANCEL_CONCURRENCY": "16", "CPCANCEL_LOG_LEVEL": "warn"})
	return st, env
}

// publishMany publishes n requests, one offer each, and returns their offer ids.
func publishMany(t *testing.T, st *stack, prefix string, n int) []string {
	t.Helper()
	offers := make([]string, n)
	for i := range n {
		offers[i] = fmt.Sprintf("%s-%d", prefix, i)
		st.publish(t, natsce.Binary, request(t, "/test", offers[i], "contoso", offers[i]))
	}
	return offers
}

// waitCount waits until stream holds at least n messages.
func waitCount(t *testing.T, st *stack, stream string, n uint64, timeout time.Duration) {
	t.Helper()
	st.waitMsgs(t, stream, timeout, fmt.Sprintf("at least %d", n), func(have uint64) bool { return have >= n })
}

// checkExactlyOnce asserts one result per offer, whose attempts are no more than the API calls
// made for it (the fault used up none), and returns how many offers the API saw twice.
func checkExactlyOnce(t *testing.T, st *stack, offers []string) (calledTwice int) {
	t.Helper()
	results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", len(offers), 60*time.Second))
	for _, o := range offers {
		n := st.emu.CancelCount("contoso", o)
		if r, ok := results[o]; !ok {
			t.Errorf("no result for %s", o)
		} else if r.data.Attempts < 1 || r.data.Attempts > n {
			t.Errorf("%s: result counts %d attempts for %d API calls", o, r.data.Attempts, n)
		}
		switch {
		case n == 0:
			t.Errorf("%s: API never called", o)
		case n > 1:
			calledTwice++
		}
	}
	return calledTwice
}

// TestKillMidRun kills cpcancel with SIGKILL while requests are in flight and starts it again:
// every request ends with exactly one result; some may have been sent to the API twice (the
// documented window), and the test reports how many.
func TestKillMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a process; waits for leases to expire")
	}
	st, env := failureStack(t, 20*time.Millisecond)
	first := startChild(t, env)
	offers := publishMany(t, st, "kill", 300)
	waitCount(t, st, "CPCANCEL_RESULTS", 60, 30*time.Second)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.cmd.Wait()
	killedAt := time.Now()
	startChild(t, env)
	twice := checkExactlyOnce(t, st, offers)
	t.Logf("SIGKILL with requests in flight: %d of %d requests sent to the API twice; all results stored %s after the kill",
		twice, len(offers), time.Since(killedAt).Round(time.Millisecond))
	waitEmpty(t, st, "CPCANCEL_REQUESTS")
}

// TestSIGTERMMidRun stops cpcancel with SIGTERM while requests are in flight: it exits 0 within
// the grace period, and a restart completes the rest with no request sent to the API twice.
func TestSIGTERMMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops processes")
	}
	st, env := failureStack(t, 100*time.Millisecond)
	env["CPCANCEL_SHUTDOWN_TIMEOUT"] = "12s"
	first := startChild(t, env)
	offers := publishMany(t, st, "term", 200)
	waitCount(t, st, "CPCANCEL_RESULTS", 30, 30*time.Second)
	sent := time.Now()
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := first.cmd.Wait(); err != nil {
		t.Fatalf("cpcancel exited with %v after SIGTERM, want exit 0", err)
	}
	took := time.Since(sent)
	if took > 12*time.Second+5*time.Second {
		t.Errorf("exit took %s, longer than the 12s grace period allows", took)
	}
	startChild(t, env)
	if twice := checkExactlyOnce(t, st, offers); twice != 0 {
		t.Errorf("%d requests sent to the API twice across a graceful restart, want 0", twice)
	}
	t.Logf("SIGTERM: clean exit after %s; restart completed all %d requests", took.Round(time.Millisecond), len(offers))
}

// TestNATSRestartMidRun restarts the nats-server (same port and store) during a run: nothing is
// lost, cpcancel reconnects and ends ready.
func TestNATSRestartMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts nats-server; waits for AckWait")
	}
	st, env := failureStack(t, 20*time.Millisecond)
	st.svc = startService(t, env)
	offers := publishMany(t, st, "restart", 300)
	waitCount(t, st, "CPCANCEL_RESULTS", 60, 30*time.Second)
	st.nats.Restart(t)
	restarted := time.Now()
	s, err := st.js.Stream(context.Background(), "CPCANCEL_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waitCount(t, st, "CPCANCEL_RESULTS", info.State.Msgs+1, 60*time.Second)
	firstResult := time.Since(restarted)
	twice := checkExactlyOnce(t, st, offers)
	t.Logf("NATS restart with %d of %d results stored: first new result %s after the restart, all results %s after; %d requests sent to the API twice",
		info.State.Msgs, len(offers), firstResult.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond), twice)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(st.svc.HTTPURL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready 10s after the run: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
