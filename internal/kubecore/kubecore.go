// Package kubecore reads the few core/v1 objects warden-exporter needs (TLS
// Secrets page by page, pods, pod log streams) over client-go's REST
// transport, decoding the JSON answers into small structs holding only the
// fields used. It does not link the typed clientset (k8s.io/client-go/kubernetes)
// nor the k8s.io/api types, whose registration into the client scheme costs
// a binary tens of MiB of resident memory; the remediator, which writes many
// kinds of objects, uses internal/kubeclient instead.
package kubecore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
)

// Options sets where the client connects, how it identifies itself and how
// fast it may go.
type Options struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster configuration.
	Kubeconfig string
	// UserAgent names the binary in the API server's audit log.
	UserAgent string
	// QPS and Burst are the client-side rate limit. Zero keeps client-go's
	// defaults (5 and 10), which throttle any real workload, so callers
	// state theirs.
	QPS   float32
	Burst int
}

// RESTConfig returns the REST configuration the options describe.
func RESTConfig(o Options) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes configuration (give a kubeconfig when running outside a cluster): %w", err)
		}
	}
	if o.UserAgent != "" {
		cfg.UserAgent = o.UserAgent
	}
	if o.QPS > 0 {
		cfg.QPS = o.QPS
	}
	if o.Burst > 0 {
		cfg.Burst = o.Burst
	}
	return cfg, nil
}

// Client reads core/v1 objects. It is safe for concurrent use.
type Client struct {
	http *http.Client
	// base is the server URL up to and including /api/v1.
	base    url.URL
	limiter flowcontrol.RateLimiter
}

// New returns a client built from the options.
func New(o Options) (*Client, error) {
	cfg, err := RESTConfig(o)
	if err != nil {
		return nil, err
	}
	return NewForConfig(cfg)
}

// NewForConfig returns a client for a REST configuration: its host, TLS,
// credentials, transport wrappers, user agent (client-go's default when
// empty), timeout and rate limit (RateLimiter, else QPS and Burst with
// client-go's defaults for zero; a negative QPS means none).
func NewForConfig(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.APIPath = "/api"
	host, apiPath, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	c := &Client{http: httpClient, base: *host, limiter: cfg.RateLimiter}
	c.base.Path = path.Join("/", host.Path, apiPath, "v1")
	if c.limiter == nil {
		qps, burst := cfg.QPS, cfg.Burst
		if qps == 0 {
			qps = rest.DefaultQPS
		}
		if burst == 0 {
			burst = rest.DefaultBurst
		}
		if qps > 0 {
			c.limiter = flowcontrol.NewTokenBucketRateLimiter(qps, burst)
		}
	}
	return c, nil
}

// ObjectMeta holds the metadata fields read from objects.
type ObjectMeta struct {
	Name              string     `json:"name"`
	Namespace         string     `json:"namespace"`
	UID               string     `json:"uid"`
	DeletionTimestamp *time.Time `json:"deletionTimestamp,omitempty"`
}

// ListOptions select the objects of a list request and its page.
type ListOptions struct {
	LabelSelector string
	FieldSelector string
	// Limit is the page size; zero asks for every object at once.
	Limit int64
	// Continue is the token of the previous page.
	Continue string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.FieldSelector != "" {
		q.Set("fieldSelector", o.FieldSelector)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.FormatInt(o.Limit, 10))
	}
	if o.Continue != "" {
		q.Set("continue", o.Continue)
	}
	return q
}

// listMeta is the metadata of a list answer.
type listMeta struct {
	Continue string `json:"continue"`
}

// SecretTypeTLS is the type of Secrets holding tls.crt and tls.key.
const SecretTypeTLS = "kubernetes.io/tls"

// TLSCertKey is the key of a TLS Secret's certificate chain.
const TLSCertKey = "tls.crt"

// Secret is a Secret's metadata, type and data (base64 in the API,
// decoded here).
type Secret struct {
	Metadata ObjectMeta        `json:"metadata"`
	Type     string            `json:"type"`
	Data     map[string][]byte `json:"data"`
}

// SecretList is one page of Secrets; Continue is empty on the last page.
type SecretList struct {
	Metadata listMeta `json:"metadata"`
	Items    []Secret `json:"items"`
}

// Continue is the token that asks for the next page, empty on the last.
func (l *SecretList) Continue() string { return l.Metadata.Continue }

// ListSecrets lists one page of the Secrets of namespace (every namespace
// when empty).
func (c *Client) ListSecrets(ctx context.Context, namespace string, o ListOptions) (*SecretList, error) {
	var list SecretList
	if err := c.getJSON(ctx, resourcePath(namespace, "secrets"), o.query(), &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// PodRunning is the phase of a pod whose containers were started.
const PodRunning = "Running"

// Pod is a pod's metadata, container names and phase.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     PodSpec    `json:"spec"`
	Status   PodStatus  `json:"status"`
}

// PodSpec holds the pod's containers.
type PodSpec struct {
	Containers []Container `json:"containers"`
}

// Container is a container of a pod, by name.
type Container struct {
	Name string `json:"name"`
}

// PodStatus holds the pod's phase (PodRunning, …).
type PodStatus struct {
	Phase string `json:"phase"`
}

// PodList is one page of pods.
type PodList struct {
	Metadata listMeta `json:"metadata"`
	Items    []Pod    `json:"items"`
}

// ListPods lists the pods of namespace (every namespace when empty).
func (c *Client) ListPods(ctx context.Context, namespace string, o ListOptions) (*PodList, error) {
	var list PodList
	if err := c.getJSON(ctx, resourcePath(namespace, "pods"), o.query(), &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// LogOptions select what a pod log stream carries.
type LogOptions struct {
	Container  string
	Follow     bool
	Timestamps bool
	// SinceTime starts the stream at that time (the API takes whole
	// seconds); zero means no such bound.
	SinceTime time.Time
	// TailLines starts the stream that many lines before the end; nil
	// means from the start.
	TailLines *int64
}

// PodLogs opens the log stream of a pod's container; the caller closes it.
func (c *Client) PodLogs(ctx context.Context, namespace, name string, o LogOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	if !o.SinceTime.IsZero() {
		q.Set("sinceTime", o.SinceTime.UTC().Format(time.RFC3339))
	}
	if o.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*o.TailLines, 10))
	}
	resp, err := c.get(ctx, path.Join(resourcePath(namespace, "pods"), name, "log"), q)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// resourcePath is the path of a namespaced resource below /api/v1.
func resourcePath(namespace, resource string) string {
	if namespace == "" {
		return resource
	}
	return path.Join("namespaces", namespace, resource)
}

// getJSON sends a GET and decodes the JSON answer into v.
func (c *Client) getJSON(ctx context.Context, rel string, q url.Values, v any) error {
	resp, err := c.get(ctx, rel, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode the answer: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// get sends a GET after waiting for the rate limiter. An answer outside
// 200-206 is returned as a *StatusError and its body closed; within it is
// success, as for client-go's REST client (the API server answers 204 with
// no body for the log of a pod not yet on a node).
func (c *Client) get(ctx context.Context, rel string, q url.Values) (*http.Response, error) {
	u := c.base
	u.Path = path.Join(u.Path, rel)
	u.RawQuery = q.Encode()
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, fmt.Errorf("GET %s: client rate limit: %w", u.Path, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < http.StatusOK || resp.StatusCode > http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

// StatusError is an answer of the API server outside 200-206, with the
// message of its Status object when it sent one.
type StatusError struct {
	Path    string
	Code    int
	Reason  string
	Message string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	if e.Reason != "" {
		return fmt.Sprintf("GET %s: %s (%d %s)", e.Path, msg, e.Code, e.Reason)
	}
	return fmt.Sprintf("GET %s: %s (%d)", e.Path, msg, e.Code)
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

func statusError(resp *http.Response) error {
	e := &StatusError{Path: resp.Request.URL.Path, Code: resp.StatusCode}
	// A body that cannot be read leaves the code alone to tell.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var status struct {
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Kind == "Status" {
		e.Reason, e.Message = status.Reason, status.Message
	} else if len(body) > 0 {
		const maxMessage = 512
		e.Message = string(body[:min(len(body), maxMessage)])
	}
	return e
}
