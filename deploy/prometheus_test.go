package deploy

import (
	"bufio"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpcancel/cpcancel/internal/metrics"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readAlerts(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	decodeInto(t, alertsFile, readYAML(t, alertsFile)[0], &f)
	var alerts []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s: no alerts", alertsFile)
	}
	return alerts
}

// runbookAnchors returns the anchors GitHub gives the headings of the runbook.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	inFence := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchor := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")
		anchors[anchor] = true
	}
	return anchors
}

// servedSeries is exportedSeries plus the stream storage series, which the service registers
// apart from metrics.New (metrics.RegisterStorage, once it is connected to JetStream).
func servedSeries(t *testing.T) map[string]bool {
	t.Helper()
	series := exportedSeries(t)
	reg := prometheus.NewRegistry()
	metrics.RegisterStorage(reg, func(context.Context) ([]metrics.StreamUsage, error) {
		return []metrics.StreamUsage{{Stream: "CPCANCEL_REQUESTS", Bytes: 1, MaxBytes: 2, Messages: 1}}, nil
	})
	metrics.RegisterConcurrencyLimit(reg, func() int { return 8 }, 8, 64)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		series[f.GetName()] = true
	}
	for _, must := range []string{"cpcancel_stream_bytes", "cpcancel_stream_max_bytes", "cpcancel_stream_messages", "cpcancel_stream_usage_errors_total", "cpcancel_concurrency_limit", "cpcancel_concurrency_limit_min", "cpcancel_concurrency_limit_max"} {
		if !series[must] {
			t.Fatalf("served series lack %s: metrics.RegisterStorage or RegisterConcurrencyLimit changed shape, fix servedSeries", must)
		}
	}
	return series
}

// TestAlertRules checks what promtool does not: every alert is routable and actionable, and
// names only series that exist.
func TestAlertRules(t *testing.T) {
	exported := servedSeries(t)
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	for _, a := range readAlerts(t) {
		if seen[a.Alert] {
			t.Errorf("alert %s defined twice", a.Alert)
		}
		seen[a.Alert] = true
		switch a.Labels["severity"] {
		case "critical", "warning", "info":
		default:
			t.Errorf("%s: severity %q, want critical, warning or info", a.Alert, a.Labels["severity"])
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", a.Alert, k)
			}
		}
		if anchor, ok := strings.CutPrefix(a.Annotations["runbook_url"], runbookURL); !ok {
			t.Errorf("%s: runbook_url %q does not point into %s", a.Alert, a.Annotations["runbook_url"], runbookURL)
		} else if !anchors[anchor] {
			t.Errorf("%s: runbook_url anchor #%s is no heading of %s", a.Alert, anchor, runbookFile)
		}
		if unknown := unknownSeries(a.Expr, exported); len(unknown) > 0 {
			t.Errorf("%s: %v not exported, in %s", a.Alert, unknown, a.Expr)
		}
	}
}

var apiRequestsSelectorRE = regexp.MustCompile(`cpcancel_api_requests_total(\{[^}]*\})?`)

// TestAlertRulesCancelOnly checks the alerts on API calls count Cancel POSTs only: status polls,
// which can outnumber them many times over, would hide a POST outage in the error ratio, and a
// poll answered 401 or 403 is not what the credential alerts are about.
func TestAlertRulesCancelOnly(t *testing.T) {
	for _, a := range readAlerts(t) {
		for _, sel := range apiRequestsSelectorRE.FindAllStringSubmatch(a.Expr, -1) {
			if !strings.Contains(sel[1], `operation="cancel"`) {
				t.Errorf("%s: %s counts every operation, want operation=\"cancel\"", a.Alert, sel[0])
			}
		}
	}
}

// TestAlertRuleNames checks the alerts look at the stream and consumer the service uses by
// default, and at the job Kubernetes and compose scrape it as.
func TestAlertRuleNames(t *testing.T) {
	cfg := defaultConfig(t, nil)
	for _, a := range readAlerts(t) {
		for _, m := range streamMatcherRE.FindAllStringSubmatch(a.Expr, -1) {
			if m[1] != cfg.Streams.RequestStream {
				t.Errorf("%s: stream_name=%q, the service consumes %q", a.Alert, m[1], cfg.Streams.RequestStream)
			}
		}
		for _, m := range consumerMatcherRE.FindAllStringSubmatch(a.Expr, -1) {
			if m[1] != cfg.Streams.Consumer {
				t.Errorf("%s: consumer_name=%q, the service's consumer is %q", a.Alert, m[1], cfg.Streams.Consumer)
			}
		}
		for _, m := range jobMatcherRE.FindAllStringSubmatch(a.Expr, -1) {
			if m[1] != scrapeJob {
				t.Errorf("%s: job=%q, cpcancel is scraped as job %q", a.Alert, m[1], scrapeJob)
			}
		}
	}
}

var jobMatcherRE = regexp.MustCompile(`job="([^"]*)"`)

// scrapeJob is the job label of cpcancel's series: the name of the Kubernetes Service the
// ServiceMonitor selects, and the compose stack's scrape job. TestKubernetes and TestCompose
// check both.
const scrapeJob = "cpcancel"

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string           `yaml:"eval_time"`
			AlertName string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertRulesAreUnitTested fails when an alert has no promtool test in which it fires, or
// none in which it stays quiet, or when a test names an alert that does not exist.
func TestAlertRulesAreUnitTested(t *testing.T) {
	var rt ruleTests
	decodeInto(t, alertsTestFile, readYAML(t, alertsTestFile)[0], &rt)
	if len(rt.RuleFiles) != 1 || rt.RuleFiles[0] != "alerts.yml" {
		t.Errorf("%s tests %v, want [alerts.yml]", alertsTestFile, rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.AlertName] = true
			} else {
				quiet[at.AlertName] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, a := range readAlerts(t) {
		alerts[a.Alert] = true
		if !fires[a.Alert] {
			t.Errorf("%s: no test in %s where it fires", a.Alert, alertsTestFile)
		}
		if !quiet[a.Alert] {
			t.Errorf("%s: no test in %s where it stays quiet", a.Alert, alertsTestFile)
		}
	}
	for name := range fires {
		if !alerts[name] {
			t.Errorf("%s tests alert %s, which %s does not define", alertsTestFile, name, alertsFile)
		}
	}
	for name := range quiet {
		if !alerts[name] {
			t.Errorf("%s tests alert %s, which %s does not define", alertsTestFile, name, alertsFile)
		}
	}
}

// TestAlertRulesPromtool runs what .ci/run runs, so that go test alone checks the rules too.
func TestAlertRulesPromtool(t *testing.T) {
	runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", alertsFile)
	runPromtool(t, "test", "rules", alertsTestFile)
}
