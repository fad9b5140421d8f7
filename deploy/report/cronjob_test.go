package report

import (
	"bytes"
	"context"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/warden-sre/warden/internal/testenv"
)

// manifests decodes cronjob.yaml strictly (an unknown or misspelt field is
// an error) into its PersistentVolumeClaim and CronJob.
func manifests(t *testing.T) (*corev1.PersistentVolumeClaim, *batchv1.CronJob) {
	t.Helper()
	raw, err := os.ReadFile("cronjob.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var (
		pvc *corev1.PersistentVolumeClaim
		cj  *batchv1.CronJob
	)
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "PersistentVolumeClaim":
			pvc = &corev1.PersistentVolumeClaim{}
			if err := yaml.UnmarshalStrict(doc, pvc); err != nil {
				t.Fatalf("PersistentVolumeClaim: %v", err)
			}
		case "CronJob":
			cj = &batchv1.CronJob{}
			if err := yaml.UnmarshalStrict(doc, cj); err != nil {
				t.Fatalf("CronJob: %v", err)
			}
		default:
			t.Fatalf("unexpected kind %q in cronjob.yaml", meta.Kind)
		}
	}
	if pvc == nil || cj == nil {
		t.Fatal("cronjob.yaml needs a PersistentVolumeClaim and a CronJob")
	}
	return pvc, cj
}

// TestCronJobRunsLockedDownAndWritesToTheVolume checks what the other
// manifests in deploy/ promise: non-root, read-only root filesystem, no
// capabilities, no API token; and that the report lands on the volume.
func TestCronJobRunsLockedDownAndWritesToTheVolume(t *testing.T) {
	pvc, cj := manifests(t)
	pod := cj.Spec.JobTemplate.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod does not require a non-root user")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("pod mounts a service account token it does not need")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v; want a read-only root, no privilege escalation, all capabilities dropped", sc)
	}
	if len(c.Args) == 0 || c.Args[0] != "weekly" || !slices.Contains(c.Args, "--output=html") {
		t.Errorf("args %q; want the weekly report as HTML", c.Args)
	}
	var out string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--out="); ok {
			out = v
		}
	}
	var mounted bool
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(out) {
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("--out=%s is not on the %s volume", out, pvc.Name)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy %q; two runs would write the same file", cj.Spec.ConcurrencyPolicy)
	}
}

// TestCronJobIsAcceptedByTheAPIServer creates both objects on a real
// kube-apiserver, which validates the schedule, the time zone and every
// field.
func TestCronJobIsAcceptedByTheAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real kube-apiserver; skipped with -short")
	}
	pvc, cj := manifests(t)
	kube := testenv.StartKube(t)
	ctx := context.Background()
	const ns = "rust-security"
	if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PersistentVolumeClaim: %v", err)
	}
	if _, err := kube.Client.BatchV1().CronJobs(ns).Create(ctx, cj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create CronJob: %v", err)
	}
}
