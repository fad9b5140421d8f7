package actions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// reloadParallelism bounds concurrent reload requests for large workloads.
const reloadParallelism = 8

// reload sends the configured HTTP request to every ready pod of the
// Deployment, addressing each pod by its IP. Each pod's request is retried
// on its own (5xx, refused connections, timeouts) within the action's
// timeout. The action is verified when every pod answered 2xx.
func (e *executor) reload(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	res := Result{Object: "Deployment/" + req.Deployment}
	scheme := req.ReloadScheme
	if scheme == "" {
		scheme = "http"
	}
	method := strings.ToUpper(req.ReloadMethod)
	if method == "" {
		method = http.MethodPost
	}
	switch {
	case scheme != "http" && scheme != "https":
		return res, invalidf("reload scheme %q: want http or https", req.ReloadScheme)
	case req.ReloadPort < 1 || req.ReloadPort > 65535:
		return res, invalidf("reload port %d out of range", req.ReloadPort)
	case !strings.HasPrefix(req.ReloadPath, "/"):
		return res, invalidf("reload path %q must start with /", req.ReloadPath)
	case !slices.Contains([]string{http.MethodPost, http.MethodPut, http.MethodGet}, method):
		return res, invalidf("reload method %q: want POST, PUT or GET", req.ReloadMethod)
	}
	path, err := url.Parse(req.ReloadPath)
	if err != nil || path.Host != "" || path.Scheme != "" {
		return res, invalidf("reload path %q is not a plain path", req.ReloadPath)
	}

	targets, err := e.readyPods(ctx, log, req)
	if err != nil {
		return res, err
	}
	names := make([]string, len(targets))
	for i, p := range targets {
		names[i] = p.Name
	}
	if req.DryRun {
		res.Detail = fmt.Sprintf("dry run: would send %s %s to %d ready pods: %s", method, req.ReloadPath, len(targets), strings.Join(names, ", "))
		log.Debug("reload checked", "pods", len(targets))
		return res, nil
	}

	errs := e.callEveryPod(ctx, log, targets, func(p *corev1.Pod) string {
		u := url.URL{
			Scheme:   scheme,
			Host:     net.JoinHostPort(p.Status.PodIP, strconv.Itoa(req.ReloadPort)),
			Path:     path.Path,
			RawQuery: path.RawQuery,
		}
		return u.String()
	}, method)
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", names[i], err))
		}
	}
	ok := len(targets) - len(failed)
	res.Changed = ok > 0
	if len(failed) > 0 {
		res.Detail = fmt.Sprintf("%d of %d pods reloaded", ok, len(targets))
		// Keep the first failing pod's error in the chain for Reason and
		// IsTransient; the message lists them all.
		first := errs[slices.IndexFunc(errs, func(err error) bool { return err != nil })]
		return res, fmt.Errorf("reload failed on %d of %d pods: %s: %w", len(failed), len(targets), strings.Join(failed, "; "), first)
	}
	res.Verified = true
	res.Detail = fmt.Sprintf("%s %s answered 2xx on all %d ready pods: %s", method, req.ReloadPath, len(targets), strings.Join(names, ", "))
	log.Debug("workload reloaded", "pods", len(targets))
	return res, nil
}

// readyPods lists the Deployment's pods that are ready, have an IP and are
// not terminating; none is a permanent error.
func (e *executor) readyPods(ctx context.Context, log *slog.Logger, req Request) ([]*corev1.Pod, error) {
	_, selector, err := e.getDeploymentSelector(ctx, log, req)
	if err != nil {
		return nil, err
	}
	list, err := e.listPods(ctx, log, req, selector)
	if err != nil {
		return nil, err
	}
	var ready []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return nil, permanent(fmt.Errorf("reload deployment %s/%s: %w (%d pods match the selector)", req.Namespace, req.Deployment, ErrNoReadyPods, len(list.Items)))
	}
	return ready, nil
}

// callEveryPod sends the reload request to each pod, at most
// reloadParallelism at a time, each retried on its own. The errors are in
// the pods' order; nil means the pod answered 2xx.
func (e *executor) callEveryPod(ctx context.Context, log *slog.Logger, pods []*corev1.Pod, urlOf func(*corev1.Pod) string, method string) []error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	sem := make(chan struct{}, reloadParallelism)
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			u := urlOf(p)
			errs[i] = e.retry(ctx, log.With("pod", p.Name), "reload "+p.Name, func(ctx context.Context) error {
				return e.callReload(ctx, method, u)
			})
		}()
	}
	wg.Wait()
	return errs
}

func (e *executor) callReload(ctx context.Context, method, target string) error {
	hreq, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return permanent(fmt.Errorf("build reload request: %w", err))
	}
	hreq.Header.Set("User-Agent", FieldManager)
	resp, err := e.httpClient.Do(hreq)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: %w", method, target, &HTTPStatusError{StatusCode: resp.StatusCode, Status: resp.Status})
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
