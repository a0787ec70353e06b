package deploy

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type compose struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	NetworkMode string            `yaml:"network_mode"`
	Networks    map[string]struct {
		Aliases []string `yaml:"aliases"`
	} `yaml:"networks"`
	DependsOn any `yaml:"depends_on"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	var c compose
	decodeInto(t, composeFile, readYAML(t, composeFile)[0], &c)
	return c
}

// flag returns the value of -name in a command line (as "-name value" or "-name=value").
func flag(cmd []string, name string) (string, bool) {
	for i, a := range cmd {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(cmd) {
			return cmd[i+1], true
		}
	}
	return "", false
}

// mount is one bind mount of a compose service.
type mount struct{ source, target string }

// bindMounts returns a service's bind mounts, with sources relative to this directory.
func bindMounts(t *testing.T, c compose, service string) []mount {
	t.Helper()
	var ms []mount
	for _, v := range c.Services[service].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Errorf("%s: volume %q: want source:target[:mode]", service, v)
			continue
		}
		if !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") {
			if _, ok := c.Volumes[parts[0]]; !ok {
				t.Errorf("%s: named volume %s is not declared", service, parts[0])
			}
			continue
		}
		ms = append(ms, mount{source: filepath.Join(filepath.Dir(composeFile), parts[0]), target: parts[1]})
	}
	return ms
}

// layout reproduces a service's bind mounts under a temporary root, so that a configuration
// can be checked with the files where the container sees them.
func layout(t *testing.T, c compose, service string) string {
	t.Helper()
	root := t.TempDir()
	for _, m := range bindMounts(t, c, service) {
		dst := filepath.Join(root, m.target)
		info, err := os.Stat(m.source)
		if err != nil {
			t.Fatalf("%s mounts %s: %v", service, m.source, err)
		}
		if info.IsDir() {
			if err := os.CopyFS(dst, os.DirFS(m.source)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(m.source)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// listens returns the host:port pairs each service answers on inside the compose network.
func listens(t *testing.T, c compose) map[string]bool {
	t.Helper()
	at := map[string]bool{}
	add := func(service, port string) {
		at[service+":"+port] = true
		for _, n := range c.Services[service].Networks {
			for _, alias := range n.Aliases {
				at[alias+":"+port] = true
			}
		}
	}
	add("nats", "4222")
	if m, ok := flag(c.Services["nats"].Command, "-m"); ok {
		add("nats", m)
	}
	if p, ok := flag(c.Services["nats-exporter"].Command, "-port"); ok {
		add("nats-exporter", p)
	} else {
		add("nats-exporter", "7777")
	}
	if l, ok := flag(c.Services["emulator"].Command, "-listen"); ok {
		_, p, _ := net.SplitHostPort(l)
		add("emulator", p)
	}
	// cpcancel lives in the emulator's network namespace.
	if _, p, err := net.SplitHostPort(c.Services["cpcancel"].Environment["CPCANCEL_HTTP_ADDR"]); err == nil {
		add("emulator", p)
	}
	add("prometheus", "9090")
	add("grafana", "3000")
	// Jaeger all-in-one: OTLP over gRPC and HTTP, the UI and query API.
	for _, p := range []string{"4317", "4318", "16686"} {
		add("jaeger", p)
	}
	return at
}

func TestCompose(t *testing.T) {
	c := readCompose(t)
	for _, name := range []string{"nats", "nats-exporter", "emulator", "cpcancel", "jaeger", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("images", func(t *testing.T) {
		for name, s := range c.Services {
			if s.Build != nil {
				ctx := filepath.Join(filepath.Dir(composeFile), s.Build.Context)
				if _, err := os.Stat(filepath.Join(ctx, s.Build.Dockerfile)); err != nil {
					t.Errorf("%s: build %s: %v", name, s.Build.Context, err)
				}
				if abs, _ := filepath.Abs(ctx); abs != mustAbs(t, "..") {
					t.Errorf("%s: builds %s, not the repository root", name, s.Build.Context)
				}
				continue
			}
			_, tag, ok := strings.Cut(s.Image, ":")
			if !ok || tag == "" || tag == "latest" {
				t.Errorf("%s: image %q is not pinned to a version", name, s.Image)
			}
		}
	})

	t.Run("ports", func(t *testing.T) {
		for name, s := range c.Services {
			for _, p := range s.Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("%s: port %s is published beyond the host's loopback", name, p)
				}
			}
		}
		for _, want := range []struct{ service, port string }{
			{"nats", "4222"}, {"nats", "8222"}, {"emulator", "8080"}, {"emulator", "8081"},
			{"prometheus", "9090"}, {"grafana", "3000"}, {"jaeger", "16686"},
		} {
			if !slices.Contains(c.Services[want.service].Ports, "127.0.0.1:"+want.port+":"+want.port) {
				t.Errorf("%s does not publish %s", want.service, want.port)
			}
		}
	})

	t.Run("nats", func(t *testing.T) {
		cmd := c.Services["nats"].Command
		if !slices.Contains(cmd, "-js") {
			t.Errorf("nats %v: JetStream not enabled (-js)", cmd)
		}
		if m, _ := flag(cmd, "-m"); m != "8222" {
			t.Errorf("nats %v: monitoring port %q, want 8222", cmd, m)
		}
		exp := c.Services["nats-exporter"].Command
		if p, _ := flag(exp, "-prefix"); p != "nats" {
			t.Errorf("nats-exporter %v: -prefix %q, want nats (the dashboard and alerts read nats_*)", exp, p)
		}
		if j, _ := flag(exp, "-jsz"); j != "all" && j != "consumers" {
			t.Errorf("nats-exporter %v: -jsz %q, want all or consumers", exp, j)
		}
		if !slices.Contains(exp, "http://nats:8222") {
			t.Errorf("nats-exporter %v does not read nats's monitoring port", exp)
		}
	})

	t.Run("cpcancel", func(t *testing.T) {
		cp, emu := c.Services["cpcancel"], c.Services["emulator"]
		cfg := defaultConfig(t, cp.Environment)
		validate(t, cfg)
		known := configVariables(t)
		for name := range cp.Environment {
			if !known[name] && !otelVariables[name] {
				t.Errorf("environment %s: the service reads no such variable", name)
			}
		}
		// Traces go to the compose stack's trace backend, over OTLP/HTTP (the only protocol
		// cpcancel exports), with a service name to find them by.
		if u, err := url.Parse(cp.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]); err != nil || u.Scheme != "http" || !listens(t, c)[u.Host] || !strings.HasPrefix(u.Host, "jaeger:") || u.Port() != "4318" {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q is not jaeger's OTLP/HTTP port", cp.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
		}
		if cp.Environment["OTEL_SERVICE_NAME"] == "" {
			t.Error("no OTEL_SERVICE_NAME: traces would be filed under unknown_service")
		}
		if u, err := url.Parse(cfg.NATS.URL); err != nil || u.Hostname() != "nats" {
			t.Errorf("NATS_URL %q does not name the nats service", cfg.NATS.URL)
		}
		// Plain http is allowed to loopback only: cpcancel shares the emulator's network namespace
		// and calls it there.
		if cp.NetworkMode != "service:emulator" {
			t.Errorf("network_mode %q, want service:emulator", cp.NetworkMode)
		}
		if len(cp.Ports) > 0 {
			t.Error("ports on cpcancel: with network_mode service:emulator they belong to the emulator")
		}
		base, _ := url.Parse(cfg.CloudPartner.BaseURL)
		if l, _ := flag(emu.Command, "-listen"); !strings.HasSuffix(l, ":"+base.Port()) {
			t.Errorf("cpcancel calls %s, the emulator listens on %q", cfg.CloudPartner.BaseURL, l)
		}
		if tok, _ := flag(emu.Command, "-token"); tok == "" || tok != cfg.CloudPartner.Token {
			t.Errorf("the emulator wants token %q, cpcancel sends %q", tok, cfg.CloudPartner.Token)
		}
		if emu.Command[0] != "emulator" {
			t.Errorf("emulator command %v, want the emulator subcommand", emu.Command)
		}
		if emu.Image != cp.Image {
			t.Errorf("emulator image %q, want cpcancel's own, %q", emu.Image, cp.Image)
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		// The image's own flags are replaced by command: it must name them again.
		cmd := c.Services["prometheus"].Command
		if f, _ := flag(cmd, "--config.file"); f != "/etc/prometheus/prometheus.yml" {
			t.Errorf("prometheus %v: --config.file %q, want the mounted /etc/prometheus/prometheus.yml", cmd, f)
		}
		if f, _ := flag(cmd, "--storage.tsdb.path"); f != "/prometheus" {
			t.Errorf("prometheus %v: --storage.tsdb.path %q, want /prometheus (its volume)", cmd, f)
		}
		if f, _ := flag(cmd, "--enable-feature"); !slices.Contains(strings.Split(f, ","), "exemplar-storage") {
			t.Errorf("prometheus %v: exemplar storage off (--enable-feature=exemplar-storage): no trace links on the latency panels", cmd)
		}
		root := layout(t, c, "prometheus")
		config := filepath.Join(root, "/etc/prometheus/prometheus.yml")
		runPromtool(t, "check", "config", "--lint=all", "--lint-fatal", config)

		var pc struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		decodeInto(t, "prometheus.yml", readYAML(t, config)[0], &pc)
		rules := false
		for _, f := range pc.RuleFiles {
			data, err := os.ReadFile(filepath.Join(filepath.Dir(config), f))
			if err != nil {
				t.Errorf("rule file %s is not mounted: %v", f, err)
				continue
			}
			alerts, _ := os.ReadFile(alertsFile)
			rules = rules || string(data) == string(alerts)
		}
		if !rules {
			t.Errorf("Prometheus does not load %s", alertsFile)
		}
		at := listens(t, c)
		jobs := map[string]bool{}
		for _, sc := range pc.ScrapeConfigs {
			jobs[sc.JobName] = true
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					if !at[target] && target != "localhost:9090" {
						t.Errorf("job %s scrapes %s, which no service of compose.yaml listens on", sc.JobName, target)
					}
				}
			}
		}
		if !jobs[scrapeJob] || !jobs["nats"] {
			t.Errorf("scrape jobs %v, want %s (the alerts' job) and nats", jobs, scrapeJob)
		}
		for _, sc := range pc.ScrapeConfigs {
			if sc.JobName == scrapeJob && (len(sc.StaticConfigs) != 1 || !slices.Equal(sc.StaticConfigs[0].Targets, []string{"cpcancel:8080"})) {
				t.Errorf("job %s scrapes %+v, want cpcancel:8080", scrapeJob, sc.StaticConfigs)
			}
		}
	})

	t.Run("grafana", func(t *testing.T) {
		root := layout(t, c, "grafana")
		var ds struct {
			Datasources []struct {
				Type, URL string
				UID       string `yaml:"uid"`
				JSONData  struct {
					ExemplarTraceIDDestinations []struct {
						Name          string `yaml:"name"`
						DatasourceUID string `yaml:"datasourceUid"`
					} `yaml:"exemplarTraceIdDestinations"`
				} `yaml:"jsonData"`
			} `yaml:"datasources"`
		}
		dsFiles, _ := filepath.Glob(filepath.Join(root, "etc/grafana/provisioning/datasources/*.yaml"))
		if len(dsFiles) != 1 {
			t.Fatalf("want one datasource file mounted, got %v", dsFiles)
		}
		decodeInto(t, "datasources", readYAML(t, dsFiles[0])[0], &ds)
		byType := map[string]int{}
		for i, d := range ds.Datasources {
			if _, dup := byType[d.Type]; dup {
				t.Errorf("two datasources of type %s", d.Type)
			}
			byType[d.Type] = i
		}
		pi, okP := byType["prometheus"]
		ji, okJ := byType["jaeger"]
		if len(ds.Datasources) != 2 || !okP || !okJ {
			t.Fatalf("datasources %+v, want one prometheus and one jaeger", ds.Datasources)
		}
		prom, jaeger := ds.Datasources[pi], ds.Datasources[ji]
		for _, d := range []struct{ url, service string }{{prom.URL, "prometheus"}, {jaeger.URL, "jaeger"}} {
			if u, err := url.Parse(d.url); err != nil || !listens(t, c)[u.Host] || !strings.HasPrefix(u.Host, d.service+":") {
				t.Errorf("datasource URL %q is not the %s service", d.url, d.service)
			}
		}
		if u, _ := url.Parse(jaeger.URL); u != nil && u.Port() != "16686" {
			t.Errorf("jaeger datasource URL %q: want the query port 16686", jaeger.URL)
		}
		// Exemplars link to their trace by the label cpcancel puts its trace id in.
		dest := prom.JSONData.ExemplarTraceIDDestinations
		if len(dest) != 1 || dest[0].Name != exemplarTraceLabel || dest[0].DatasourceUID == "" || dest[0].DatasourceUID != jaeger.UID {
			t.Errorf("prometheus exemplarTraceIdDestinations %+v, want one: %s to the jaeger datasource (uid %q)", dest, exemplarTraceLabel, jaeger.UID)
		}

		var dp struct {
			Providers []struct {
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		dpFiles, _ := filepath.Glob(filepath.Join(root, "etc/grafana/provisioning/dashboards/*.yaml"))
		if len(dpFiles) != 1 {
			t.Fatalf("want one dashboard provider file mounted, got %v", dpFiles)
		}
		decodeInto(t, "dashboard providers", readYAML(t, dpFiles[0])[0], &dp)
		if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
			t.Fatalf("providers %+v, want one of type file", dp.Providers)
		}
		want, err := os.ReadFile(dashboardFile)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, dp.Providers[0].Options.Path, filepath.Base(dashboardFile)))
		if err != nil || string(got) != string(want) {
			t.Errorf("the provider's path %s does not hold %s (%v)", dp.Providers[0].Options.Path, dashboardFile, err)
		}
		if home := c.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
			if _, err := os.Stat(filepath.Join(root, home)); err != nil {
				t.Errorf("home dashboard %s is not mounted", home)
			}
		}
	})

	t.Run("mounts", func(t *testing.T) {
		for name := range c.Services {
			for _, m := range bindMounts(t, c, name) {
				if _, err := os.Stat(m.source); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, m.source)
				}
			}
		}
	})
}

// otelVariables are the OpenTelemetry SDK's standard variables that the compose stack sets on
// cpcancel (internal/tracing reads them).
var otelVariables = map[string]bool{"OTEL_EXPORTER_OTLP_ENDPOINT": true, "OTEL_SERVICE_NAME": true}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
