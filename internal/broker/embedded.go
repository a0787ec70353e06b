package broker

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded starts a NATS server with JetStream listening on listen (host:port, port 0 picks
// a free one) and storing under dataDir. The caller shuts it down.
func StartEmbedded(listen, dataDir string) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("CPCANCEL_EMBEDDED_LISTEN: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("CPCANCEL_EMBEDDED_LISTEN: port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if ln, err := net.Listen("tcp", listen); err != nil {
		// The server would only log this; say it now, naming the setting.
		return nil, fmt.Errorf("CPCANCEL_EMBEDDED_LISTEN: %w", err)
	} else {
		ln.Close()
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "cpcancel-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dataDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on %s (CPCANCEL_EMBEDDED_LISTEN): is the port in use?", listen)
	}
	return s, nil
}
