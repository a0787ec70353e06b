package service_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
)

// TestTokenNeverLeaks runs cpcancel (a real process, debug logging) against an API that echoes the
// bearer token back in error codes, messages and bodies, and checks that the token appears in no
// log line, no stored result and no span exported over OTLP, and was sent to the configured host
// only.
func TestTokenNeverLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	const canary = "leak-canary-7f3a9c"
	var mu sync.Mutex
	var auth []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Host+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		echo := r.Header.Get("Authorization")
		offer := strings.Split(r.URL.Path, "/")[5]
		w.Header().Set("X-Ms-Correlation-Request-Id", "corr-"+echo)
		switch {
		case strings.HasPrefix(offer, "ok"):
			w.Header().Set("Location", "/api/operations/op-1?api-version=2017-10-31")
			w.WriteHeader(http.StatusAccepted)
		case strings.HasPrefix(offer, "bad"):
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"code":"Bad%s","message":"you sent %s"}}`, canary, echo)
		case strings.HasPrefix(offer, "unauth"):
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"code":"Unauthorized","message":"token %s expired"}}`, echo)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "<html>upstream rejected %s</html>", echo)
		}
	}))
	t.Cleanup(api.Close)

	// An OTLP/HTTP receiver that keeps every export as it arrived.
	var exports [][]byte
	otlp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		exports = append(exports, body)
		mu.Unlock()
	}))
	t.Cleanup(otlp.Close)

	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	st := &stack{nats: ns, js: js, emuURL: api.URL}
	env := st.env(map[string]string{
		"CPCANCEL_CLOUDPARTNER_TOKEN": canary, "CPCANCEL_LOG_LEVEL": "debug", "CPCANCEL_MAX_ATTEMPTS": "2",
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL, "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
	})
	child := startChild(t, env)
	offers := []string{"ok-1", "bad-1", "unauth-1", "down-1"}
	for _, o := range offers {
		st.publish(t, natsce.Binary, request(t, "/test", o, "contoso", o))
		st.publish(t, natsce.Structured, request(t, "/test", o+"-s", "contoso", o))
	}
	results := st.waitStream(t, "CPCANCEL_RESULTS", 2*len(offers), 30*time.Second)

	for _, r := range results {
		if strings.Contains(string(r.body), canary) || strings.Contains(fmt.Sprint(r.header), canary) {
			t.Errorf("result on %s holds the token: %v %s", r.subject, r.header, r.body)
		}
	}
	// A stop exports the spans still held.
	if err := child.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := child.cmd.Wait(); err != nil {
		t.Errorf("cpcancel exited with %v", err)
	}
	if out := child.out.String(); strings.Contains(out, canary) {
		t.Errorf("logs hold the token:\n%s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	spans := 0
	for _, body := range exports {
		if bytes.Contains(body, []byte(canary)) {
			t.Errorf("an OTLP export holds the token")
		}
		spans += bytes.Count(body, []byte("process cloudpartner.cancel.requests"))
	}
	if spans < 2*len(offers) {
		t.Errorf("OTLP exports hold %d process spans, want at least %d", spans, 2*len(offers))
	}
	host := strings.TrimPrefix(api.URL, "http://")
	for _, a := range auth {
		if a != host+" Bearer "+canary {
			t.Errorf("request %q: want the token, to %s only", a, host)
		}
	}
	if len(auth) < 2*len(offers) {
		t.Errorf("API saw %d calls, want at least %d", len(auth), 2*len(offers))
	}
}
