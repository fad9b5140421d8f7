package actions

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

const rbacDir = "../../deploy/remediator"

// remediatorUser is the user name the API server gives the ServiceAccount in
// the shipped manifest.
const remediatorUser = "system:serviceaccount:rust-security:warden-remediator"

// blocklistName is the one ConfigMap the shipped Role lets block-source
// write.
const blocklistName = "auth-gateway-blocklist"

type shippedRBAC struct {
	serviceAccount *corev1.ServiceAccount
	role           *rbacv1.Role
	binding        *rbacv1.RoleBinding
}

func loadRBAC(t testing.TB) shippedRBAC {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(rbacDir, "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out shippedRBAC
	decoder := scheme.Codecs.UniversalDeserializer()
	for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("rbac.yaml document %d: %v", i, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			out.serviceAccount = o
		case *rbacv1.Role:
			out.role = o
		case *rbacv1.RoleBinding:
			out.binding = o
		default:
			t.Errorf("rbac.yaml document %d: unexpected %s (only ServiceAccount, Role, RoleBinding belong here)", i, gvk.Kind)
		}
	}
	if out.serviceAccount == nil || out.role == nil || out.binding == nil {
		t.Fatalf("rbac.yaml must hold a ServiceAccount, a Role and a RoleBinding")
	}
	return out
}

func TestRBACManifestGrantsExactlyTheActionsNeeds(t *testing.T) {
	rbac := loadRBAC(t)
	want := []string{
		"apps/deployments:get", "apps/deployments:list", "apps/deployments:watch", "apps/deployments:patch",
		"apps/deployments/scale:get", "apps/deployments/scale:update", "apps/deployments/scale:patch",
		"/pods:get", "/pods:list",
		"/pods/eviction:create",
		"/events:create", "/events:patch",
		"events.k8s.io/events:create", "events.k8s.io/events:patch",
		"coordination.k8s.io/leases:get", "coordination.k8s.io/leases:list", "coordination.k8s.io/leases:watch",
		"coordination.k8s.io/leases:create", "coordination.k8s.io/leases:update",
		"/configmaps:get", "/configmaps:update",
	}
	var got []string
	for _, r := range rbac.role.Rules {
		// ConfigMaps only by name: the blocklist, nothing else.
		wantNames := []string(nil)
		if slices.Contains(r.Resources, "configmaps") {
			wantNames = []string{blocklistName}
		}
		if !slices.Equal(r.ResourceNames, wantNames) || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames %v, want %v; no nonResourceURLs", r, r.ResourceNames, wantNames)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" || strings.Contains(res, "secret") {
						t.Errorf("rule %+v grants a wildcard or secrets", r)
					}
					got = append(got, g+"/"+res+":"+v)
				}
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Role grants\n  %v\nwant exactly\n  %v", got, want)
	}
	ns := rbac.serviceAccount.Namespace
	if rbac.role.Namespace != ns || rbac.binding.Namespace != ns {
		t.Errorf("Role and RoleBinding must live in the ServiceAccount's namespace %q", ns)
	}
	if ref := rbac.binding.RoleRef; ref.Kind != "Role" || ref.Name != rbac.role.Name || ref.APIGroup != rbacv1.GroupName {
		t.Errorf("RoleBinding refers to %+v, want the Role %s", ref, rbac.role.Name)
	}
	if len(rbac.binding.Subjects) != 1 || rbac.binding.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: rbac.serviceAccount.Name, Namespace: ns}) {
		t.Errorf("RoleBinding subjects %+v, want only the ServiceAccount", rbac.binding.Subjects)
	}
	if "system:serviceaccount:"+ns+":"+rbac.serviceAccount.Name != remediatorUser {
		t.Errorf("ServiceAccount %s/%s does not match %s", ns, rbac.serviceAccount.Name, remediatorUser)
	}

	var kustomization struct {
		Resources []string `yaml:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(rbacDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kustomization); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if !slices.Contains(kustomization.Resources, "rbac.yaml") {
		t.Errorf("kustomization.yaml resources %v do not list rbac.yaml", kustomization.Resources)
	}
}

// bindShippedRBAC creates the shipped Role and RoleBinding in ns, as an
// overlay for another target namespace would. The subject stays the
// ServiceAccount of the remediator's own namespace.
func bindShippedRBAC(t testing.TB, admin kubernetes.Interface, ns string) {
	t.Helper()
	rbac := loadRBAC(t)
	role := rbac.role.DeepCopy()
	role.Namespace = ns
	binding := rbac.binding.DeepCopy()
	binding.Namespace = ns
	ctx := context.Background()
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create shipped Role in %s: %v", ns, err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create shipped RoleBinding in %s: %v", ns, err)
	}
}

// restrictedClient authenticates as the remediator's ServiceAccount and waits
// until the RBAC authorizer has seen the binding in ns.
func restrictedClient(t testing.TB, ns string) kubernetes.Interface {
	t.Helper()
	k := kubeServer.Get(t)
	cfg, err := k.AddUser(remediatorUser, "system:serviceaccounts", "system:serviceaccounts:rust-security", "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := client.AppsV1().Deployments(ns).List(context.Background(), metav1.ListOptions{})
		if err == nil {
			return client
		}
		if time.Now().After(deadline) {
			t.Fatalf("restricted user never got access to %s: %v", ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The manifests as shipped are accepted by the API server (server-side dry
// run in their own namespace).
func TestRBACManifestIsAcceptedByTheAPIServer(t *testing.T) {
	k := kubeServer.Get(t)
	rbac := loadRBAC(t)
	ctx := context.Background()
	ns := rbac.serviceAccount.Namespace
	_, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
	if _, err := k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, rbac.serviceAccount, dry); err != nil {
		t.Errorf("ServiceAccount: %v", err)
	}
	if _, err := k.Client.RbacV1().Roles(ns).Create(ctx, rbac.role, dry); err != nil {
		t.Errorf("Role: %v", err)
	}
	if _, err := k.Client.RbacV1().RoleBindings(ns).Create(ctx, rbac.binding, dry); err != nil {
		t.Errorf("RoleBinding: %v", err)
	}
}

func TestActionsWorkWithOnlyTheShippedRBAC(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	unbound := createNamespace(t, k.Client)
	bindShippedRBAC(t, k.Client, ns)
	client := restrictedClient(t, ns)
	ctx := context.Background()

	port, servers := startReloadServers(t, []string{"127.0.0.1"}, []int{200})
	w := createWorkload(t, k.Client, ns, "auth-service", 2, withPodIPs("127.0.0.1", "127.0.0.1"), withGracePeriod(0))
	createWorkload(t, k.Client, unbound, "auth-service", 1)
	if _, err := k.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "jwt-secret", Namespace: ns}, StringData: map[string]string{"key": "x"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ex := NewExecutor(client, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	actions := []Request{
		{Kind: Restart, Namespace: ns, Deployment: "auth-service", DryRun: true},
		{Kind: Restart, Namespace: ns, Deployment: "auth-service", Reason: "HighMemoryUsage"},
		{Kind: Scale, Namespace: ns, Deployment: "auth-service", Delta: ptr[int32](1), MinReplicas: 1, MaxReplicas: 5},
		{Kind: Scale, Namespace: ns, Deployment: "auth-service", Replicas: ptr[int32](2), MinReplicas: 1, MaxReplicas: 5, DryRun: true},
		{Kind: Reload, Namespace: ns, Deployment: "auth-service", ReloadPort: port, ReloadPath: "/-/reload"},
		{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[0].Name, MaxFraction: 0.5, DryRun: true},
		{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[0].Name, MaxFraction: 0.5},
	}
	for _, req := range actions {
		res, err := ex.Run(ctx, req)
		if err != nil {
			t.Fatalf("%s (dry run %v) as %s: %v", req.Kind, req.DryRun, remediatorUser, err)
		}
		if res.Changed == req.DryRun || res.Verified == req.DryRun {
			t.Errorf("%s (dry run %v): %+v", req.Kind, req.DryRun, res)
		}
	}
	d := getDeployment(t, k.Client, ns, "auth-service")
	if *d.Spec.Replicas != 3 || d.Spec.Template.Annotations[ReasonAnnotation] != "HighMemoryUsage" {
		t.Errorf("deployment after restricted actions: replicas %d, template annotations %v", *d.Spec.Replicas, d.Spec.Template.Annotations)
	}
	if servers[0].calls.Load() != 2 {
		t.Errorf("reload reached %d pods, want 2", servers[0].calls.Load())
	}

	// The audit Event and the coordination Lease the remediator's core writes.
	coreEvent := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "auth-service.restart", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Deployment", Namespace: ns, Name: "auth-service", APIVersion: "apps/v1"},
		Reason:         "Remediated", Message: "restart", Type: corev1.EventTypeNormal, Source: corev1.EventSource{Component: FieldManager},
	}
	if _, err := client.CoreV1().Events(ns).Create(ctx, coreEvent, metav1.CreateOptions{}); err != nil {
		t.Errorf("create core Event: %v", err)
	}
	now := metav1.NowMicro()
	event := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "auth-service.restart2", Namespace: ns},
		EventTime:  now, ReportingController: "warden.io/remediator", ReportingInstance: "warden-remediator-0",
		Action: "Restart", Reason: "Remediated", Type: corev1.EventTypeNormal, Note: "restart",
		Regarding: corev1.ObjectReference{Kind: "Deployment", Namespace: ns, Name: "auth-service", APIVersion: "apps/v1"},
	}
	if _, err := client.EventsV1().Events(ns).Create(ctx, event, metav1.CreateOptions{}); err != nil {
		t.Errorf("create events.k8s.io Event: %v", err)
	}
	holder := "warden-remediator-0"
	lease, err := client.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "warden-deployment-auth-service", Namespace: ns},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Lease: %v", err)
	}
	if lease, err = client.CoordinationV1().Leases(ns).Get(ctx, lease.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("get Lease: %v", err)
	}
	lease.Spec.AcquireTime = &now
	if _, err := client.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Errorf("update Lease: %v", err)
	}

	forbidden := []struct {
		name string
		call func() error
	}{
		{"get secret", func() error {
			_, err := client.CoreV1().Secrets(ns).Get(ctx, "jwt-secret", metav1.GetOptions{})
			return err
		}},
		{"list secrets", func() error {
			_, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"delete deployment", func() error {
			return client.AppsV1().Deployments(ns).Delete(ctx, "auth-service", metav1.DeleteOptions{})
		}},
		{"update deployment", func() error {
			d := getDeployment(t, k.Client, ns, "auth-service")
			d.Spec.Template.Spec.Containers[0].Image = "registry.example/evil:1"
			_, err := client.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
			return err
		}},
		{"delete pod bypassing PodDisruptionBudgets", func() error {
			return client.CoreV1().Pods(ns).Delete(ctx, w.pods[1].Name, metav1.DeleteOptions{})
		}},
		{"read replicasets", func() error {
			_, err := client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"delete lease", func() error {
			return client.CoordinationV1().Leases(ns).Delete(ctx, "warden-deployment-auth-service", metav1.DeleteOptions{})
		}},
		{"list namespaces", func() error {
			_, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"read deployments in a namespace without the Role", func() error {
			_, err := client.AppsV1().Deployments(unbound).Get(ctx, "auth-service", metav1.GetOptions{})
			return err
		}},
	}
	for _, f := range forbidden {
		if err := f.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as %s: %v, want Forbidden", f.name, remediatorUser, err)
		}
	}

	// An action outside the bound namespace fails at once with reason forbidden.
	_, err = ex.Run(ctx, Request{Kind: Restart, Namespace: unbound, Deployment: "auth-service", Timeout: time.Minute})
	if !apierrors.IsForbidden(err) || Reason(err) != ReasonForbidden || IsTransient(err) {
		t.Errorf("restart in %s: %v (reason %q); want permanent forbidden", unbound, err, Reason(err))
	}
	if err != nil && strings.Contains(err.Error(), "attempts") {
		t.Errorf("forbidden restart was retried: %v", err)
	}
	if d := getDeployment(t, k.Client, unbound, "auth-service"); d.Generation != 1 {
		t.Errorf("deployment in %s changed", unbound)
	}
}

// block-source and the expiry sweep work with the shipped Role, which
// reaches the named blocklist ConfigMap and no other.
func TestBlockSourceWorksWithOnlyTheShippedRBAC(t *testing.T) {
	k := kubeServer.Get(t)
	f := newBlockFixture(t, k.Client)
	bindShippedRBAC(t, k.Client, f.ns)
	client := restrictedClient(t, f.ns)
	ctx := context.Background()
	other := BlocklistConfigMap(f.ns, "app-settings", "blocklist.conf")
	if _, err := k.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ex := NewExecutor(client, testLogger(t), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	req := f.req
	req.Source = netip.MustParsePrefix("203.0.113.7/32")
	if res, err := ex.Run(ctx, req); err != nil || !res.Verified {
		t.Fatalf("block-source as %s: %+v, %v", remediatorUser, res, err)
	}
	if got := f.entries(t, k.Client); len(got) != 1 {
		t.Errorf("blocklist: %v", got)
	}
	sweep := f.req
	sweep.Kind = ExpireBlocks
	if _, err := ex.Run(ctx, sweep); err != nil {
		t.Errorf("expiry sweep as %s: %v", remediatorUser, err)
	}

	// Pointed at another ConfigMap, the action is refused by the API server.
	req.Blocklist = other.Name
	if _, err := ex.Run(ctx, req); Reason(err) != ReasonForbidden {
		t.Errorf("block-source into ConfigMap %s: %v, want forbidden", other.Name, err)
	}
	cms := client.CoreV1().ConfigMaps(f.ns)
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"get another ConfigMap", func() error { _, err := cms.Get(ctx, other.Name, metav1.GetOptions{}); return err }},
		{"update another ConfigMap", func() error { _, err := cms.Update(ctx, other, metav1.UpdateOptions{}); return err }},
		{"list ConfigMaps", func() error { _, err := cms.List(ctx, metav1.ListOptions{}); return err }},
		{"create a ConfigMap", func() error {
			_, err := cms.Create(ctx, BlocklistConfigMap(f.ns, "new-list", "k"), metav1.CreateOptions{})
			return err
		}},
		{"delete the blocklist", func() error { return cms.Delete(ctx, blocklistName, metav1.DeleteOptions{}) }},
	} {
		if err := c.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as %s: %v, want Forbidden", c.name, remediatorUser, err)
		}
	}
}
