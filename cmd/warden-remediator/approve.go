package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warden-sre/warden/remediator"
)

// approvalCommands are the subcommands a person runs with their own
// kubeconfig; anything else starts the server.
var approvalCommands = []string{"approve", "deny", "approvals"}

func isApprovalCommand(args []string) bool {
	return len(args) > 0 && slices.Contains(approvalCommands, args[0])
}

// runApprovalCommand approves, denies or lists pending actions as the
// person the kubeconfig authenticates: the API server decides, through
// RBAC on the approval record, whether they may, and names them.
func runApprovalCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("warden-remediator", "Approve or deny the remediator's proposed actions.")
	app.Terminate(nil)
	app.ErrorWriter(stderr)
	app.UsageWriter(stderr)
	var kubeconfig, namespace string
	var all bool
	app.Flag("kubeconfig", "Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).").StringVar(&kubeconfig)
	app.Flag("namespace", "Namespace of the approval (default: the kubeconfig context's).").Short('n').StringVar(&namespace)
	approve := app.Command("approve", "Approve a pending action: the remediator carries it out.")
	approveID := approve.Arg("id", "Approval id, from the Event, the audit line or `approvals`.").Required().String()
	deny := app.Command("deny", "Deny a pending action: it never runs.")
	denyID := deny.Arg("id", "Approval id.").Required().String()
	list := app.Command("approvals", "List the open approvals.")
	list.Flag("all", "Include closed ones.").BoolVar(&all)
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	kube, ns, err := personClient(kubeconfig, namespace)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	switch cmd {
	case list.FullCommand():
		return listApprovals(ctx, kube, ns, all, stdout, stderr)
	case approve.FullCommand():
		return decide(ctx, kube, ns, *approveID, true, stdout, stderr)
	default:
		return decide(ctx, kube, ns, *denyID, false, stdout, stderr)
	}
}

// personClient builds a client from the person's kubeconfig, as kubectl
// would find it.
func personClient(kubeconfig, namespace string) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "warden-remediator-approve"
	if namespace == "" {
		if namespace, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("kubeconfig namespace: %w", err)
		}
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client: %w", err)
	}
	return kube, namespace, nil
}

// whoAmI asks the API server who the kubeconfig authenticates as.
func whoAmI(ctx context.Context, kube kubernetes.Interface) (string, error) {
	r, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("ask the API server who you are (SelfSubjectReview): %w", err)
	}
	if r.Status.UserInfo.Username == "" {
		return "", errors.New("the API server did not name you (SelfSubjectReview has no username)")
	}
	return r.Status.UserInfo.Username, nil
}

func decide(ctx context.Context, kube kubernetes.Interface, ns, id string, approve bool, stdout, stderr io.Writer) int {
	who, err := whoAmI(ctx, kube)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	a, err := remediator.Decide(ctx, kube, ns, id, approve, who, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", verb(approve), id, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s as %s: %s (alert %s)\n", a.Decision, a.ID, who, a.Summary, a.Alert.Name)
	return 0
}

func verb(approve bool) string {
	if approve {
		return "approve"
	}
	return "deny"
}

func listApprovals(ctx context.Context, kube kubernetes.Interface, ns string, all bool, stdout, stderr io.Writer) int {
	list, err := remediator.ListApprovals(ctx, kube, []string{ns}, all)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tALERT\tEXPIRES\tAPPROVER\tACTION")
	for _, a := range list {
		state := a.State
		if a.Decision != "" && a.State == remediator.StateClosed {
			state += " (" + a.Decision + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, state, a.Alert.Name, a.ExpiresAt.UTC().Format(time.RFC3339),
			orDash(a.Approver), strings.ReplaceAll(a.Summary, "\t", " "))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
