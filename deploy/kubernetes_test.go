package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/service"
)

// manifest is one Kubernetes object of deploy/kubernetes.
type manifest struct {
	file string
	doc  map[string]any
}

func (m manifest) kind() string { s, _ := m.doc["kind"].(string); return s }

func (m manifest) name() string {
	meta, _ := m.doc["metadata"].(map[string]any)
	s, _ := meta["name"].(string)
	return s
}

// apiVersions is every kind the base may hold, with its API version.
var apiVersions = map[string]string{
	"ServiceAccount":      "v1",
	"Service":             "v1",
	"Deployment":          "apps/v1",
	"PodDisruptionBudget": "policy/v1",
	"ServiceMonitor":      "monitoring.coreos.com/v1",
	"PrometheusRule":      "monitoring.coreos.com/v1",
	"ScaledObject":        "keda.sh/v1alpha1",
	"Stream":              "jetstream.nats.io/v1beta2",
	"Consumer":            "jetstream.nats.io/v1beta2",
	"KeyValue":            "jetstream.nats.io/v1beta2",
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Resources  []string `yaml:"resources"`
	Patches    []struct {
		Target struct{ Kind, Name string } `yaml:"target"`
		Patch  string                      `yaml:"patch"`
	} `yaml:"patches"`
}

// readBase reads the base's kustomization and the manifests it lists, checking that every YAML
// file of the directory is one of them and parses, and that each object has the fields every
// Kubernetes object needs.
func readBase(t *testing.T) []manifest {
	t.Helper()
	var k kustomization
	decodeInto(t, "kustomization", readYAML(t, filepath.Join(kubernetesDir, "kustomization.yaml"))[0], &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "*.y*ml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml's resources: it would never be deployed", f)
		}
	}
	var ms []manifest
	for _, r := range k.Resources {
		path := filepath.Join(kubernetesDir, r)
		for _, doc := range readYAML(t, path) {
			m := manifest{file: r, doc: doc}
			want, known := apiVersions[m.kind()]
			switch {
			case !known:
				t.Errorf("%s: unexpected kind %q", r, m.kind())
			case doc["apiVersion"] != want:
				t.Errorf("%s: %s has apiVersion %v, want %s", r, m.kind(), doc["apiVersion"], want)
			}
			if m.name() == "" {
				t.Errorf("%s: a %s without metadata.name", r, m.kind())
			}
			if _, ok := doc["spec"]; !ok && m.kind() != "ServiceAccount" {
				t.Errorf("%s: %s %s has no spec", r, m.kind(), m.name())
			}
			ms = append(ms, m)
		}
	}
	return ms
}

// only returns the one object of a kind, failing unless there is exactly one.
func only(t *testing.T, ms []manifest, kind string, into any) {
	t.Helper()
	var found []manifest
	for _, m := range ms {
		if m.kind() == kind {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, found %d", kind, len(found))
	}
	decodeInto(t, kind, found[0].doc, into)
}

func all[T any](t *testing.T, ms []manifest, kind string) []T {
	t.Helper()
	var out []T
	for _, m := range ms {
		if m.kind() == kind {
			var v T
			decodeInto(t, kind, m.doc, &v)
			out = append(out, v)
		}
	}
	return out
}

type meta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type envVar struct {
	Name      string         `yaml:"name"`
	Value     *string        `yaml:"value"`
	ValueFrom map[string]any `yaml:"valueFrom"`
}

type deployment struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Replicas *int     `yaml:"replicas"`
		Selector selector `yaml:"selector"`
		Template struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				ServiceAccountName            string `yaml:"serviceAccountName"`
				TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
					RunAsUser      *int  `yaml:"runAsUser"`
					SeccompProfile struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []struct {
					Name  string `yaml:"name"`
					Image string `yaml:"image"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env             []envVar                                     `yaml:"env"`
					StartupProbe    *probe                                       `yaml:"startupProbe"`
					LivenessProbe   *probe                                       `yaml:"livenessProbe"`
					ReadinessProbe  *probe                                       `yaml:"readinessProbe"`
					Resources       struct{ Requests, Limits map[string]string } `yaml:"resources"`
					SecurityContext struct {
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
						RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
							Add  []string `yaml:"add"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						SubPath   string `yaml:"subPath"`
						ReadOnly  bool   `yaml:"readOnly"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []struct{ Key, Path string }
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	Spec struct {
		Selector  selector `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type podDisruptionBudget struct {
	Spec struct {
		MaxUnavailable any      `yaml:"maxUnavailable"`
		MinAvailable   any      `yaml:"minAvailable"`
		Selector       selector `yaml:"selector"`
	} `yaml:"spec"`
}

type scaledObject struct {
	Spec struct {
		ScaleTargetRef  struct{ APIVersion, Kind, Name string } `yaml:"scaleTargetRef"`
		MinReplicaCount *int                                    `yaml:"minReplicaCount"`
		MaxReplicaCount *int                                    `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

// NACK's v1beta2 specs (pkg/jetstream/apis/jetstream/v1beta2 of nats-io/nack), the fields used.
type nackStream struct {
	Spec struct {
		Name            string   `yaml:"name"`
		Description     string   `yaml:"description"`
		Subjects        []string `yaml:"subjects"`
		Retention       string   `yaml:"retention"`
		Storage         string   `yaml:"storage"`
		Replicas        int      `yaml:"replicas"`
		MaxAge          string   `yaml:"maxAge"`
		MaxBytes        int64    `yaml:"maxBytes"`
		Discard         string   `yaml:"discard"`
		DuplicateWindow string   `yaml:"duplicateWindow"`
	} `yaml:"spec"`
}

type nackConsumer struct {
	Spec struct {
		StreamName    string `yaml:"streamName"`
		DurableName   string `yaml:"durableName"`
		Description   string `yaml:"description"`
		FilterSubject string `yaml:"filterSubject"`
		DeliverPolicy string `yaml:"deliverPolicy"`
		AckPolicy     string `yaml:"ackPolicy"`
		AckWait       string `yaml:"ackWait"`
		MaxDeliver    int    `yaml:"maxDeliver"`
		MaxAckPending int    `yaml:"maxAckPending"`
	} `yaml:"spec"`
}

type nackKeyValue struct {
	Spec struct {
		Bucket         string `yaml:"bucket"`
		Description    string `yaml:"description"`
		History        int    `yaml:"history"`
		TTL            string `yaml:"ttl"`
		MaxBytes       int64  `yaml:"maxBytes"`
		Storage        string `yaml:"storage"`
		Replicas       int    `yaml:"replicas"`
		LimitMarkerTTL int64  `yaml:"limitMarkerTtl"` // nanoseconds: NACK maps it to a time.Duration
	} `yaml:"spec"`
}

func subset(small, big map[string]string) bool {
	if len(small) == 0 {
		return false
	}
	for k, v := range small {
		if big[k] != v {
			return false
		}
	}
	return true
}

// deploymentConfig is the service's configuration as the Deployment sets it.
func deploymentConfig(t *testing.T, d deployment) (config.Config, map[string]string) {
	t.Helper()
	known := configVariables(t)
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
		case e.ValueFrom == nil:
			t.Errorf("env %s has neither value nor valueFrom", e.Name)
		}
		if (strings.HasPrefix(e.Name, config.Prefix+"_") || e.Name == "NATS_URL") && !known[e.Name] {
			t.Errorf("env %s: the service reads no such variable", e.Name)
		}
	}
	return defaultConfig(t, env), env
}

func TestKubernetes(t *testing.T) {
	ms := readBase(t)
	var d deployment
	only(t, ms, "Deployment", &d)
	cfg, env := deploymentConfig(t, d)
	validate(t, cfg)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	podLabels := d.Spec.Template.Metadata.Labels

	t.Run("Deployment", func(t *testing.T) {
		if !subset(d.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("selector %v does not select the pod labels %v", d.Spec.Selector.MatchLabels, podLabels)
		}
		if d.Spec.Replicas != nil {
			t.Error("replicas is set: the ScaledObject owns the count, and every apply would reset it")
		}
		if c.Image != "cpcancel" {
			t.Errorf("image %q, want cpcancel (kustomization.yaml's images entry sets the real one)", c.Image)
		}
		for name, want := range map[string]string{"CPCANCEL_PROVISION": "false", "CPCANCEL_LOG_FORMAT": "json"} {
			if env[name] != want {
				t.Errorf("env %s = %q, want %q", name, env[name], want)
			}
		}
		if cfg.NATS.URL == "" {
			t.Error("no NATS_URL: the service would start an embedded server")
		}
		for _, p := range shutdownProblems(cfg, env, pod.TerminationGracePeriodSeconds) {
			t.Error(p)
		}
	})

	t.Run("security", func(t *testing.T) {
		sc := pod.SecurityContext
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Error("pod: runAsNonRoot is not true")
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
			t.Errorf("pod: runAsUser %v, want 65532, the Dockerfile's USER", sc.RunAsUser)
		}
		if sc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("pod: seccompProfile %q, want RuntimeDefault", sc.SeccompProfile.Type)
		}
		csc := c.SecurityContext
		if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
			t.Error("container: readOnlyRootFilesystem is not true")
		}
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
			t.Error("container: allowPrivilegeEscalation is not false")
		}
		if csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot {
			t.Error("container: runAsNonRoot is not true")
		}
		if !slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) || len(csc.Capabilities.Add) > 0 {
			t.Errorf("container: capabilities drop %v add %v, want drop [ALL] and nothing added", csc.Capabilities.Drop, csc.Capabilities.Add)
		}
		for _, k := range []string{"cpu", "memory"} {
			if c.Resources.Requests[k] == "" {
				t.Errorf("no %s request", k)
			}
		}
		if c.Resources.Limits["memory"] == "" {
			t.Error("no memory limit")
		}
	})

	// The metrics port: the service's HTTP address, named so that the probes, the Service and
	// the ServiceMonitor refer to it by name.
	_, httpPort, _ := strings.Cut(cfg.HTTP.Addr, ":")
	var metricsPort int
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if strconv.Itoa(metricsPort) != httpPort {
		t.Errorf("container port metrics = %d, the service listens on %s (CPCANCEL_HTTP_ADDR)", metricsPort, cfg.HTTP.Addr)
	}

	t.Run("probes", func(t *testing.T) {
		for _, p := range []struct {
			name  string
			probe *probe
			path  string
		}{{"startup", c.StartupProbe, "/healthz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
			switch {
			case p.probe == nil || p.probe.HTTPGet == nil:
				t.Errorf("no HTTP %s probe", p.name)
			case p.probe.HTTPGet.Path != p.path:
				t.Errorf("%s probe on %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
			case p.probe.HTTPGet.Port != "metrics":
				t.Errorf("%s probe on port %v, want metrics", p.name, p.probe.HTTPGet.Port)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		if cfg.CloudPartner.TokenFile == "" || cfg.CloudPartner.Token != "" {
			t.Fatal("want the token from CPCANCEL_CLOUDPARTNER_TOKEN_FILE, never inline")
		}
		var mount string
		for _, vm := range c.VolumeMounts {
			if strings.HasPrefix(cfg.CloudPartner.TokenFile, vm.MountPath+"/") {
				if vm.SubPath != "" {
					t.Errorf("volume %s is mounted with subPath: the kubelet would never update the token", vm.Name)
				}
				if !vm.ReadOnly {
					t.Errorf("volume %s is not read-only", vm.Name)
				}
				mount = vm.Name
				for _, v := range pod.Volumes {
					if v.Name != vm.Name {
						continue
					}
					if v.Secret == nil || v.Secret.SecretName == "" {
						t.Errorf("volume %s is not a Secret", v.Name)
						continue
					}
					file := strings.TrimPrefix(cfg.CloudPartner.TokenFile, vm.MountPath+"/")
					if len(v.Secret.Items) > 0 && !slices.ContainsFunc(v.Secret.Items, func(i struct{ Key, Path string }) bool { return i.Path == file }) {
						t.Errorf("Secret %s does not project %s", v.Secret.SecretName, file)
					}
				}
			}
		}
		if mount == "" {
			t.Errorf("no volume mounted where CPCANCEL_CLOUDPARTNER_TOKEN_FILE=%s points", cfg.CloudPartner.TokenFile)
		}
	})

	t.Run("ServiceAccount", func(t *testing.T) {
		var sa struct{ Metadata meta }
		only(t, ms, "ServiceAccount", &sa)
		if pod.ServiceAccountName != sa.Metadata.Name {
			t.Errorf("pod runs as %q, the ServiceAccount is %q", pod.ServiceAccountName, sa.Metadata.Name)
		}
	})

	var svc k8sService
	only(t, ms, "Service", &svc)
	t.Run("Service", func(t *testing.T) {
		if svc.Metadata.Name != scrapeJob {
			t.Errorf("Service %q: its name is the job label the alerts select on, %q", svc.Metadata.Name, scrapeJob)
		}
		if !subset(svc.Spec.Selector, podLabels) {
			t.Errorf("selector %v does not select the pod labels %v", svc.Spec.Selector, podLabels)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort != "metrics" {
			t.Errorf("ports %+v, want one named metrics targeting the container port metrics", svc.Spec.Ports)
		}
	})

	t.Run("ServiceMonitor", func(t *testing.T) {
		var sm serviceMonitor
		only(t, ms, "ServiceMonitor", &sm)
		if !subset(sm.Spec.Selector.MatchLabels, svc.Metadata.Labels) {
			t.Errorf("selector %v does not select the Service's labels %v", sm.Spec.Selector.MatchLabels, svc.Metadata.Labels)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("endpoints %+v, want port metrics, path /metrics", sm.Spec.Endpoints)
		}
	})

	var so scaledObject
	only(t, ms, "ScaledObject", &so)
	t.Run("PodDisruptionBudget", func(t *testing.T) {
		var pdb podDisruptionBudget
		only(t, ms, "PodDisruptionBudget", &pdb)
		if pdb.Spec.MaxUnavailable != 1 || pdb.Spec.MinAvailable != nil {
			t.Errorf("maxUnavailable %v minAvailable %v, want maxUnavailable 1 only", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
		}
		if !subset(pdb.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("selector %v does not select the pod labels %v", pdb.Spec.Selector.MatchLabels, podLabels)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 2 {
			t.Error("the ScaledObject may scale below 2 replicas: a drain would stop consumption")
		}
	})

	t.Run("ScaledObject", func(t *testing.T) {
		ref := so.Spec.ScaleTargetRef
		if ref.Name != d.Metadata.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
			t.Errorf("scales %s %s, want Deployment %s", ref.Kind, ref.Name, d.Metadata.Name)
		}
		if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
			t.Errorf("maxReplicaCount %v below minReplicaCount", so.Spec.MaxReplicaCount)
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
			t.Fatalf("triggers %+v, want one nats-jetstream trigger", so.Spec.Triggers)
		}
		md := so.Spec.Triggers[0].Metadata
		if md["stream"] != cfg.Streams.RequestStream || md["consumer"] != cfg.Streams.Consumer {
			t.Errorf("scales on %s/%s, the service consumes %s/%s", md["stream"], md["consumer"], cfg.Streams.RequestStream, cfg.Streams.Consumer)
		}
		if md["natsServerMonitoringEndpoint"] == "" || md["account"] == "" {
			t.Errorf("trigger metadata %v lacks natsServerMonitoringEndpoint or account", md)
		}
		if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
			t.Errorf("lagThreshold %q, want a positive number", md["lagThreshold"])
		}
	})

	t.Run("NACK", func(t *testing.T) { testNACK(t, ms, cfg) })
}

// TestPrometheusRule checks the PrometheusRule holds exactly the rules of alerts.yml, which
// promtool checks and tests.
func TestPrometheusRule(t *testing.T) {
	var pr struct {
		Spec struct {
			Groups any `yaml:"groups"`
		} `yaml:"spec"`
	}
	only(t, readBase(t), "PrometheusRule", &pr)
	if want := readYAML(t, alertsFile)[0]["groups"]; !reflect.DeepEqual(pr.Spec.Groups, want) {
		t.Errorf("the PrometheusRule's groups differ from %s: regenerate it (see the command at its top)", alertsFile)
	}
}

// shutdownProblems checks the timeouts of a pod's shutdown, as the Deployment sets them (env)
// or else as the service defaults them (cfg). On SIGTERM in-flight work gets
// CPCANCEL_SHUTDOWN_TIMEOUT, which must cover one API call (CPCANCEL_HTTP_TIMEOUT) and storing its
// result; then come the NATS drain (up to 10s) and the HTTP server's shutdown (up to 5s)
// (internal/service). The kubelet must wait for all of it.
func shutdownProblems(cfg config.Config, env map[string]string, graceSeconds *int) []string {
	from := func(name string) string {
		if _, set := env[name]; set {
			return "set in the Deployment"
		}
		return "the default"
	}
	var problems []string
	if need := cfg.CloudPartner.HTTPTimeout + 2*config.PublishTimeout; cfg.Processing.ShutdownTimeout < need {
		problems = append(problems, fmt.Sprintf("CPCANCEL_SHUTDOWN_TIMEOUT %s (%s) does not cover one API call of CPCANCEL_HTTP_TIMEOUT %s (%s) and storing its result: want at least %s",
			cfg.Processing.ShutdownTimeout, from("CPCANCEL_SHUTDOWN_TIMEOUT"), cfg.CloudPartner.HTTPTimeout, from("CPCANCEL_HTTP_TIMEOUT"), need))
	}
	grace := 30 * time.Second // Kubernetes' default
	if graceSeconds != nil {
		grace = time.Duration(*graceSeconds) * time.Second
	}
	if need := cfg.Processing.ShutdownTimeout + 15*time.Second; grace < need {
		problems = append(problems, fmt.Sprintf("terminationGracePeriodSeconds is %s, want at least %s (CPCANCEL_SHUTDOWN_TIMEOUT %s, %s, + 15s)",
			grace, need, cfg.Processing.ShutdownTimeout, from("CPCANCEL_SHUTDOWN_TIMEOUT")))
	}
	return problems
}

// TestShutdownProblems checks the check of the Deployment's shutdown timing against Deployments
// that get it wrong.
func TestShutdownProblems(t *testing.T) {
	seconds := func(n int) *int { return &n }
	tests := []struct {
		name  string
		env   map[string]string
		grace *int
		want  []string
	}{
		{"defaults", nil, seconds(60), nil},
		{"Kubernetes' default grace period", nil, nil, []string{
			"terminationGracePeriodSeconds is 30s, want at least 1m0s (CPCANCEL_SHUTDOWN_TIMEOUT 45s, the default, + 15s)",
		}},
		{"a shorter shutdown timeout", map[string]string{"CPCANCEL_SHUTDOWN_TIMEOUT": "30s"}, seconds(45), []string{
			"CPCANCEL_SHUTDOWN_TIMEOUT 30s (set in the Deployment) does not cover one API call of CPCANCEL_HTTP_TIMEOUT 30s (the default) and storing its result: want at least 40s",
		}},
		{"a longer API timeout", map[string]string{"CPCANCEL_HTTP_TIMEOUT": "1m"}, seconds(60), []string{
			"CPCANCEL_SHUTDOWN_TIMEOUT 45s (the default) does not cover one API call of CPCANCEL_HTTP_TIMEOUT 1m0s (set in the Deployment) and storing its result: want at least 1m10s",
		}},
		{"both longer", map[string]string{"CPCANCEL_HTTP_TIMEOUT": "1m", "CPCANCEL_SHUTDOWN_TIMEOUT": "70s"}, seconds(80), []string{
			"terminationGracePeriodSeconds is 1m20s, want at least 1m25s (CPCANCEL_SHUTDOWN_TIMEOUT 1m10s, set in the Deployment, + 15s)",
		}},
		{"both longer, and grace", map[string]string{"CPCANCEL_HTTP_TIMEOUT": "1m", "CPCANCEL_SHUTDOWN_TIMEOUT": "70s"}, seconds(85), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shutdownProblems(defaultConfig(t, tt.env), tt.env, tt.grace)
			if !slices.Equal(got, tt.want) {
				t.Errorf("shutdownProblems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// testNACK compares the NACK resources with what the service provisions itself for the same
// configuration, so that binding to them (CPCANCEL_PROVISION=false) behaves the same.
func testNACK(t *testing.T, ms []manifest, cfg config.Config) {
	topo := service.Topology(cfg)
	retention := map[jetstream.RetentionPolicy]string{
		jetstream.LimitsPolicy: "limits", jetstream.InterestPolicy: "interest", jetstream.WorkQueuePolicy: "workqueue",
	}
	storage := map[jetstream.StorageType]string{jetstream.FileStorage: "file", jetstream.MemoryStorage: "memory"}
	discard := map[jetstream.DiscardPolicy]string{jetstream.DiscardOld: "old", jetstream.DiscardNew: "new"}
	deliver := map[jetstream.DeliverPolicy]string{jetstream.DeliverAllPolicy: "all", jetstream.DeliverNewPolicy: "new", jetstream.DeliverLastPolicy: "last"}
	ack := map[jetstream.AckPolicy]string{jetstream.AckExplicitPolicy: "explicit", jetstream.AckAllPolicy: "all", jetstream.AckNonePolicy: "none"}
	type field struct {
		name      string
		got, want any
	}

	nackStreams := all[nackStream](t, ms, "Stream")
	streams := map[string]nackStream{}
	for _, s := range nackStreams {
		streams[s.Spec.Name] = s
	}
	if len(streams) != len(topo.Streams()) {
		t.Errorf("%d Streams, the service provisions %d", len(streams), len(topo.Streams()))
	}
	for _, want := range topo.Streams() {
		got, ok := streams[want.Name]
		if !ok {
			t.Errorf("no Stream %s", want.Name)
			continue
		}
		s := got.Spec
		for _, f := range []field{
			{"description", s.Description, want.Description},
			{"subjects", strings.Join(s.Subjects, ","), strings.Join(want.Subjects, ",")},
			{"retention", s.Retention, retention[want.Retention]},
			{"storage", s.Storage, storage[want.Storage]},
			{"maxAge", parseDuration(t, s.MaxAge), want.MaxAge},
			{"maxBytes", s.MaxBytes, want.MaxBytes},
			{"discard", s.Discard, discard[want.Discard]},
			{"duplicateWindow", parseDuration(t, s.DuplicateWindow), want.Duplicates},
		} {
			if f.got != f.want {
				t.Errorf("Stream %s: %s = %v, the service provisions %v", want.Name, f.name, f.got, f.want)
			}
		}
		if s.Replicas < 1 {
			t.Errorf("Stream %s: replicas %d", s.Name, s.Replicas)
		}
	}

	var cons nackConsumer
	only(t, ms, "Consumer", &cons)
	c, want := cons.Spec, topo.ConsumerConfig()
	for _, f := range []field{
		{"streamName", c.StreamName, cfg.Streams.RequestStream},
		{"durableName", c.DurableName, want.Durable},
		{"description", c.Description, want.Description},
		{"filterSubject", c.FilterSubject, want.FilterSubject},
		{"deliverPolicy", c.DeliverPolicy, deliver[want.DeliverPolicy]},
		{"ackPolicy", c.AckPolicy, ack[want.AckPolicy]},
		{"ackWait", parseDuration(t, c.AckWait), want.AckWait},
		{"maxDeliver", c.MaxDeliver, want.MaxDeliver},
		{"maxAckPending", c.MaxAckPending, want.MaxAckPending},
	} {
		if f.got != f.want {
			t.Errorf("Consumer: %s = %v, the service provisions %v", f.name, f.got, f.want)
		}
	}

	var kv nackKeyValue
	only(t, ms, "KeyValue", &kv)
	k, bucket := kv.Spec, topo.BucketConfig()
	for _, f := range []field{
		{"bucket", k.Bucket, bucket.Bucket},
		{"description", k.Description, bucket.Description},
		{"history", k.History, int(bucket.History)},
		{"ttl", parseDuration(t, k.TTL), bucket.TTL},
		{"maxBytes", k.MaxBytes, bucket.MaxBytes},
		{"storage", k.Storage, storage[bucket.Storage]},
		{"limitMarkerTtl", time.Duration(k.LimitMarkerTTL), bucket.LimitMarkerTTL},
	} {
		if f.got != f.want {
			t.Errorf("KeyValue: %s = %v, the service provisions %v", f.name, f.got, f.want)
		}
	}
	if k.Replicas < 1 {
		t.Errorf("KeyValue: replicas %d", k.Replicas)
	}

	t.Run("Bind", func(t *testing.T) { testNACKBind(t, nackStreams, cons, kv, topo) })
}

// testNACKBind creates what the NACK resources describe on a real server (with one replica) and
// binds to it as the service does with CPCANCEL_PROVISION=false: the service must accept it.
func testNACKBind(t *testing.T, streams []nackStream, cons nackConsumer, kv nackKeyValue, topo broker.Topology) {
	srv := natstest.Start(t)
	var total int64
	for _, s := range streams {
		total += s.Spec.MaxBytes
	}
	if room := srv.JetStreamConfig().MaxStore; room < total+kv.Spec.MaxBytes {
		t.Skipf("the test server's store has room for %d bytes, the resources reserve %d", room, total+kv.Spec.MaxBytes)
	}
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retention := map[string]jetstream.RetentionPolicy{"limits": jetstream.LimitsPolicy, "interest": jetstream.InterestPolicy, "workqueue": jetstream.WorkQueuePolicy}
	storage := map[string]jetstream.StorageType{"file": jetstream.FileStorage, "memory": jetstream.MemoryStorage}
	discard := map[string]jetstream.DiscardPolicy{"": jetstream.DiscardOld, "old": jetstream.DiscardOld, "new": jetstream.DiscardNew}
	for _, s := range streams {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: s.Spec.Name, Description: s.Spec.Description, Subjects: s.Spec.Subjects,
			Retention: retention[s.Spec.Retention], Storage: storage[s.Spec.Storage], Replicas: 1,
			MaxAge: parseDuration(t, s.Spec.MaxAge), MaxBytes: s.Spec.MaxBytes, Discard: discard[s.Spec.Discard],
			Duplicates: parseDuration(t, s.Spec.DuplicateWindow),
		})
		if err != nil {
			t.Fatalf("Stream %s: %v", s.Spec.Name, err)
		}
	}
	c := cons.Spec
	_, err := js.CreateConsumer(ctx, c.StreamName, jetstream.ConsumerConfig{
		Durable: c.DurableName, Description: c.Description, FilterSubject: c.FilterSubject,
		DeliverPolicy: map[string]jetstream.DeliverPolicy{"all": jetstream.DeliverAllPolicy, "new": jetstream.DeliverNewPolicy, "last": jetstream.DeliverLastPolicy}[c.DeliverPolicy],
		AckPolicy:     map[string]jetstream.AckPolicy{"explicit": jetstream.AckExplicitPolicy, "all": jetstream.AckAllPolicy, "none": jetstream.AckNonePolicy}[c.AckPolicy],
		AckWait:       parseDuration(t, c.AckWait), MaxDeliver: c.MaxDeliver, MaxAckPending: c.MaxAckPending,
	})
	if err != nil {
		t.Fatalf("Consumer %s: %v", c.DurableName, err)
	}
	k := kv.Spec
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: k.Bucket, Description: k.Description, History: uint8(k.History), TTL: parseDuration(t, k.TTL),
		MaxBytes: k.MaxBytes, Storage: storage[k.Storage], Replicas: 1, LimitMarkerTTL: time.Duration(k.LimitMarkerTTL),
	})
	if err != nil {
		t.Fatalf("KeyValue %s: %v", k.Bucket, err)
	}
	if _, err := broker.Bind(ctx, js, topo); err != nil {
		t.Errorf("the service would refuse the NACK resources:\n%v", err)
	}
}

func parseDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("duration %q: %v", s, err)
	}
	return d
}

// TestKubernetesComponents checks every patch of the components under deploy/kubernetes targets
// an object of the base (CI also builds the base with them).
func TestKubernetesComponents(t *testing.T) {
	ms := readBase(t)
	dirs, err := filepath.Glob(filepath.Join(kubernetesDir, "components", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no component")
	}
	for _, dir := range dirs {
		var k kustomization
		decodeInto(t, dir, readYAML(t, filepath.Join(dir, "kustomization.yaml"))[0], &k)
		if k.APIVersion != "kustomize.config.k8s.io/v1alpha1" || k.Kind != "Component" {
			t.Errorf("%s: %s %s, want kustomize.config.k8s.io/v1alpha1 Component", dir, k.APIVersion, k.Kind)
		}
		for _, p := range k.Patches {
			if !slices.ContainsFunc(ms, func(m manifest) bool { return m.kind() == p.Target.Kind && m.name() == p.Target.Name }) {
				t.Errorf("%s: patch target %s %s is not in the base", dir, p.Target.Kind, p.Target.Name)
			}
			var patch struct {
				Kind     string `yaml:"kind"`
				Metadata meta   `yaml:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(p.Patch), &patch); err != nil {
				t.Errorf("%s: patch of %s %s: %v", dir, p.Target.Kind, p.Target.Name, err)
			} else if patch.Kind != p.Target.Kind || patch.Metadata.Name != p.Target.Name {
				t.Errorf("%s: patch for %s %s patches %s %s", dir, p.Target.Kind, p.Target.Name, patch.Kind, patch.Metadata.Name)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(kubernetesDir, "components", "azure-workload-identity", "kustomization.yaml")); err != nil {
		t.Error("the Azure workload identity component is gone")
	}
}
