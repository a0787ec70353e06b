package service_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// Regression: requests waiting out a long Retry-After (NakWithDelay) held MaxAckPending slots, so
// 1,000 of them stopped every new request. Waiting requests now hold no slot: a new request is
// answered while 1,000 wait for an hour.
func TestThrottledRequestsDoNotBlockNewOnes(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 1,000 requests")
	}
	const waiting = 1000
	st := startStack(t, map[string]string{"CPCANCEL_CONCURRENCY": "32"})
	faults := make([]emulator.Fault, waiting)
	for i := range faults {
		faults[i] = emulator.Fault{Status: 429, RetryAfter: "3600"}
	}
	st.emu.Inject(faults...)
	publishMany(t, st, "throttled", waiting)
	deadline := time.Now().Add(60 * time.Second)
	for st.emu.CancelCount("contoso", fmt.Sprintf("throttled-%d", waiting-1)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the throttled requests were not all tried within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sent := time.Now()
	st.publish(t, natsce.Binary, request(t, "/test", "fresh", "contoso", "fresh-offer"))
	res := st.waitStream(t, "CPCANCEL_RESULTS", 1, 30*time.Second)
	if res[0].data.RequestID != "fresh" || res[0].data.StatusCode != 202 {
		t.Fatalf("result %+v, want the new request's 202", res[0].data)
	}
	t.Logf("new request answered %s after it was published, with %d requests waiting out Retry-After: 3600",
		time.Since(sent).Round(time.Millisecond), waiting)
}

// Regression: at shutdown, messages buffered for the pool were still started, and a call cut by
// the grace period released its lease so that the next instance called the API again. Now
// nothing is started once shutdown begins, calls in flight run to their end, and a restarted
// instance answers the rest without a second call for any request.
func TestShutdownStartsNothingAndFinishesCallsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for slow API calls")
	}
	st, env := failureStack(t, 1500*time.Millisecond)
	env["CPCANCEL_CONCURRENCY"] = "2"
	env["CPCANCEL_HTTP_TIMEOUT"] = "5s"
	env["CPCANCEL_SHUTDOWN_TIMEOUT"] = "15s"
	svc, done, cancel := runService(t, env)
	select {
	case <-svc.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("service not ready after 15s")
	}
	offers := publishMany(t, st, "shutdown", 20)
	time.Sleep(500 * time.Millisecond) // two calls of 1.5s are in flight
	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("service stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("service did not stop within 20s")
	}
	took := time.Since(stopped)
	calls := len(st.emu.Calls())
	if calls != 2 {
		t.Fatalf("%d API calls by the stopped instance; want the 2 in flight at shutdown", calls)
	}
	results := len(st.waitStream(t, "CPCANCEL_RESULTS", calls, 5*time.Second))
	st.svc = startService(t, env)
	if twice := checkExactlyOnce(t, st, offers); twice != 0 {
		t.Errorf("%d requests sent to the API twice across a shutdown, want 0", twice)
	}
	t.Logf("shutdown took %s with 2 calls of 1.5s in flight; %d calls made and %d results stored before it, none after",
		took.Round(time.Millisecond), calls, results)
}

// An instance started while its NATS server is down (both restarted by one deploy) waits for it
// and serves, instead of exiting into a supervisor's growing restart backoff.
func TestStartWaitsForNATS(t *testing.T) {
	port, env := withoutNATS(t)
	svc, done, cancel := runService(t, env)
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(1500 * time.Millisecond) // the instance is trying by now
	select {
	case err := <-done:
		t.Fatalf("service gave up with no NATS server: %v", err)
	default:
	}
	natstest.StartWith(t, &server.Options{Port: port})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("service stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("service not ready 30s after NATS came up")
	}
}

// Regression (fault injection): a SIGTERM while an instance waited for its NATS server at start
// made it exit 1, reporting the server it was asked to stop waiting for. A stop asked for during
// start-up is a clean stop.
func TestStopWhileWaitingForNATS(t *testing.T) {
	_, env := withoutNATS(t)
	_, done, cancel := runService(t, env)
	time.Sleep(time.Second) // the instance is waiting by now
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped while waiting for NATS: %v, want a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("service did not stop within 10s of being asked")
	}
}

// withoutNATS is the environment of an instance whose NATS server is not there (yet): at the
// loopback port returned, free a moment ago, and the emulator as the API.
func withoutNATS(t *testing.T) (port int, env map[string]string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var st stack
	st.serveEmulator(t, emulator.Options{})
	return port, map[string]string{
		"CPCANCEL_NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", port), "CPCANCEL_CLOUDPARTNER_BASE_URL": st.emuURL,
		"CPCANCEL_CLOUDPARTNER_TOKEN": testToken, "CPCANCEL_HTTP_ADDR": "127.0.0.1:0",
	}
}
