package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/warden-sre/warden/exporter"
	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

const namespace = "rust-security"

func TestGeneratedManifestsAreUpToDate(t *testing.T) {
	for _, g := range []struct {
		file string
		gen  func(string) ([]byte, error)
		src  string
	}{
		{PrometheusRulesFile, PrometheusRules, "../rules"},
		{DashboardsFile, DashboardConfigMaps, "../dashboards"},
	} {
		t.Run(g.file, func(t *testing.T) {
			want, err := g.gen(g.src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(g.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("deploy/%s is out of date with %s; run: go generate ./deploy", g.file, g.src)
			}
		})
	}
}

// TestPrometheusRulesCarryEveryRuleFile checks the generated objects against
// the sources by content, not by bytes: every group of every rule file is in
// the PrometheusRule named after it, with the same rules in the same order.
func TestPrometheusRulesCarryEveryRuleFile(t *testing.T) {
	objs := decodeAll(t, mustRead(t, PrometheusRulesFile))
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() != "PrometheusRule" {
			t.Fatalf("unexpected %s in %s", o.GetKind(), PrometheusRulesFile)
		}
		byName[o.GetName()] = o
	}
	files, _ := filepath.Glob("../rules/*.rules.yml")
	if len(files) == 0 || len(files) != len(byName) {
		t.Fatalf("%d rule files, %d PrometheusRules", len(files), len(byName))
	}
	for _, f := range files {
		var src map[string]any
		if err := utilyaml.Unmarshal(mustRead(t, f), &src); err != nil {
			t.Fatal(err)
		}
		name := "warden-" + objectName(strings.TrimSuffix(filepath.Base(f), ".rules.yml"))
		obj, ok := byName[name]
		if !ok {
			t.Fatalf("%s: no PrometheusRule %s", f, name)
		}
		groups, _, _ := unstructured.NestedSlice(obj.Object, "spec", "groups")
		if !reflect.DeepEqual(groups, src["groups"]) {
			t.Errorf("%s: PrometheusRule %s groups differ from the file", f, name)
		}
	}
}

func TestDashboardConfigMapsAreLabelledForTheSidecar(t *testing.T) {
	files, _ := filepath.Glob("../dashboards/*.json")
	objs := decodeAll(t, mustRead(t, DashboardsFile))
	if len(objs) != len(files) {
		t.Fatalf("%d dashboards, %d ConfigMaps", len(files), len(objs))
	}
	for _, o := range objs {
		if o.GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("ConfigMap %s lacks grafana_dashboard: \"1\"", o.GetName())
		}
		data, _, _ := unstructured.NestedStringMap(o.Object, "data")
		for key, content := range data {
			src := mustRead(t, filepath.Join("../dashboards", key))
			if !jsonEqual(t, []byte(content), src) {
				t.Errorf("ConfigMap %s key %s differs from dashboards/%s", o.GetName(), key, key)
			}
		}
	}
}

func TestGeneratorRejectsBrokenRules(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"bad-expr.rules.yml":   "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x[5m]\n",
		"unknown.rules.yml":    "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    severity: critical\n",
		"both-kinds.rules.yml": "groups:\n- name: g\n  rules:\n  - alert: A\n    record: a\n    expr: up\n",
	} {
		sub := filepath.Join(dir, strings.TrimSuffix(name, ".rules.yml"))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := PrometheusRules(sub); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := PrometheusRules(t.TempDir()); err == nil {
		t.Error("empty rules directory accepted")
	}
}

// TestKustomizeOutputPassesServerSideDryRun renders the base and applies
// every object with a server-side dry-run and strict field validation to a
// real kube-apiserver that has the prometheus-operator CRDs, so a misspelled
// field or an invalid value fails here and not in a cluster.
func TestKustomizeOutputPassesServerSideDryRun(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	checkSecurity(t, objs)

	kube := testenv.StartKube(t, testenv.WithCRDs("testdata/crds"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	apply := func(o *unstructured.Unstructured) error {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			if o.GetNamespace() == "" {
				return fmt.Errorf("%s %s: namespaced object without namespace", o.GetKind(), o.GetName())
			}
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		_, err = ri.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict", FieldManager: "warden-deploy-test"})
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		return nil
	}
	for _, o := range objs {
		if err := apply(o); err != nil {
			t.Error(err)
		}
	}

	// The check has teeth: a misspelled field in a CRD-typed object and an
	// invalid value in a built-in one are both refused.
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceMonitor":
			bad := o.DeepCopy()
			eps, _, _ := unstructured.NestedSlice(bad.Object, "spec", "endpoints")
			eps[0].(map[string]any)["intervall"] = "30s"
			_ = unstructured.SetNestedSlice(bad.Object, eps, "spec", "endpoints")
			if err := apply(bad); err == nil || !strings.Contains(err.Error(), "intervall") {
				t.Errorf("ServiceMonitor with a misspelled field: err = %v, want an unknown-field error", err)
			}
		case "Deployment":
			bad := o.DeepCopy()
			_ = unstructured.SetNestedField(bad.Object, int64(-1), "spec", "replicas")
			if err := apply(bad); err == nil {
				t.Error("Deployment with replicas -1 accepted")
			}
		}
	}
}

// checkSecurity asserts the properties every workload must have.
func checkSecurity(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	kinds := map[string]int{}
	var remediatorReplicas int32
	for _, o := range objs {
		kinds[o.GetKind()]++
		switch o.GetKind() {
		case "Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			// Cluster-scoped: a namespace here would be a kustomize
			// misconfiguration the API server silently drops.
			if o.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s %s in namespace %q, want none", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		default:
			if o.GetNamespace() != namespace {
				t.Errorf("%s %s in namespace %q, want %s", o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
			}
		}
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &d, true); err != nil {
			t.Fatalf("Deployment %s: %v", o.GetName(), err)
		}
		if d.Name == "warden-remediator" && d.Spec.Replicas != nil {
			remediatorReplicas = *d.Spec.Replicas
		}
		ps := d.Spec.Template.Spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
			t.Errorf("Deployment %s: pod securityContext.runAsNonRoot is not true", d.Name)
		}
		if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("Deployment %s: seccompProfile is not RuntimeDefault", d.Name)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			sc := c.SecurityContext
			where := fmt.Sprintf("Deployment %s container %s", d.Name, c.Name)
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
				continue
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem is not true", where)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities must drop ALL and add none", where)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: needs cpu and memory requests and a memory limit", where)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s: needs readiness and liveness probes", where)
			}
		}
	}
	if remediatorReplicas != 2 {
		t.Errorf("warden-remediator replicas = %d, want 2", remediatorReplicas)
	}
	for _, k := range []string{"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} {
		if kinds[k] == 0 {
			t.Errorf("kustomize output has no %s", k)
		}
	}
}

// TestShippedConfigurationsAreValid loads the exporter configuration and the
// remediator policies shipped in deploy/ with the same code the binaries
// use.
func TestShippedConfigurationsAreValid(t *testing.T) {
	t.Setenv("WARDEN_POSTGRES_PASSWORD", "x")
	t.Setenv("WARDEN_REDIS_PASSWORD", "x")
	if _, err := exporter.ParseConfig(mustRead(t, "exporter/warden-exporter.yml")); err != nil {
		t.Errorf("exporter/warden-exporter.yml: %v", err)
	}
	for _, o := range decodeAll(t, mustRead(t, "remediator/policy.yaml")) {
		policy, _, _ := unstructured.NestedString(o.Object, "data", "policy.yml")
		if policy == "" {
			t.Fatalf("%s has no data.policy.yml", o.GetName())
		}
		if _, err := remediator.ParsePolicy([]byte(policy)); err != nil {
			t.Errorf("remediator/policy.yaml: %v", err)
		}
	}
}

// TestExampleConfigsPassPromtoolAndAmtool checks the plain Prometheus and
// Alertmanager configurations for people without prometheus-operator.
func TestExampleConfigsPassPromtoolAndAmtool(t *testing.T) {
	promtool := testenv.Promtool(t)
	amtool := testenv.Tool(t, "amtool", "AMTOOL")
	for _, c := range []struct {
		bin  string
		args []string
		want string
	}{
		{promtool, []string{"check", "config", "--lint=all", "examples/prometheus.yml"}, "SUCCESS"},
		{amtool, []string{"check-config", "examples/alertmanager.yml"}, "SUCCESS"},
	} {
		out, err := exec.Command(c.bin, c.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s %s: %v\n%s", filepath.Base(c.bin), strings.Join(c.args, " "), err, out)
		}
	}
	// The remediator route must receive exactly the alerts the policy acts
	// on, and critical alerts must still page a person.
	for _, c := range []struct {
		labels []string
		want   string
	}{
		{[]string{"alertname=HighErrorRate", "severity=critical", "namespace=rust-security"}, "warden-remediator,oncall-pager"},
		{[]string{"alertname=RedisEvictions", "severity=warning"}, "warden-remediator,team-chat"},
		{[]string{"alertname=BruteForceSource", "severity=warning"}, "warden-remediator,team-chat"},
		{[]string{"alertname=RemediatorCircuitBreakerOpen", "severity=critical"}, "oncall-pager"},
		{[]string{"alertname=HighFailedLoginRate", "severity=critical", "category=security"}, "oncall-pager"},
		{[]string{"alertname=CredentialStuffing", "severity=warning", "category=security"}, "oncall-pager"},
		{[]string{"alertname=ServiceDown", "severity=warning", "namespace=rust-security"}, "warden-remediator,team-chat"},
		{[]string{"alertname=Watchdog", "severity=info"}, "deadmans-switch"},
	} {
		args := append([]string{"config", "routes", "test", "--config.file=examples/alertmanager.yml"}, c.labels...)
		out, err := exec.Command(amtool, args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("amtool %s: got %q (%v), want %q", strings.Join(args, " "), strings.TrimSpace(string(out)), err, c.want)
		}
	}
}

func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	bin := testenv.Tool(t, "kustomize", "KUSTOMIZE")
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "build", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.Bytes())
	}
	return decodeAll(t, out)
}

func decodeAll(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decode manifests: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := utilyaml.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := utilyaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestDockerfilesBuildStaticNonRootImages checks what a Dockerfile must
// say, since images are not built here: a separate build stage, a static
// binary of an existing command, and a non-root user in the final stage.
func TestDockerfilesBuildStaticNonRootImages(t *testing.T) {
	for _, name := range []string{"exporter", "remediator", "report"} {
		path := filepath.Join("docker", "Dockerfile."+name)
		src := string(mustRead(t, path))
		if n := strings.Count(src, "\nFROM "); n < 2 {
			t.Errorf("%s: %d stages, want a build stage and a runtime stage", path, n)
		}
		for _, want := range []string{"CGO_ENABLED=0", "./cmd/warden-" + name, "USER 65532:65532"} {
			if !strings.Contains(src, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
		if _, err := os.Stat(filepath.Join("..", "cmd", "warden-"+name)); err != nil {
			t.Errorf("%s builds a command that does not exist: %v", path, err)
		}
		last := src[strings.LastIndex(src, "\nFROM "):]
		if !strings.Contains(last, "distroless/static") && !strings.Contains(last, "scratch") {
			t.Errorf("%s: final stage is not distroless/static or scratch", path)
		}
	}
}
