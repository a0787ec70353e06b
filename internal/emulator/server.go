package emulator

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Server is an Emulator served over HTTP, as `consumer -dev`, `consumer emulator` and the load
// tool run it.
type Server struct {
	*Emulator
	// URL is the base URL cpcancel is given (CPCANCEL_CLOUDPARTNER_BASE_URL): http://host:port.
	URL  string
	http *http.Server
	done chan struct{}
}

// Listen serves a new Emulator configured by opts on addr ("127.0.0.1:0" for any free loopback
// port) until Close.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Emulator: New(opts), URL: "http://" + ln.Addr().String(), done: make(chan struct{})}
	s.http = &http.Server{Handler: s.Emulator, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		s.http.Serve(ln) // returns ErrServerClosed once Close is called
	}()
	return s, nil
}

// Close stops the server, letting answers in flight finish for up to 5 seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.http.Close()
	}
	<-s.done
	return err
}
