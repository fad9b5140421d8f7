package actions

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// Annotations and names the actions write or honour.
const (
	// OptOutAnnotation set to OptOutDisabled on a Deployment (or a Pod, for
	// recycle) makes every action on it fail with ErrOptedOut.
	OptOutAnnotation = "warden.io/remediation"
	OptOutDisabled   = "disabled"
	// RestartedAtAnnotation is the pod-template annotation kubectl rollout
	// restart sets; using the same one keeps `kubectl rollout history` readable.
	RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
	RestartedByAnnotation = "warden.io/restarted-by"
	ReasonAnnotation      = "warden.io/reason"
	// FieldManager names warden's writes in managedFields.
	FieldManager = "warden-remediator"
	// DefaultTimeout bounds an action, retries included, when Request.Timeout
	// is zero.
	DefaultTimeout = 30 * time.Second
)

// Option configures an Executor.
type Option func(*executor)

// WithBackoff sets the first and the largest wait between retries of a
// transient error (defaults 200ms and 5s, doubling, ±50% jitter).
func WithBackoff(initial, maxInterval time.Duration) Option {
	return func(e *executor) {
		if initial > 0 {
			e.initialInterval = initial
		}
		if maxInterval > 0 {
			e.maxInterval = maxInterval
		}
	}
}

// WithMaxAttempts bounds how often one step of an action (a read, a write,
// one pod's reload request) is tried. By default only the action's timeout
// bounds the retries.
func WithMaxAttempts(n int) Option {
	return func(e *executor) {
		if n > 0 {
			e.maxAttempts = n
		}
	}
}

// WithHTTPClient sets the client used for reload requests (for example one
// trusting a private CA for https endpoints). Its Timeout should be zero or
// shorter than the action's: the request context carries the deadline.
func WithHTTPClient(c *http.Client) Option {
	return func(e *executor) {
		if c != nil {
			e.httpClient = c
		}
	}
}

// WithRedisTLSConfig sets the TLS configuration used for Redis targets with
// TLS enabled (CA, client certificate). Its ServerName defaults to the
// target's host.
func WithRedisTLSConfig(cfg *tls.Config) Option {
	return func(e *executor) { e.redisTLS = cfg }
}

// WithClock replaces time.Now (for the restartedAt annotation).
func WithClock(now func() time.Time) Option {
	return func(e *executor) {
		if now != nil {
			e.now = now
		}
	}
}

// WithIdentity sets the value of the warden.io/restarted-by annotation
// (default "warden-remediator"; a pod name helps when several replicas run).
func WithIdentity(id string) Option {
	return func(e *executor) {
		if id != "" {
			e.identity = id
		}
	}
}

type executor struct {
	kube            kubernetes.Interface
	logger          *slog.Logger
	httpClient      *http.Client
	redisTLS        *tls.Config
	now             func() time.Time
	identity        string
	initialInterval time.Duration
	maxInterval     time.Duration
	maxAttempts     int // 0: no limit besides the timeout
}

// NewExecutor returns an Executor acting through kube (restart, scale,
// recycle, reload) and go-redis (flush-cache). kube may be nil when only
// flush-cache is used.
func NewExecutor(kube kubernetes.Interface, logger *slog.Logger, opts ...Option) Executor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &executor{
		kube:            kube,
		logger:          logger,
		now:             time.Now,
		identity:        FieldManager,
		initialInterval: 200 * time.Millisecond,
		maxInterval:     5 * time.Second,
	}
	for _, o := range opts {
		o(e)
	}
	if e.httpClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// Pods come and go; a kept-alive connection to an old pod IP is useless.
		tr.DisableKeepAlives = true
		tr.Proxy = nil
		e.httpClient = &http.Client{
			Transport: tr,
			// A reload endpoint has no business redirecting.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return e
}

// Run carries out req within req.Timeout (DefaultTimeout when zero),
// retrying transient errors with exponential backoff. Permanent errors are
// returned wrapped in backoff.Permanent; test them with errors.Is and
// IsTransient, and label them with Reason.
func (e *executor) Run(ctx context.Context, req Request) (Result, error) {
	if err := req.validate(); err != nil {
		return Result{}, err
	}
	if e.kube == nil && req.Kind != FlushCache {
		return Result{}, invalidf("%s needs a Kubernetes client", req.Kind)
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := e.logger.With("action", string(req.Kind), "namespace", req.Namespace, "dry_run", req.DryRun)
	switch req.Kind {
	case Restart:
		return e.restart(ctx, log.With("deployment", req.Deployment), req)
	case Scale:
		return e.scale(ctx, log.With("deployment", req.Deployment), req)
	case Recycle:
		return e.recycle(ctx, log.With("deployment", req.Deployment, "pod", req.Pod), req)
	case FlushCache:
		return e.flush(ctx, e.logger.With("action", string(req.Kind), "redis", req.Redis.Name, "db", req.Redis.DB, "dry_run", req.DryRun), req)
	case Reload:
		return e.reload(ctx, log.With("deployment", req.Deployment), req)
	case BlockSource:
		return e.blockSource(ctx, log.With("deployment", req.Deployment, "source", req.Source.String()), req)
	case ExpireBlocks:
		return e.expireBlocks(ctx, log.With("deployment", req.Deployment, "blocklist", req.Blocklist), req)
	}
	return Result{}, invalidf("unknown action kind %q", req.Kind)
}

func (r Request) validate() error {
	switch r.Kind {
	case Restart, Scale, Recycle, Reload, BlockSource, ExpireBlocks:
		if msgs := validation.IsDNS1123Label(r.Namespace); len(msgs) > 0 {
			return invalidf("namespace %q: %s", r.Namespace, msgs[0])
		}
		if msgs := validation.IsDNS1123Subdomain(r.Deployment); len(msgs) > 0 {
			return invalidf("deployment %q: %s", r.Deployment, msgs[0])
		}
	case FlushCache:
	case "":
		return invalidf("action kind is empty")
	default:
		return invalidf("unknown action kind %q", r.Kind)
	}
	if r.Timeout < 0 {
		return invalidf("timeout %s is negative", r.Timeout)
	}
	if r.Kind == BlockSource || r.Kind == ExpireBlocks {
		return r.validateBlock()
	}
	return nil
}

// retry runs op until it succeeds, returns a permanent error, ctx ends or
// the attempts set by WithMaxAttempts are used up.
// Unlike backoff.RetryNotify it keeps the last operation error when the
// deadline cuts the retries short, so the caller learns why it gave up.
func (e *executor) retry(ctx context.Context, log *slog.Logger, what string, op func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(e.initialInterval),
		backoff.WithMaxInterval(e.maxInterval),
		backoff.WithMaxElapsedTime(0), // the context bounds the total time
	)
	attempts := 0
	for {
		attempts++
		err := op(ctx)
		if err == nil {
			return nil
		}
		var perm *backoff.PermanentError
		if errors.As(err, &perm) || !IsTransient(err) {
			if !errors.As(err, &perm) {
				err = backoff.Permanent(err)
			}
			return err
		}
		if e.maxAttempts > 0 && attempts >= e.maxAttempts {
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempts, err)
		}
		wait := b.NextBackOff()
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return fmt.Errorf("%s: gave up after %d attempts within the timeout: %w", what, attempts, err)
		}
		log.Debug("transient error, retrying", "step", what, "attempt", attempts, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: gave up after %d attempts: %w (last error: %w)", what, attempts, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// getDeployment reads the Deployment (retrying transient errors) and refuses
// an opted-out one.
func (e *executor) getDeployment(ctx context.Context, log *slog.Logger, req Request) (*appsv1.Deployment, error) {
	var d *appsv1.Deployment
	err := e.retry(ctx, log, "get deployment", func(ctx context.Context) error {
		var err error
		d, err = e.kube.AppsV1().Deployments(req.Namespace).Get(ctx, req.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if optedOut(d.Annotations) {
		return nil, permanent(fmt.Errorf("deployment %s/%s: %w", req.Namespace, req.Deployment, ErrOptedOut))
	}
	return d, nil
}

// getDeploymentSelector reads the Deployment like getDeployment and parses
// its pod selector, refusing an empty one (it would match every pod of the
// namespace).
func (e *executor) getDeploymentSelector(ctx context.Context, log *slog.Logger, req Request) (*appsv1.Deployment, labels.Selector, error) {
	d, err := e.getDeployment(ctx, log, req)
	if err != nil {
		return nil, nil, err
	}
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || selector.Empty() {
		return nil, nil, invalidf("deployment %s/%s has no usable selector", req.Namespace, req.Deployment)
	}
	return d, selector, nil
}

// listPods lists the pods matching the Deployment's selector.
func (e *executor) listPods(ctx context.Context, log *slog.Logger, req Request, selector labels.Selector) (*corev1.PodList, error) {
	var list *corev1.PodList
	err := e.retry(ctx, log, "list pods", func(ctx context.Context) error {
		var err error
		list, err = e.kube.CoreV1().Pods(req.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
		if err != nil {
			return fmt.Errorf("list pods of deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		return nil
	})
	return list, err
}

func optedOut(annotations map[string]string) bool {
	// Lenient on purpose: an opt-out written as "Disabled" still opts out.
	return strings.EqualFold(strings.TrimSpace(annotations[OptOutAnnotation]), OptOutDisabled)
}

func dryRunOpt(dry bool) []string {
	if dry {
		return []string{metav1.DryRunAll}
	}
	return nil
}
