package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of embedded servers on loopback, owned by a test.
type Cluster struct {
	// Nodes are the servers, named n1, n2, …; each may be shut down or restarted on its own.
	Nodes []*Server
}

// StartCluster runs n JetStream servers on 127.0.0.1, each with a random client port, its own store
// under t.TempDir() and routes to all the others, and returns once the JetStream meta group has a
// leader that knows every node. The servers shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("a cluster needs at least 2 nodes, not %d", n)
	}
	// Routes name fixed ports, so that every node lists every other from the start (and a node
	// restarted later finds the others again); the ports are free a moment before the nodes bind them.
	ports := clusterPorts(t, n)
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	c := &Cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]},
			// Listing itself too is the usual shape of a cluster's configuration: the server ignores
			// the route to itself, and the number of routes tells JetStream how many peers to expect.
			Routes: routes,
		}
		s := &Server{opts: opts}
		s.start(t)
		c.Nodes = append(c.Nodes, s)
	}
	t.Cleanup(func() {
		for _, s := range c.Nodes {
			s.Server.Shutdown()
		}
		for _, s := range c.Nodes {
			s.Server.WaitForShutdown()
		}
	})
	c.WaitLeader(t, 30*time.Second)
	return c
}

// clusterPorts returns n loopback ports that were free when it returned.
func clusterPorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve a cluster port: %v", err)
		}
		defer ln.Close() // all held at once, so that the n ports differ
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// ClientURLs lists the client URLs of the running nodes, comma-separated, as NATS_URL takes them.
func (c *Cluster) ClientURLs() string {
	var urls []string
	for _, s := range c.Nodes {
		if s.Running() {
			urls = append(urls, s.ClientURL())
		}
	}
	return strings.Join(urls, ",")
}

// Leader returns the node leading the JetStream meta group, or nil while there is none.
func (c *Cluster) Leader() *Server {
	for _, s := range c.Nodes {
		if s.Running() && s.JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// Node returns the node with the given server name, or nil.
func (c *Cluster) Node(name string) *Server {
	for _, s := range c.Nodes {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// WaitLeader waits until the JetStream meta group has a leader that counts every running node
// among its peers and every running node is current with it, and returns the leader; it fails
// the test after timeout.
func (c *Cluster) WaitLeader(t testing.TB, timeout time.Duration) *Server {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := c.Leader(); l != nil && len(l.JetStreamClusterPeers()) == len(c.Nodes) && c.current() {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster without a leader knowing all %d nodes after %s", len(c.Nodes), timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *Cluster) current() bool {
	for _, s := range c.Nodes {
		if s.Running() && !s.JetStreamIsCurrent() {
			return false
		}
	}
	return true
}

// Connect returns a client connection to the running nodes and its JetStream context, closed
// when the test ends. The client moves to another node when its own goes away.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, c.ClientURLs())
}
