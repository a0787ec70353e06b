package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/metrics"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
	"github.com/cpcancel/cpcancel/internal/servicetest"
	"github.com/cpcancel/cpcancel/internal/tracing"
)

// What each dashboard panel must show once the live load has run, by title. A panel missing here
// fails TestLiveDashboard: whoever adds one decides what the load must make it show.
const (
	// moves: some sample is a finite number other than 0; the load must have changed it.
	moves = "moves"
	// present: some series with a finite sample; its value may well be 0 at every scrape.
	present = "present"
	// mayBeEmpty: the query must run without error; the reason is in livePanelReasons.
	mayBeEmpty = "may be empty"
)

var livePanels = map[string]string{
	"Requests waiting":                             mayBeEmpty,
	"Results / s":                                  moves,
	"API transient error ratio":                    moves, // the throttled offer's 429s
	"In flight":                                    present,
	"Build":                                        moves, // always 1
	"Cancel calls by status code":                  moves,
	"Status polls by status code":                  moves, // following polls the 202s
	"API error ratio by operation":                 moves, // 429, 404 and 403 Cancel calls
	"Cancel call latency":                          moves,
	"API latency p99 by operation and status code": moves,
	"Results by outcome":                           moves,
	"Processing latency":                           moves,
	"In-flight requests":                           present,
	"Retries":                                      moves, // the throttled offer is retried once
	"Redeliveries":                                 moves, // its retry is a redelivery
	"Duplicates":                                   moves, // each round re-sends one request
	"Dead letters":                                 moves, // each round sends one message that is no CloudEvent
	"Consumer lag":                                 mayBeEmpty,
	"Storage used (% of max)":                      moves,
	"Stored bytes by stream":                       moves,
	"Stored messages by stream":                    moves,
	"Goroutines":                                   moves,
	"Memory":                                       moves,
	"GC":                                           moves, // the test collects once a round
	"CPU":                                          moves,
}

var livePanelReasons = map[string]string{
	"Requests waiting":   "nats_* series come from the NATS exporter, which the live test does not run",
	"Consumer lag":       "nats_* series come from the NATS exporter, which the live test does not run",
	"In flight":          "a request is in flight for milliseconds: a 1 s scrape may never see one",
	"In-flight requests": "a request is in flight for milliseconds: a 1 s scrape may never see one (its limit, floor and ceiling, the other series, all stay at 8 with CPCANCEL_CONCURRENCY=8)",
}

const (
	// liveScrape is the scrape and rule evaluation interval of the live test's Prometheus.
	liveScrape = time.Second
	// liveRateInterval is what Grafana makes $__rate_interval of a 1 s scrape interval: at least
	// four scrapes.
	liveRateInterval = "4s"
	liveToken        = "live-test-token"
	liveSource       = "/deploy-live-test"
)

// prometheusServer returns the path of the Prometheus server binary. As with promtool, a
// workstation without it skips the live test and CI (CI is set) fails, since .ci/run installs it.
func prometheusServer(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus not found; .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("prometheus (the server) not found (apt-get install prometheus); CI runs this live test")
	}
	return path
}

// TestLiveDashboard runs cpcancel on an embedded nats-server and the API emulator, puts it under
// a short load of every outcome, has a real Prometheus scrape it with the rule files loaded, and
// then evaluates every dashboard query and every rule through Prometheus' HTTP API. It fails when
// a query errors, when a panel the load must fill shows nothing, or when a rule does not evaluate
// cleanly: what promtool and the static tests cannot see (a label that does not exist, a
// histogram without buckets, a ratio whose two sides never match).
func TestLiveDashboard(t *testing.T) {
	bin := prometheusServer(t)
	if testing.Short() {
		t.Skip("the live test takes about half a minute")
	}
	began := time.Now()

	svc, js, spans := startLiveService(t)
	target := strings.TrimPrefix(svc.HTTPURL(), "http://")
	ruleFiles := liveRuleFiles(t)
	prom := startPrometheus(t, bin, target, ruleFiles)

	// Two rounds: a counter series born at 1 shows no rate until it is scraped again after a
	// second increase, and Grafana would show a flat 0 for it.
	want := liveLoad(t, js, 1)
	prom.waitFor(t, fmt.Sprintf(`sum(cpcancel_results_total{job=%q})`, scrapeJob), want.results, 30*time.Second)
	time.Sleep(2 * liveScrape)
	want = want.add(liveLoad(t, js, 2))
	prom.waitFor(t, fmt.Sprintf(`sum(cpcancel_results_total{job=%q})`, scrapeJob), want.results, 30*time.Second)
	prom.waitFor(t, fmt.Sprintf(`sum(cpcancel_dead_letters_total{job=%q})`, scrapeJob), want.deadLetters, 10*time.Second)
	prom.waitFor(t, fmt.Sprintf(`sum(cpcancel_duplicates_total{job=%q})`, scrapeJob), want.duplicates, 10*time.Second)
	// Let the rules evaluate on the final state and every rate window pass over it.
	time.Sleep(3 * liveScrape)
	end := time.Now()
	start := began.Add(-liveScrape)

	vars := prom.dashboardVariables(t, readDashboard(t), end.Sub(start))
	t.Run("panels", func(t *testing.T) { checkLivePanels(t, prom, vars, spans, start, end) })
	t.Run("rules", func(t *testing.T) { checkLiveRules(t, prom, ruleFiles, end) })
	t.Logf("live test took %s", time.Since(began).Round(100*time.Millisecond))
}

// startLiveService runs cpcancel in this process with following on, against an embedded
// nats-server and the emulator, both on loopback. It traces every request; spans holds a line per
// ended span, with its trace id.
func startLiveService(t *testing.T) (svc *service.Service, js jetstream.JetStream, spans *natstest.Buffer) {
	t.Helper()
	ns := natstest.Start(t)
	_, js = ns.Connect(t)
	emu := httptest.NewServer(emulator.New(emulator.Options{Token: liveToken, OperationDuration: 2 * time.Second}))
	t.Cleanup(emu.Close)
	env := map[string]string{
		"CPCANCEL_NATS_URL":              ns.ClientURL(),
		"CPCANCEL_CLOUDPARTNER_BASE_URL": emu.URL,
		"CPCANCEL_CLOUDPARTNER_TOKEN":    liveToken,
		"CPCANCEL_HTTP_ADDR":             "127.0.0.1:0",
		"CPCANCEL_HTTP_TIMEOUT":          "5s",
		"CPCANCEL_SHUTDOWN_TIMEOUT":      "15s",
		"CPCANCEL_CONCURRENCY":           "8",
		"CPCANCEL_MAX_ATTEMPTS":          "2",
		"CPCANCEL_FOLLOW":                "true",
		"CPCANCEL_FOLLOW_FIRST_POLL":     "500ms",
		"CPCANCEL_FOLLOW_INTERVAL":       "500ms",
		"CPCANCEL_FOLLOW_TIMEOUT":        "20s",
	}
	cfg, err := config.Load(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	spans = &natstest.Buffer{}
	tp, err := tracing.New(context.Background(), func(string) (string, bool) { return "", false }, tracing.Options{Print: spans})
	if err != nil {
		t.Fatal(err)
	}
	svc = service.New(cfg, metrics.Build{Version: "live-test", Revision: "live"}, slog.New(slog.NewTextHandler(io.Discard, nil))).WithTracing(tp)
	servicetest.Start(t, svc)
	return svc, js, spans
}

// liveCounts is what a load must make cpcancel count.
type liveCounts struct{ results, deadLetters, duplicates float64 }

func (a liveCounts) add(b liveCounts) liveCounts {
	return liveCounts{a.results + b.results, a.deadLetters + b.deadLetters, a.duplicates + b.duplicates}
}

// liveLoad publishes one request of every kind (docs/emulator.md's offer catalogue chooses the
// API's answer) and waits until cpcancel has stored every result it owes them.
func liveLoad(t *testing.T, js jetstream.JetStream, round int) liveCounts {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, config.Default().Streams.ResultStream)
	if err != nil {
		t.Fatal(err)
	}
	before := streamMsgs(t, ctx, stream)

	id := func(kind string) string { return fmt.Sprintf("live-%d-%s", round, kind) }
	publish := func(hdr nats.Header, body []byte) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: config.Default().Streams.RequestSubject, Header: hdr, Data: body}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	request := func(kind, publisher, offer string) {
		t.Helper()
		ev, err := cancelevent.NewRequest(liveSource, id(kind), cancelevent.RequestData{PublisherID: publisher, OfferID: offer}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		hdr, body, err := natsce.Encode(ctx, ev, natsce.Binary)
		if err != nil {
			t.Fatal(err)
		}
		publish(hdr, body)
	}
	request("cancelled", "contoso", "sync-offer")           // 200: cancelled
	request("cancelling", "contoso", "contoso-offer")       // 202: cancelling, polled, then cancelled
	request("operation-failed", "contoso", "opfail-offer")  // 202: cancelling, polled, then failed
	request("not-found", "contoso", "unknown-offer")        // 404: failed
	request("forbidden", "forbidden-publisher", "an-offer") // 403: failed
	request("throttled", "contoso", "throttled-offer")      // 429, retried, 429: failed
	// Invalid data: a failed result with invalid_request, and no API call.
	publish(nats.Header{
		"ce-specversion": {"1.0"}, "ce-type": {cancelevent.RequestType}, "ce-source": {liveSource},
		"ce-id": {id("invalid")}, "ce-datacontenttype": {"application/json"},
	}, []byte(`{"publisherId":"contoso","offerId":"../etc"}`))
	// Not a CloudEvent: dead-lettered.
	publish(nil, []byte("not a cloud event"))
	const results = 9 // 6 first results, 2 final ones, 1 invalid_request

	waitStreamMsgs(t, ctx, stream, before+results)
	// cpcancel runs in this process, whose heap is too small to be sure of a collection during so
	// short a load: collect once, so that the GC panel has something to show.
	runtime.GC()
	// The same request again, once answered: a duplicate, answered from its state; JetStream
	// drops the result it publishes again as a duplicate of the first.
	request("cancelled", "contoso", "sync-offer")
	return liveCounts{results: results, deadLetters: 1, duplicates: 1}
}

func streamMsgs(t *testing.T, ctx context.Context, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func waitStreamMsgs(t *testing.T, ctx context.Context, s jetstream.Stream, want uint64) {
	t.Helper()
	for {
		info, err := s.Info(ctx)
		if err == nil && info.State.Msgs >= want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the result stream holds %d messages, want %d", info.State.Msgs, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// liveRuleFiles returns every rule file of prometheus/ (alerting and recording), not their tests.
func liveRuleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(filepath.Dir(alertsFile), "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.yml") {
			rules = append(rules, mustAbs(t, f))
		}
	}
	if !slices.Contains(rules, mustAbs(t, alertsFile)) {
		t.Fatalf("rule files %v lack %s", rules, alertsFile)
	}
	return rules
}

// livePrometheus is a Prometheus server run by the test, and its HTTP API.
type livePrometheus struct {
	url    string
	target string // host:port of cpcancel, its instance label
}

// startPrometheus runs the Prometheus server on a loopback port, scraping target as job
// scrapeJob every second with ruleFiles loaded, its storage under t.TempDir(); it stops when the
// test ends. Exemplar storage is on, as in the compose stack.
func startPrometheus(t *testing.T, bin, target string, ruleFiles []string) *livePrometheus {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nrule_files:\n", liveScrape, liveScrape)
	for _, f := range ruleFiles {
		fmt.Fprintf(&cfg, "  - %q\n", f)
	}
	fmt.Fprintf(&cfg, "scrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", scrapeJob, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	addr := servicetest.FreeAddr(t)
	var log natstest.Buffer
	cmd := exec.Command(bin,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=exemplar-storage",
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})

	p := &livePrometheus{url: "http://" + addr, target: target}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited: %v\n%s", cmd.ProcessState, log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 20s\n%s", log.String())
		}
	}
}

// api calls a GET endpoint of Prometheus' HTTP API and decodes its data; a failed call is
// returned as an error naming Prometheus' errorType and error.
func (p *livePrometheus) api(path string, params url.Values, data any) (warnings []string, err error) {
	resp, err := http.Get(p.url + path + "?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Warnings  []string        `json:"warnings"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return body.Warnings, fmt.Errorf("%s: %s: %s", path, body.ErrorType, body.Error)
	}
	return body.Warnings, json.Unmarshal(body.Data, data)
}

// series is one series of a query's answer: an instant query fills Value, a range query Values.
type series struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

// samples returns the series' sample values.
func (s series) samples() []float64 {
	points := s.Values
	if s.Value != nil {
		points = [][]any{s.Value}
	}
	var out []float64
	for _, pt := range points {
		if len(pt) != 2 {
			continue
		}
		if str, ok := pt[1].(string); ok {
			if v, err := strconv.ParseFloat(str, 64); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

type queryResult struct {
	ResultType string   `json:"resultType"`
	Result     []series `json:"result"`
}

func (p *livePrometheus) query(expr string, at time.Time) ([]series, error) {
	var r queryResult
	_, err := p.api("/api/v1/query", url.Values{"query": {expr}, "time": {unixTime(at)}}, &r)
	if err == nil && r.ResultType != "vector" && r.ResultType != "scalar" {
		err = fmt.Errorf("result type %s, want vector", r.ResultType)
	}
	if r.ResultType == "scalar" {
		return nil, fmt.Errorf("%s is a scalar, not a series", expr)
	}
	return r.Result, err
}

func (p *livePrometheus) queryRange(expr string, start, end time.Time) ([]series, error) {
	var r queryResult
	_, err := p.api("/api/v1/query_range", url.Values{
		"query": {expr}, "start": {unixTime(start)}, "end": {unixTime(end)}, "step": {liveScrape.String()},
	}, &r)
	return r.Result, err
}

func unixTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// waitFor waits until the instant query expr equals want.
func (p *livePrometheus) waitFor(t *testing.T, expr string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []series
	var err error
	for time.Now().Before(deadline) {
		got, err = p.query(expr, time.Now())
		if err == nil && len(got) == 1 && slices.Equal(got[0].samples(), []float64{want}) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: got %+v (%v) after %s, want %v", expr, got, err, timeout, want)
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// dashboardVariables gives each dashboard variable the value Grafana would: query variables
// (label_values(selector, label)) are asked of Prometheus, which must know at least one value,
// and every value found is selected, as a multi-value variable joins them into a regular
// expression; textboxes keep their default. Grafana's own interval variables come from the
// scrape interval and the range.
func (p *livePrometheus) dashboardVariables(t *testing.T, d dashboard, rng time.Duration) map[string]string {
	t.Helper()
	vars := map[string]string{
		"__rate_interval": liveRateInterval,
		"__interval":      liveScrape.String(),
		"__range":         fmt.Sprintf("%ds", int(rng.Seconds())),
	}
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			vars[v.Name] = "prometheus"
		case "textbox":
			s, _ := v.Query.(string)
			vars[v.Name] = s
		case "query":
			q, _ := v.Query.(map[string]any)
			def, _ := q["query"].(string)
			m := labelValuesRE.FindStringSubmatch(def)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, def)
				continue
			}
			selector, undefined := substitute(m[1], vars)
			if len(undefined) > 0 {
				t.Errorf("variable %s: %s names variables %v defined after it", v.Name, def, undefined)
				continue
			}
			var values []string
			if _, err := p.api("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {selector}}, &values); err != nil {
				t.Errorf("variable %s: %s: %v", v.Name, def, err)
				continue
			}
			if len(values) == 0 {
				t.Errorf("variable %s: %s has no value under load", v.Name, def)
				continue
			}
			for i, val := range values {
				values[i] = regexp.QuoteMeta(val)
			}
			vars[v.Name] = strings.Join(values, "|")
		default:
			t.Errorf("variable %s: type %s, which the live test cannot give a value", v.Name, v.Type)
		}
	}
	if vars["job"] != scrapeJob || vars["instance"] != regexp.QuoteMeta(p.target) {
		t.Errorf("variables job=%q instance=%q, want %q and %q", vars["job"], vars["instance"], scrapeJob, p.target)
	}
	return vars
}

var dashboardVariableRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// substitute replaces Grafana variables in expr, and names those it does not know.
func substitute(expr string, vars map[string]string) (string, []string) {
	var undefined []string
	out := dashboardVariableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := dashboardVariableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := vars[name]
		if !ok {
			undefined = append(undefined, name)
			return m
		}
		// Inside a quoted PromQL string a backslash is itself escaped.
		return strings.ReplaceAll(v, `\`, `\\`)
	})
	return out, undefined
}

type liveTarget struct {
	RefID    string `json:"refId"`
	Expr     string `json:"expr"`
	Instant  bool   `json:"instant"`
	Range    bool   `json:"range"`
	Exemplar bool   `json:"exemplar"`
}

// dashboardTargets returns every query of the dashboard with the options that say how Grafana
// runs it, by panel title.
func dashboardTargets(t *testing.T) map[string][]liveTarget {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type livePanel struct {
		Type    string       `json:"type"`
		Title   string       `json:"title"`
		Targets []liveTarget `json:"targets"`
		Panels  []json.RawMessage
	}
	var d struct{ Panels []json.RawMessage }
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string][]liveTarget{}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p livePanel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != "row" {
				out[p.Title] = append(out[p.Title], p.Targets...)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// checkLivePanels runs every query the way Grafana runs it (a range query over the load, or an
// instant query at its end) and checks what it shows against livePanels.
func checkLivePanels(t *testing.T, p *livePrometheus, vars map[string]string, spans *natstest.Buffer, start, end time.Time) {
	targets := dashboardTargets(t)
	for title := range livePanels {
		if _, ok := targets[title]; !ok {
			t.Errorf("livePanels names %q, which is no panel of the dashboard", title)
		}
	}
	for title, want := range livePanels {
		if want != moves && livePanelReasons[title] == "" {
			t.Errorf("panel %q may show %s under load, but livePanelReasons says not why", title, want)
		}
	}
	for title, tgs := range targets {
		want, ok := livePanels[title]
		if !ok {
			t.Errorf("panel %q: not in livePanels; say what the live load must make it show", title)
			continue
		}
		for _, tg := range tgs {
			expr, undefined := substitute(tg.Expr, vars)
			if len(undefined) > 0 {
				t.Errorf("panel %q, query %s: variables %v are not defined by the dashboard", title, tg.RefID, undefined)
				continue
			}
			var got []series
			var err error
			if tg.Instant && !tg.Range {
				got, err = p.query(expr, end)
			} else {
				got, err = p.queryRange(expr, start, end)
			}
			if err != nil {
				t.Errorf("panel %q, query %s: %v\n%s", title, tg.RefID, err, expr)
				continue
			}
			if msg := shows(got, want); msg != "" {
				t.Errorf("panel %q, query %s: %s under load, want it to show %s\n%s", title, tg.RefID, msg, want, expr)
			}
			if tg.Exemplar {
				checkExemplars(t, p, title, tg.RefID, expr, spans.String(), start, end)
			}
		}
	}
}

// shows returns what is wrong with a query's series for the expectation want, or "".
func shows(got []series, want string) string {
	finite, nonZero := false, false
	for _, s := range got {
		for _, v := range s.samples() {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				finite = true
				nonZero = nonZero || v != 0
			}
		}
	}
	switch {
	case want == mayBeEmpty:
		return ""
	case len(got) == 0:
		return "no series"
	case !finite:
		return "no finite sample"
	case want == moves && !nonZero:
		return "only zeros"
	}
	return ""
}

// checkExemplars asks for the exemplars of a query that shows them: there must be some, since
// every request is traced, and each must carry, in the label that the Grafana datasource links
// to a trace by, the id of a trace that cpcancel recorded (spans).
func checkExemplars(t *testing.T, p *livePrometheus, title, ref, expr, spans string, start, end time.Time) {
	t.Helper()
	var r []struct {
		Exemplars []struct {
			Labels map[string]string `json:"labels"`
		} `json:"exemplars"`
	}
	if _, err := p.api("/api/v1/query_exemplars", url.Values{"query": {expr}, "start": {unixTime(start)}, "end": {unixTime(end)}}, &r); err != nil {
		t.Errorf("panel %q, query %s: exemplars: %v", title, ref, err)
		return
	}
	n, bad, first := 0, 0, ""
	for _, s := range r {
		for _, e := range s.Exemplars {
			n++
			id := e.Labels[exemplarTraceLabel]
			if id == "" || !strings.Contains(spans, "trace="+id+" ") {
				bad++
				first = cmp.Or(first, fmt.Sprint(e.Labels))
			}
		}
	}
	if bad > 0 {
		t.Errorf("panel %q, query %s: %d of %d exemplars lack a %s label naming a trace cpcancel recorded; the first: %s",
			title, ref, bad, n, exemplarTraceLabel, first)
	}
	if n == 0 {
		t.Errorf("panel %q, query %s: no exemplar under load, though every request is traced", title, ref)
	}
}

// exemplarTraceLabel is the exemplar label holding the trace id, which Grafana's Prometheus
// datasource turns into a link to the trace datasource.
const exemplarTraceLabel = "trace_id"

// checkLiveRules checks that Prometheus loaded every rule of the rule files and evaluated each
// without error, and runs each expression as an instant query.
func checkLiveRules(t *testing.T, p *livePrometheus, ruleFiles []string, at time.Time) {
	want := map[string]string{} // rule name → expression
	for _, f := range ruleFiles {
		var rf ruleFile
		decodeInto(t, f, readYAML(t, f)[0], &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				want[r.Alert+r.Record] = r.Expr
			}
		}
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name           string    `json:"name"`
				Type           string    `json:"type"`
				Health         string    `json:"health"`
				LastError      string    `json:"lastError"`
				LastEvaluation time.Time `json:"lastEvaluation"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if _, err := p.api("/api/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	loaded := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			loaded[r.Name] = true
			if r.Health != "ok" || r.LastError != "" || r.LastEvaluation.Year() < 2000 {
				t.Errorf("%s rule %s (group %s): health %q, last error %q, last evaluated %s",
					r.Type, r.Name, g.Name, r.Health, r.LastError, r.LastEvaluation)
			}
		}
	}
	for name, expr := range want {
		if !loaded[name] {
			t.Errorf("rule %s is not loaded by Prometheus", name)
		}
		if _, err := p.query(expr, at); err != nil {
			t.Errorf("rule %s: %v\n%s", name, err, expr)
		}
	}
}
