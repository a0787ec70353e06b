// Package servicetest runs a cpcancel service inside a test, for the tests of the packages that
// drive a whole service (service, cli, deploy).
package servicetest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/service"
)

// Bounds on a service's start and stop in a test.
const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 30 * time.Second
)

// Start runs svc until the test ends and returns once it is consuming. The test fails when svc
// stops before it is ready or is not ready within 15s, and when it stops with an error or takes
// longer than 30s to stop.
func Start(t testing.TB, svc *service.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service stopped with error: %v", err)
			}
		case <-time.After(stopTimeout):
			t.Errorf("service did not stop within %s", stopTimeout)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v", err)
	case <-time.After(readyTimeout):
		t.Fatalf("service not ready after %s", readyTimeout)
	}
}

// FreeAddr returns a loopback address whose port was free a moment ago, for a server that cannot
// report the port it got for :0 (a child process, Prometheus).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
