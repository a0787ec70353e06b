package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/service"
)

// Stack is what a load run talks to: an existing NATS server with cpcancel on it, or a
// self-contained one started here (embedded NATS, emulator and cpcancel on loopback).
type Stack struct {
	NATSURL     string
	Latency     time.Duration
	Concurrency int
}

// Start connects to NATSURL, or starts the self-contained stack; stop undoes it.
func (s *Stack) Start(ctx context.Context) (js jetstream.JetStream, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	url := s.NATSURL
	if url == "" {
		if url, err = s.startService(ctx, &stops); err != nil {
			return nil, stop, err
		}
	}
	nc, err := nats.Connect(url, nats.Name("cpcancel-loadgen"))
	if err != nil {
		return nil, stop, fmt.Errorf("connect: %w", err)
	}
	stops = append(stops, nc.Close)
	js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	return js, stop, err
}

func (s *Stack) startService(ctx context.Context, stops *[]func()) (string, error) {
	dir, err := os.MkdirTemp("", "cpcancel-loadgen-")
	if err != nil {
		return "", err
	}
	*stops = append(*stops, func() { os.RemoveAll(dir) })
	ns, err := broker.StartEmbedded("127.0.0.1:0", dir)
	if err != nil {
		return "", err
	}
	*stops = append(*stops, func() { ns.Shutdown(); ns.WaitForShutdown() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	emu := &http.Server{Handler: emulator.New(emulator.Options{Token: "loadgen", Latency: s.Latency, OperationDuration: time.Minute})}
	go emu.Serve(ln)
	*stops = append(*stops, func() { emu.Close() })

	cfg, err := config.Read()
	if err != nil {
		return "", err
	}
	cfg.NATSURL, cfg.BaseURL, cfg.Token, cfg.TokenFile = ns.ClientURL(), "http://"+ln.Addr().String(), "loadgen", ""
	cfg.HTTPAddr, cfg.Concurrency, cfg.LogLevel = "127.0.0.1:0", s.Concurrency, "warn"
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	svc := service.New(cfg, metrics.Build{Version: "loadgen"}, cfg.Logger(os.Stderr))
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- svc.Run(sctx) }()
	*stops = append(*stops, func() { cancel(); <-done })
	select {
	case <-svc.Ready():
	case err := <-done:
		return "", err
	}
	return ns.ClientURL(), nil
}

// PeakRSS is this process's peak resident set size (Linux VmHWM).
func PeakRSS() (bytes int64, ok bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
