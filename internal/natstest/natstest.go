// Package natstest starts real embedded NATS servers with JetStream for tests: loopback only, a
// random port, a store under t.TempDir(), shut down when the test ends.
package natstest

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded JetStream server owned by a test.
type Server struct {
	*server.Server
	opts *server.Options
}

// Start runs a JetStream server on 127.0.0.1 with a random port.
func Start(t testing.TB) *Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	}
	s := &Server{opts: opts}
	s.start(t)
	t.Cleanup(func() { s.Server.Shutdown(); s.Server.WaitForShutdown() })
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	srv, err := server.NewServer(s.opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	s.Server = srv
	// Keep the port across restarts.
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
}

// Restart stops the server and starts it again on the same port with the same store.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	s.start(t)
}

// RestartEmpty stops the server and starts it again on the same port with its store emptied, as
// a server that lost its disk: every stream, consumer and bucket is gone.
func (s *Server) RestartEmpty(t testing.TB) {
	t.Helper()
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	if err := os.RemoveAll(s.opts.StoreDir); err != nil {
		t.Fatal(err)
	}
	s.start(t)
}

// Connect returns a client connection and its JetStream context, closed when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, s.ClientURL())
}

// connect dials urls, reconnecting for ever, and closes the connection when the test ends.
func connect(t testing.TB, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
