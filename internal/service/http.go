package service

import (
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/metrics"
)

// routes serves /metrics, /healthz (the process is alive) and /readyz (connected to NATS and
// consuming; 503 otherwise, e.g. while reconnecting or shutting down).
func (s *Service) routes(nc *nats.Conn, consuming func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(s.registry))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !nc.IsConnected():
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
		case !consuming():
			http.Error(w, "not consuming", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	return mux
}
