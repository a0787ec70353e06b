package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/metrics"
)

// Paths of the artefacts, relative to this directory (go test runs in it).
const (
	dashboardFile  = "grafana/cpcancel.json"
	alertsFile     = "prometheus/alerts.yml"
	alertsTestFile = "prometheus/alerts_test.yml"
	kubernetesDir  = "kubernetes"
	composeFile    = "compose/compose.yaml"
	runbookFile    = "../docs/runbook.md"
	dockerfile     = "../Dockerfile"

	// runbookURL is where every alert's runbook_url points, followed by a section anchor.
	runbookURL = "https://github.com/cpcancel/cpcancel/blob/main/docs/runbook.md#"
)

// readYAML decodes every document of a YAML file into a generic value, failing the test on a
// syntax error.
func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

// decodeInto re-decodes a generic YAML value into a typed one.
func decodeInto(t *testing.T, what string, from any, into any) {
	t.Helper()
	data, err := yaml.Marshal(from)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// promtool returns the path of promtool. Without it the test is skipped on a workstation and fails
// in CI (CI is set), where .ci/run installs it first.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found; .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("promtool not found (apt-get install prometheus); CI runs this")
	}
	return path
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// describingRegisterer registers on a real registry and keeps the collectors, so that metrics a
// gather does not show (vectors without any child yet) are still known by name.
type describingRegisterer struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *describingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *describingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// exportedSeries returns the name of every series the service exports, built from the service's
// own metrics package: a metric added or renamed there is known here without editing this test.
// Histograms and summaries add their _bucket, _sum and _count series. A vector nobody has used
// yet is not gathered, so its type is unknown: its name is taken from its descriptor with every
// suffix allowed.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	reg := &describingRegisterer{Registry: prometheus.NewRegistry()}
	outcomes := make([]string, len(cancelevent.Outcomes))
	for i, o := range cancelevent.Outcomes {
		outcomes[i] = string(o)
	}
	metrics.New(reg, metrics.Build{Version: "test", Revision: "test"}, outcomes...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]bool{}
	add := func(name string, suffixes ...string) {
		series[name] = true
		for _, s := range suffixes {
			series[name+s] = true
		}
	}
	for _, f := range families {
		switch f.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			add(f.GetName(), "_bucket", "_sum", "_count")
		case "SUMMARY":
			add(f.GetName(), "_sum", "_count")
		default:
			add(f.GetName())
		}
	}
	for _, c := range reg.collectors {
		descs := make(chan *prometheus.Desc, 256)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			m := fqNameRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			if !series[m[1]] {
				add(m[1], "_bucket", "_sum", "_count")
			}
		}
	}
	for _, must := range []string{"cpcancel_build_info", "cpcancel_results_total", "go_goroutines", "process_cpu_seconds_total"} {
		if !series[must] {
			t.Fatalf("exported series lack %s: the metrics package changed shape, fix exportedSeries", must)
		}
	}
	return series
}

// natsExporterSeries are the consumer series of the NATS Prometheus exporter run with
// -prefix=nats -jsz=all (collector/jsz.go of nats-io/prometheus-nats-exporter), and the labels
// that name the stream and the consumer.
var natsExporterSeries = map[string]bool{
	"nats_consumer_num_pending":            true,
	"nats_consumer_num_ack_pending":        true,
	"nats_consumer_num_redelivered":        true,
	"nats_consumer_num_waiting":            true,
	"nats_consumer_delivered_consumer_seq": true,
	"nats_consumer_delivered_stream_seq":   true,
	"nats_consumer_ack_floor_stream_seq":   true,
	"nats_consumer_ack_floor_consumer_seq": true,
	"nats_stream_total_messages":           true,
	"nats_stream_total_bytes":              true,
	"nats_stream_consumer_count":           true,
	"nats_stream_first_seq":                true,
	"nats_stream_last_seq":                 true,
	"nats_server_jetstream_disabled":       true,
	"nats_server_total_streams":            true,
	"nats_server_total_consumers":          true,
	"nats_server_total_messages":           true,
	"nats_server_total_message_bytes":      true,
	"nats_server_max_memory":               true,
	"nats_server_max_storage":              true,
}

var (
	// Series names in PromQL: those of the service and its Go and process collectors, and the
	// NATS exporter's. \b keeps label values such as CPCANCEL_REQUESTS out.
	serviceSeriesRE = regexp.MustCompile(`\b(?:cpcancel|go|process)_[a-z0-9_]+`)
	natsSeriesRE    = regexp.MustCompile(`\b(?:nats|jetstream|gnatsd)_[a-z0-9_]+`)
	// Label matchers naming the stream and the consumer.
	streamMatcherRE   = regexp.MustCompile(`stream_name="([^"]*)"`)
	consumerMatcherRE = regexp.MustCompile(`consumer_name="([^"]*)"`)
)

// unknownSeries lists the series expr names that nobody exports.
func unknownSeries(expr string, exported map[string]bool) []string {
	var unknown []string
	for _, name := range serviceSeriesRE.FindAllString(expr, -1) {
		if !exported[name] {
			unknown = append(unknown, name)
		}
	}
	for _, name := range natsSeriesRE.FindAllString(expr, -1) {
		if !natsExporterSeries[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}

// defaultConfig is the service's configuration with nothing set but what env holds.
func defaultConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Read(func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// configVariables returns every environment variable the service reads.
func configVariables(t *testing.T) map[string]bool {
	t.Helper()
	vars := map[string]bool{"NATS_URL": true}
	for _, v := range config.Variables() {
		vars[v.Name] = true
	}
	if !vars["CPCANCEL_SHUTDOWN_TIMEOUT"] {
		t.Fatal("config.Variables no longer lists CPCANCEL_SHUTDOWN_TIMEOUT: fix configVariables")
	}
	return vars
}

// validate checks a configuration the way the service does at start, with the token file (a
// path inside a container) replaced by a real file.
func validate(t *testing.T, cfg config.Config) {
	t.Helper()
	if cfg.CloudPartner.TokenFile != "" {
		cfg.CloudPartner.TokenFile = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(cfg.CloudPartner.TokenFile, []byte("token"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the service would refuse this configuration: %v", err)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []struct{ what, re string }{
		{"a Go build stage", `(?m)^FROM golang:\S+ AS build$`},
		{"a static, trimmed build with version and revision injected", `(?m)^RUN CGO_ENABLED=0 go build -trimpath -ldflags "[^"]*-X main\.version=\$\{VERSION\} -X main\.revision=\$\{REVISION\}[^"]*" -o /out/consumer \./cmd/consumer$`},
		{"the distroless nonroot runtime image", `(?m)^FROM gcr\.io/distroless/static-debian12:nonroot$`},
		{"the binary at /usr/local/bin/consumer", `(?m)^COPY --from=build /out/consumer /usr/local/bin/consumer$`},
		{"a numeric non-root user", `(?m)^USER 65532:65532$`},
		{"the HTTP port", `(?m)^EXPOSE 8080$`},
		{"the entrypoint", `(?m)^ENTRYPOINT \["/usr/local/bin/consumer"\]$`},
		{"OCI version label", `org\.opencontainers\.image\.version="\$\{VERSION\}"`},
		{"OCI revision label", `org\.opencontainers\.image\.revision="\$\{REVISION\}"`},
		{"OCI title label", `org\.opencontainers\.image\.title=`},
	} {
		if !regexp.MustCompile(want.re).MatchString(df) {
			t.Errorf("Dockerfile lacks %s (a line matching %s)", want.what, want.re)
		}
	}
	// The exposed port is the service's default HTTP port.
	cfg := defaultConfig(t, nil)
	if !strings.HasSuffix(cfg.HTTP.Addr, ":8080") {
		t.Errorf("CPCANCEL_HTTP_ADDR defaults to %q but the Dockerfile exposes 8080", cfg.HTTP.Addr)
	}
}
