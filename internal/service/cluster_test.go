package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
)

// TestReplicasStartTogether starts three replicas at once on a fresh three-node JetStream cluster,
// as a Deployment would: each provisions the same R3 streams, consumer and bucket, all are ready
// within seconds, and each soon has a pull request waiting at the consumer, so none sits idle.
// (Update-while-create requests left unanswered kept them from starting for 30s; pull requests
// sent before the new consumer had a leader were lost, idling a replica for 30s.)
func TestReplicasStartTogether(t *testing.T) {
	const replicas = 3
	cluster := natstest.StartCluster(t, 3)
	_, js := cluster.Connect(t)
	st := &stack{js: js}
	st.serveEmulator(t, emulator.Options{})
	env := map[string]string{
		"CPCANCEL_NATS_URL": cluster.ClientURLs(), "CPCANCEL_REPLICAS": "3",
		"CPCANCEL_CLOUDPARTNER_BASE_URL": st.emuURL, "CPCANCEL_CLOUDPARTNER_TOKEN": testToken,
		"CPCANCEL_HTTP_ADDR": "127.0.0.1:0", "CPCANCEL_CONCURRENCY": "4", "CPCANCEL_HTTP_TIMEOUT": "2s", "CPCANCEL_SHUTDOWN_TIMEOUT": "12s",
	}

	started := time.Now()
	svcs := make([]*service.Service, replicas)
	dones := make([]chan error, replicas)
	for i := range svcs {
		var cancel context.CancelFunc
		svcs[i], dones[i], cancel = runService(t, env)
		t.Cleanup(func() {
			cancel()
			select {
			case <-dones[i]:
			case <-time.After(30 * time.Second):
				t.Errorf("replica %d did not stop within 30s", i+1)
			}
		})
	}
	for i, svc := range svcs {
		select {
		case <-svc.Ready():
		case err := <-dones[i]:
			t.Fatalf("replica %d stopped before ready: %v", i+1, err)
		case <-time.After(20 * time.Second):
			t.Fatalf("replica %d not ready 20s after starting", i+1)
		}
	}
	ready := time.Since(started)

	waitPulling(t, js, replicas, 15*time.Second)
	t.Logf("%d replicas ready after %s, all pulling after %s", replicas, ready.Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))

	offers := publishMany(t, st, "together", 30)
	results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", len(offers), 20*time.Second))
	for _, o := range offers {
		if _, ok := results[o]; !ok {
			t.Errorf("no result for %s", o)
		}
	}
}

// waitPulling waits until the request consumer holds a pull request from each of n idle replicas.
func waitPulling(t *testing.T, js jetstream.JetStream, n int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	consumer, err := js.Consumer(ctx, "CPCANCEL_REQUESTS", "cpcancel")
	if err != nil {
		t.Fatal(err)
	}
	for waiting := 0; waiting < n; {
		if info, err := consumer.Info(ctx); err == nil {
			waiting = info.NumWaiting
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d replicas waiting for requests after %s", waiting, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
