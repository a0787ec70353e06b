package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	srv, err := emulator.Listen(*listen, emulator.Options{Token: *token, Latency: *latency, OperationDuration: *opDuration, Logger: log})
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	log.Info("Cloud Partner API emulator listening", "url", srv.URL, "latency", *latency)
	<-ctx.Done()
	return srv.Close()
}
