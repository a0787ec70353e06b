package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/cpcancel/cpcancel/internal/emulator"
)

func runEmulator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("consumer emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	token := fs.String("token", "", "bearer token to require (empty: any non-empty token)")
	latency := fs.Duration("latency", 0, "latency added to every API answer")
	opDuration := fs.Duration("operation-duration", 30*time.Second, "how long a started cancel operation stays running")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	emu := emulator.New(emulator.Options{Token: *token, Latency: *latency, OperationDuration: *opDuration, Logger: log})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	log.Info("Cloud Partner API emulator listening", "url", "http://"+ln.Addr().String(), "latency", *latency)
	return serve(ctx, ln, emu)
}

// serve runs h on ln until ctx is done, then shuts the server down.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
