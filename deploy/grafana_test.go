package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Datasource *datasource `json:"datasource"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Exemplar   bool        `json:"exemplar"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows: a collapsed row keeps its panels inside it.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard, by panel title.
func dashboardExprs(d dashboard) map[string][]string {
	exprs := map[string][]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs[p.Title] = append(exprs[p.Title], tg.Expr)
		}
	}
	return exprs
}

func TestDashboardStructure(t *testing.T) {
	d := readDashboard(t)
	if d.UID != "cpcancel" {
		t.Errorf("uid = %q, want the fixed uid %q (links and provisioning depend on it)", d.UID, "cpcancel")
	}
	if d.Title == "" {
		t.Error("no title")
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("want a variable datasource of type datasource over prometheus, got %+v", v)
	}
	for _, name := range []string{"job", "instance"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" {
			t.Errorf("want a query variable %s, got %+v", name, v)
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: datasource %+v, want uid ${datasource}", name, v.Datasource)
		}
	}

	ids := map[int]string{}
	var placed []panel
	for _, p := range allPanels(d.Panels) {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", p.Title, other, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, q := range placed {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", p.Title, q.Title)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q, query %s: datasource %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q, query %s: empty expression", p.Title, tg.RefID)
			}
		}
	}
}

// TestDashboardMetricsExist fails when a query names a series the service does not export (a
// renamed or removed metric, a typo), or one the NATS exporter does not.
func TestDashboardMetricsExist(t *testing.T) {
	exported := servedSeries(t)
	for title, exprs := range dashboardExprs(readDashboard(t)) {
		for _, expr := range exprs {
			if unknown := unknownSeries(expr, exported); len(unknown) > 0 {
				t.Errorf("panel %q: %v not exported, in %s", title, unknown, expr)
			}
			// Every query of the service's series honours the job and instance variables.
			if serviceSeriesRE.MatchString(expr) && (!strings.Contains(expr, `job=~"$job"`) || !strings.Contains(expr, `instance=~"$instance"`)) {
				t.Errorf("panel %q: %s does not filter on $job and $instance", title, expr)
			}
		}
	}
}

// TestDashboardCoversIssue checks the panels operators were promised are there.
func TestDashboardCoversIssue(t *testing.T) {
	var all strings.Builder
	for _, exprs := range dashboardExprs(readDashboard(t)) {
		for _, e := range exprs {
			all.WriteString(e + "\n")
		}
	}
	for _, want := range []struct{ what, re string }{
		{"request rate by status code", `sum by \(code\) \(rate\(cpcancel_api_requests_total`},
		{"Cancel calls by status code", `sum by \(code\) \(rate\(cpcancel_api_requests_total\{[^}]*operation="cancel"`},
		{"status polls by status code", `sum by \(code\) \(rate\(cpcancel_api_requests_total\{[^}]*operation="status"`},
		{"error ratio by operation", `sum by \(operation\) \(rate\(cpcancel_api_requests_total\{[^}]*code=~"5\.\.\|408\|429\|error"`},
		{"results by outcome", `sum by \(outcome\) \(rate\(cpcancel_results_total`},
		{"error ratio", `cpcancel_api_requests_total\{[^}]*code=~"5\.\.\|408\|429\|error"`},
		{"API latency p50", `histogram_quantile\(0\.5, sum by \(le\) \(rate\(cpcancel_api_request_duration_seconds_bucket`},
		{"API latency p90", `histogram_quantile\(0\.9, sum by \(le\) \(rate\(cpcancel_api_request_duration_seconds_bucket`},
		{"API latency p99", `histogram_quantile\(0\.99, sum by \(le\) \(rate\(cpcancel_api_request_duration_seconds_bucket`},
		{"in-flight", `cpcancel_in_flight_requests`},
		{"concurrency limit", `cpcancel_concurrency_limit\{`},
		{"concurrency limit floor", `cpcancel_concurrency_limit_min\{`},
		{"concurrency limit ceiling", `cpcancel_concurrency_limit_max\{`},
		{"retries", `cpcancel_retries_total`},
		{"dead letters", `cpcancel_dead_letters_total`},
		{"duplicates", `cpcancel_duplicates_total`},
		{"redeliveries", `cpcancel_redeliveries_total`},
		{"consumer lag (pending)", `nats_consumer_num_pending\{stream_name="\$stream", consumer_name="\$consumer"\}`},
		{"consumer lag (ack pending)", `nats_consumer_num_ack_pending\{stream_name="\$stream", consumer_name="\$consumer"\}`},
		{"goroutines", `go_goroutines`},
		{"heap", `go_memstats_heap_\w+_bytes`},
		{"GC", `go_gc_duration_seconds`},
		{"build info", `cpcancel_build_info`},
		{"storage used (% of max)", `cpcancel_stream_bytes\{[^}]*\} / \(cpcancel_stream_max_bytes\{[^}]*\} > 0\)`},
	} {
		if !regexp.MustCompile(want.re).MatchString(all.String()) {
			t.Errorf("no panel for %s (no query matching %s)", want.what, want.re)
		}
	}
}

// TestDashboardConsumerVariables checks the lag panels look at the stream and consumer the
// service uses by default.
func TestDashboardConsumerVariables(t *testing.T) {
	cfg := defaultConfig(t, nil)
	want := map[string]string{"stream": cfg.Streams.RequestStream, "consumer": cfg.Streams.Consumer}
	for _, v := range readDashboard(t).Templating.List {
		if w, ok := want[v.Name]; ok {
			if v.Query != w || v.Current.Value != w {
				t.Errorf("variable %s defaults to %v / %v, want %q", v.Name, v.Query, v.Current.Value, w)
			}
			delete(want, v.Name)
		}
	}
	for name := range want {
		t.Errorf("no variable %s", name)
	}
}

// exemplarSeriesRE matches the histograms that carry a trace id as exemplar (label trace_id).
var exemplarSeriesRE = regexp.MustCompile(`\b(?:cpcancel_api_request_duration_seconds|cpcancel_processing_duration_seconds)_bucket\b`)

// TestDashboardExemplars checks every query of the traced histograms shows their exemplars, which
// Grafana links to the trace (the compose stack's Prometheus datasource, TestCompose/grafana).
func TestDashboardExemplars(t *testing.T) {
	n := 0
	for _, p := range allPanels(readDashboard(t).Panels) {
		for _, tg := range p.Targets {
			if exemplarSeriesRE.MatchString(tg.Expr) {
				n++
				if !tg.Exemplar {
					t.Errorf("panel %q, query %s: exemplar is off for %s", p.Title, tg.RefID, tg.Expr)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no query of the API or processing latency histograms")
	}
}

var grafanaVariableRE = regexp.MustCompile(`\$\{?\w+\}?`)

// TestDashboardPromQL has promtool parse every query, as recording rules, with the Grafana
// variables replaced by plain values.
func TestDashboardPromQL(t *testing.T) {
	promtool(t)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for title, exprs := range dashboardExprs(readDashboard(t)) {
		for _, expr := range exprs {
			e := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(expr)
			e = grafanaVariableRE.ReplaceAllString(e, "x")
			n++
			data, _ := json.Marshal(e) // a JSON string is a valid YAML scalar
			fmt.Fprintf(&rules, "      - record: dashboard:query%d # %s\n        expr: %s\n", n, strings.ReplaceAll(title, "#", ""), data)
		}
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", path)
}
