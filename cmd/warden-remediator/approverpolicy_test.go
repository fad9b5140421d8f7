package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

// The policy's messages, as the API server returns them.
const (
	msgOnlyApprovals   = "may update only approval records"
	msgOnlyPending     = "only a pending approval can be decided"
	msgOnlyStateLabel  = "may change only the label warden.io/approval-state"
	msgOnlyApprovalAnn = "may change only the annotation warden.io/approval"
	msgOnlyDecision    = "may only add their decision to the approval record"
	msgOnlyHolder      = "may set only spec.holderIdentity"
)

// applyManifests creates the objects of a file of deploy/remediator, its
// namespaced ones in ns (ServiceAccount subjects too), and deletes the
// cluster-scoped ones at the end of the test.
func applyManifests(t *testing.T, k *kubeEnv, file, ns string) {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/remediator/" + file)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			o.Namespace = ns
			_, err = k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			o.Namespace = ns
			_, err = k.Client.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			o.Namespace = ns
			for i := range o.Subjects {
				if o.Subjects[i].Kind == rbacv1.ServiceAccountKind {
					o.Subjects[i].Namespace = ns
				}
			}
			_, err = k.Client.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			policies := k.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies()
			_, err = policies.Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = policies.Delete(context.Background(), o.Name, metav1.DeleteOptions{}) })
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			bindings := k.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings()
			_, err = bindings.Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = bindings.Delete(context.Background(), o.Name, metav1.DeleteOptions{}) })
		default:
			t.Fatalf("%s: unexpected %T", file, obj)
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
}

// impersonating is a client of the admin acting as user in groups, as the
// API server's authentication would name them.
func impersonating(t *testing.T, k *kubeEnv, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(k.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// proposeApproval writes, as the remediator, a pending approval record the
// way it does: a Lease it manages, labelled with the id and the state,
// holding the record.
func proposeApproval(t *testing.T, c kubernetes.Interface, ns, id, source string) *coordinationv1.Lease {
	t.Helper()
	now := time.Now()
	a := remediator.Approval{
		ID: id, Namespace: ns, Rule: "block-attacking-source", Action: "block-source",
		Target: "source/" + source + "-32", Summary: "block-source " + source + "/32 for 1h0m0s in ConfigMap " + ns + "/auth-gateway-blocklist, then reload deployment auth-gateway",
		ProposedBy: "warden-remediator-0", ProposedAt: now, ExpiresAt: now.Add(30 * time.Minute),
		State: remediator.StatePending,
	}
	a.Alert.Name = "BruteForceSource"
	a.Alert.Labels = map[string]string{"alertname": "BruteForceSource", "source": source, "severity": "critical"}
	a.Alert.Fingerprint = "f" + id
	a.Alert.StartsAt = now.Add(-time.Minute)
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.CoordinationV1().Leases(ns).Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: "warden-approval-source-" + source + "-32", Namespace: ns,
			Labels: map[string]string{
				"app.kubernetes.io/managed-by": "warden-remediator",
				"warden.io/approval-id":        id,
				"warden.io/approval-state":     remediator.StatePending,
			},
			Annotations: map[string]string{"warden.io/approval": string(b)},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("warden-remediator-0"), AcquireTime: &metav1.MicroTime{Time: now}, RenewTime: &metav1.MicroTime{Time: now}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("propose approval %s: %v", id, err)
	}
	return l
}

// decided applies to l the write `warden-remediator approve` makes as
// approver (remediator.Decide): the record gains the decision, the state
// label follows, and the writer holds the Lease.
func decided(t *testing.T, l *coordinationv1.Lease, approver string) {
	t.Helper()
	var a remediator.Approval
	if err := json.Unmarshal([]byte(l.Annotations["warden.io/approval"]), &a); err != nil {
		t.Fatal(err)
	}
	a.State, a.Decision, a.Approver, a.DecidedAt = remediator.StateApproved, remediator.DecisionApproved, approver, time.Now()
	setRecord(t, l, a)
	l.Labels["warden.io/approval-state"] = remediator.StateApproved
	l.Spec.HolderIdentity = ptr.To(approver)
	l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
}

func setRecord(t *testing.T, l *coordinationv1.Lease, a remediator.Approval) {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	l.Annotations["warden.io/approval"] = string(b)
}

func record(t *testing.T, l *coordinationv1.Lease) remediator.Approval {
	t.Helper()
	var a remediator.Approval
	if err := json.Unmarshal([]byte(l.Annotations["warden.io/approval"]), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// The approver Role lets its subjects update any Lease in the namespace;
// approver-policy.yaml holds them, on the real API server, to deciding a
// pending approval as `warden-remediator approve|deny` does, and leaves
// the remediator's ServiceAccount free to keep its records.
func TestApproverPolicyLimitsApproversToDecisions(t *testing.T) {
	k := requireKube(t)
	ctx := context.Background()
	ns := fmt.Sprintf("approver-policy-%d", nsSeq.Add(1))
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyManifests(t, k, "rbac.yaml", ns)
	applyManifests(t, k, "approver-rbac.yaml", ns)
	applyManifests(t, k, "approver-policy.yaml", ns)

	// Named and grouped as the RoleBinding expects: alice in oncall.
	alice := impersonating(t, k, "alice", "oncall", "system:authenticated")
	aliceKubeconfig := userKubeconfig(t, k, ns, "alice", "oncall", "system:authenticated")
	remediatorSA := "system:serviceaccount:" + ns + ":warden-remediator"
	sa := impersonating(t, k, remediatorSA, "system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated")
	leases := func(c kubernetes.Interface) func(context.Context, *coordinationv1.Lease) error {
		return func(ctx context.Context, l *coordinationv1.Lease) error {
			_, err := c.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
			return err
		}
	}

	// A claim Lease as the remediator writes it (its RBAC may need a
	// moment to reach the authorizer).
	claim := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: "warden-deployment-auth-gateway", Namespace: ns,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"},
			Annotations: map[string]string{"warden.io/target": ns + "/deployment/auth-gateway", "warden.io/failures": "0"},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("warden-remediator-0")},
	}
	testenv.WaitFor(t, time.Minute, "the remediator's ServiceAccount to create its claim Lease", func() bool {
		_, err := sa.CoordinationV1().Leases(ns).Create(ctx, claim, metav1.CreateOptions{})
		return err == nil
	})

	// The policy is enforced once the API server's informers have it, its
	// binding and the RoleBinding it reads: until then alice's forbidden
	// update goes through (or RBAC refuses it while her binding is new).
	probe := claim.DeepCopy()
	probe.Name = "warden-deployment-probe"
	if _, err := sa.CoordinationV1().Leases(ns).Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	testenv.WaitFor(t, 2*time.Minute, "the approver policy to refuse alice's update of a claim Lease", func() bool {
		l, err := alice.CoordinationV1().Leases(ns).Get(ctx, probe.Name, metav1.GetOptions{})
		if err != nil {
			lastErr = err
			return false
		}
		l.Annotations["warden.io/failures"] = fmt.Sprint(time.Now().UnixNano())
		lastErr = leases(alice)(ctx, l)
		return lastErr != nil && strings.Contains(lastErr.Error(), msgOnlyApprovals)
	})
	if !strings.Contains(lastErr.Error(), "ValidatingAdmissionPolicy 'warden-remediator-approver'") {
		t.Errorf("refusal does not name the policy: %v", lastErr)
	}
	p, err := k.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "warden-remediator-approver", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tc := p.Status.TypeChecking; tc != nil && len(tc.ExpressionWarnings) > 0 {
		t.Errorf("the policy's expressions do not type-check: %+v", tc.ExpressionWarnings)
	}

	seq := 0
	for _, tt := range []struct {
		name string
		// cli, when set, runs `warden-remediator <cli> ID` as alice on a
		// fresh pending approval.
		cli string
		// write, otherwise, changes a Lease (a fresh pending approval, or
		// the claim Lease when claimLease) as the given client.
		as         kubernetes.Interface
		claimLease bool
		change     func(t *testing.T, l *coordinationv1.Lease)
		wantErr    string
	}{
		{name: "alice approves with warden-remediator approve", cli: "approve"},
		{name: "alice denies with warden-remediator deny", cli: "deny"},
		{
			name: "alice rewrites the remediator's claim Lease", as: alice, claimLease: true, wantErr: msgOnlyApprovals,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				l.Annotations["warden.io/failures"] = "0"
				l.Annotations["warden.io/breaker-open-until"] = ""
			},
		},
		{
			name: "alice takes over the claim Lease", as: alice, claimLease: true, wantErr: msgOnlyApprovals,
			change: func(t *testing.T, l *coordinationv1.Lease) { l.Spec.HolderIdentity = ptr.To("alice") },
		},
		{
			name: "alice approves but leaves the remediator holding the Lease", as: alice, wantErr: msgOnlyHolder,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				l.Spec.HolderIdentity = ptr.To("warden-remediator-0")
			},
		},
		{
			name: "alice approves and changes the Lease's duration", as: alice, wantErr: msgOnlyHolder,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				l.Spec.LeaseDurationSeconds = ptr.To[int32](3600)
			},
		},
		{
			name: "alice approves and removes the approval label", as: alice, wantErr: msgOnlyStateLabel,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				delete(l.Labels, "warden.io/approval-id")
			},
		},
		{
			name: "alice marks the approval executing", as: alice, wantErr: msgOnlyStateLabel,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				l.Labels["warden.io/approval-state"] = remediator.StateExecuting
			},
		},
		{
			name: "alice approves and adds an annotation", as: alice, wantErr: msgOnlyApprovalAnn,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				l.Annotations["warden.io/failures"] = "0"
			},
		},
		{
			name: "alice approves another target than the proposed one", as: alice, wantErr: msgOnlyDecision,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				a := record(t, l)
				a.Target, a.Alert.Labels["source"] = "source/198.51.100.1-32", "198.51.100.1"
				setRecord(t, l, a)
			},
		},
		{
			name: "alice approves in bob's name", as: alice, wantErr: msgOnlyDecision,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				a := record(t, l)
				a.Approver = "bob"
				setRecord(t, l, a)
			},
		},
		{
			name: "alice appends a second target to the record", as: alice, wantErr: msgOnlyDecision,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				decided(t, l, "alice")
				r := l.Annotations["warden.io/approval"]
				l.Annotations["warden.io/approval"] = strings.TrimSuffix(r, "}") + `,"target":"source/198.51.100.1-32"}`
			},
		},
		{
			name: "alice reopens a closed approval", as: alice, wantErr: msgOnlyPending,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				// The remediator closed it first (allowed: its own write).
				a := record(t, l)
				a.State, a.Decision, a.Outcome = remediator.StateClosed, remediator.DecisionExpired, "expired"
				setRecord(t, l, a)
				l.Labels["warden.io/approval-state"] = remediator.StateClosed
				closed, err := sa.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
				if err != nil {
					t.Fatalf("the remediator closes the approval: %v", err)
				}
				*l = *closed
				a.State, a.Decision, a.Outcome = remediator.StatePending, "", ""
				setRecord(t, l, a)
				l.Labels["warden.io/approval-state"] = remediator.StatePending
			},
		},
		{
			name: "the remediator updates its claim Lease", as: sa, claimLease: true,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				l.Annotations["warden.io/failures"] = "1"
				l.Spec.HolderIdentity = ptr.To("warden-remediator-1")
			},
		},
		{
			name: "the remediator marks an approval executing and holds it", as: sa,
			change: func(t *testing.T, l *coordinationv1.Lease) {
				a := record(t, l)
				a.State, a.Decision, a.Approver, a.DecidedAt, a.Holder = remediator.StateExecuting, remediator.DecisionApproved, "carol", time.Now(), "warden-remediator-1"
				setRecord(t, l, a)
				l.Labels["warden.io/approval-state"] = remediator.StateExecuting
				l.Spec.HolderIdentity = ptr.To("warden-remediator-1")
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq++
			id := fmt.Sprintf("%012x", 0xa000+seq)
			approval := proposeApproval(t, sa, ns, id, fmt.Sprintf("203.0.113.%d", seq))
			if tt.cli != "" {
				out, code := runCLI(t, tt.cli, id, "--kubeconfig", aliceKubeconfig)
				if code != 0 {
					t.Fatalf("warden-remediator %s %s as alice: exit %d\n%s", tt.cli, id, code, out)
				}
				l, err := k.Client.CoordinationV1().Leases(ns).Get(ctx, approval.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]string{"approve": remediator.StateApproved, "deny": remediator.StateDenied}[tt.cli]
				if a := record(t, l); a.State != want || a.Approver != "alice" || l.Labels["warden.io/approval-state"] != want {
					t.Errorf("after %s: record %+v, labels %v", tt.cli, a, l.Labels)
				}
				return
			}
			name := approval.Name
			if tt.claimLease {
				name = claim.Name
			}
			l, err := tt.as.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, l)
			err = leases(tt.as)(ctx, l)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("update refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("update: %v, want refused with %q", err, tt.wantErr)
			}
		})
	}

	// The approvals endpoint decides as the remediator's ServiceAccount,
	// naming the token's owner: the policy does not apply to it.
	seq++
	id := fmt.Sprintf("%012x", 0xa000+seq)
	proposeApproval(t, sa, ns, id, fmt.Sprintf("203.0.113.%d", seq))
	if a, err := remediator.Decide(ctx, sa, ns, id, true, "carol", time.Now()); err != nil || a.Approver != "carol" {
		t.Errorf("decision through the approvals endpoint's path: %+v, %v", a, err)
	}
}
