package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

// userKubeconfig writes a kubeconfig the API server authenticates as name
// in groups.
func userKubeconfig(t *testing.T, k *kubeEnv, ns, name string, groups ...string) string {
	t.Helper()
	cfg, err := k.AddUser(name, groups...)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, path, ns); err != nil {
		t.Fatal(err)
	}
	return path
}

// pendingApproval writes a pending approval record as the remediator
// does.
func pendingApproval(t *testing.T, k *kubeEnv, ns, id string) {
	t.Helper()
	a := remediator.Approval{
		ID: id, Namespace: ns, Rule: "block-attacking-source", Action: "block-source",
		Target: "source/203.0.113.7-32", Summary: "block-source 203.0.113.7/32 for 1h0m0s",
		ProposedBy: "warden-remediator-0", ProposedAt: time.Now(), ExpiresAt: time.Now().Add(30 * time.Minute),
		State: remediator.StatePending,
	}
	a.Alert.Name = "BruteForceSource"
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	holder := "warden-remediator-0"
	_, err = k.Client.CoordinationV1().Leases(ns).Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: "warden-approval-source-203.0.113.7-32", Namespace: ns,
			Labels:      map[string]string{"warden.io/approval-id": id, "warden.io/approval-state": remediator.StatePending},
			Annotations: map[string]string{"warden.io/approval": string(b)},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func readApproval(t *testing.T, k *kubeEnv, ns string) remediator.Approval {
	t.Helper()
	l, err := remediator.ListApprovals(context.Background(), k.Client, []string{ns}, true)
	if err != nil || len(l) != 1 {
		t.Fatalf("approvals: %v, %v", l, err)
	}
	return l[0]
}

// Only a person RBAC lets update the record can approve, and the API
// server, not the command line, names them.
func TestApproveWithThePersonsKubeconfig(t *testing.T) {
	k := requireKube(t)
	ns := fmt.Sprintf("approve-%d", nsSeq.Add(1))
	if _, err := k.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyManifests(t, k, "approver-rbac.yaml", ns)
	const id = "0123456789ab"
	pendingApproval(t, k, ns, id)
	alice := userKubeconfig(t, k, ns, "alice", "oncall", "system:authenticated")
	mallory := userKubeconfig(t, k, ns, "mallory", "system:authenticated")

	out, code := runCLI(t, "approve", id, "--kubeconfig", mallory)
	if code == 0 || !strings.Contains(out, "forbidden") {
		t.Errorf("approve as mallory: exit %d\n%s", code, out)
	}
	if a := readApproval(t, k, ns); a.State != remediator.StatePending || a.Approver != "" {
		t.Errorf("after mallory's attempt: %+v", a)
	}

	out, code = runCLI(t, "approvals", "--kubeconfig", alice)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "BruteForceSource") {
		t.Errorf("approvals as alice: exit %d\n%s", code, out)
	}
	// The RBAC authorizer may need a moment to see the new binding.
	testenv.WaitFor(t, time.Minute, "alice's approval", func() bool {
		out, code = runCLI(t, "approve", id, "--kubeconfig", alice)
		return code == 0
	})
	if !strings.Contains(out, "approved "+id+" as alice") {
		t.Errorf("approve as alice:\n%s", out)
	}
	if a := readApproval(t, k, ns); a.State != remediator.StateApproved || a.Approver != "alice" || a.DecidedAt.IsZero() {
		t.Errorf("after alice's approval: %+v", a)
	}
	out, code = runCLI(t, "deny", id, "--kubeconfig", alice)
	if code == 0 || !strings.Contains(out, "already decided") {
		t.Errorf("deny after approval: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "approve"); code != 2 {
		t.Errorf("approve without an id: exit %d\n%s", code, out)
	}
}
