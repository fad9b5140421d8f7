package deploy

import (
	"path"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

const approverBinding = "warden-remediator-approver"

// fromObjects converts the object of kind and name in objs to its type.
func fromObjects(t *testing.T, objs []*unstructured.Unstructured, kind, name string, into any) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, into, true); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("kustomize output has no %s %s", kind, name)
}

// The base ships the approvals endpoint on: the remediator reads its
// tokens from a mounted, optional Secret (absent: the endpoint is off, the
// pod still starts), through a directory mount that the kubelet updates in
// place.
func TestRemediatorMountsTheApproversSecret(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	var d appsv1.Deployment
	fromObjects(t, objs, "Deployment", "warden-remediator", &d)
	c := d.Spec.Template.Spec.Containers[0]
	var file string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--web.approvals-tokens-file="); ok {
			file = v
		}
	}
	if file == "" {
		t.Fatalf("container %s: no --web.approvals-tokens-file in %v", c.Name, c.Args)
	}
	dir, key := path.Split(file)
	mounted := ""
	for _, m := range c.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") != strings.TrimSuffix(dir, "/") {
			continue
		}
		mounted = m.Name
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("volume %s is mounted with a subPath: the kubelet would never update the tokens", m.Name)
		}
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable", m.Name)
		}
	}
	if mounted == "" {
		t.Fatalf("nothing is mounted at %s, the directory of --web.approvals-tokens-file", dir)
	}
	i := slices.IndexFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == mounted })
	if i < 0 {
		t.Fatalf("no volume %s", mounted)
	}
	s := d.Spec.Template.Spec.Volumes[i].Secret
	switch {
	case s == nil || s.SecretName != "warden-remediator-approvers":
		t.Errorf("volume %s is not the Secret warden-remediator-approvers: %+v", mounted, d.Spec.Template.Spec.Volumes[i].VolumeSource)
	case s.Optional == nil || !*s.Optional:
		t.Errorf("Secret volume %s is not optional: pods would not start until someone creates it", mounted)
	case len(s.Items) != 1 || s.Items[0].Key != "tokens" || s.Items[0].Path != key:
		t.Errorf("Secret volume %s items %+v, want key tokens at %s", mounted, s.Items, key)
	}
}

// The approver policy is shipped with the RBAC it narrows: bound with
// Deny, reading the approver RoleBinding as its parameter, on updates of
// Leases, the only write the approver Role grants.
func TestApproverPolicyIsBoundToTheApproverRoleBinding(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	var role rbacv1.Role
	var binding rbacv1.RoleBinding
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	var policyBinding admissionregistrationv1.ValidatingAdmissionPolicyBinding
	fromObjects(t, objs, "RoleBinding", approverBinding, &binding)
	fromObjects(t, objs, "Role", binding.RoleRef.Name, &role)
	fromObjects(t, objs, "ValidatingAdmissionPolicyBinding", "warden-remediator-approver", &policyBinding)
	fromObjects(t, objs, "ValidatingAdmissionPolicy", policyBinding.Spec.PolicyName, &policy)

	var writes []string
	for _, r := range role.Rules {
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				writes = append(writes, strings.Join(r.Resources, ",")+":"+v)
			}
		}
	}
	if !slices.Equal(writes, []string{"leases:update"}) {
		t.Errorf("the approver Role writes %v; the policy covers leases:update only", writes)
	}
	if len(binding.Subjects) == 0 {
		t.Error("the approver RoleBinding binds nobody")
	}
	if pk := policy.Spec.ParamKind; pk == nil || pk.APIVersion != "rbac.authorization.k8s.io/v1" || pk.Kind != "RoleBinding" {
		t.Errorf("policy paramKind %+v, want the RoleBinding", pk)
	}
	pr := policyBinding.Spec.ParamRef
	if pr == nil || pr.Name != binding.Name || pr.Namespace != "" || pr.ParameterNotFoundAction == nil || *pr.ParameterNotFoundAction != admissionregistrationv1.AllowAction {
		t.Errorf("policy binding paramRef %+v, want %s in the request's namespace, allowed where it is absent", pr, binding.Name)
	}
	if !slices.Equal(policyBinding.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("policy binding validationActions %v, want [Deny]", policyBinding.Spec.ValidationActions)
	}
	if fp := policy.Spec.FailurePolicy; fp != nil && *fp != admissionregistrationv1.Fail {
		t.Errorf("policy failurePolicy %s, want Fail", *fp)
	}
	rules := policy.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"leases"}) || !slices.Equal(rules[0].APIGroups, []string{"coordination.k8s.io"}) ||
		!slices.Equal(rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Update}) {
		t.Errorf("policy matches %+v, want updates of coordination.k8s.io leases", rules)
	}
}
