package kubecore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/warden-sre/warden/internal/testenv"
)

// TestClientReadsFromAPIServer reads Secrets and pods a real API server
// holds, and its error answers.
func TestClientReadsFromAPIServer(t *testing.T) {
	k := testenv.StartKube(t)
	ctx := t.Context()
	for _, ns := range []string{"core-a", "core-b"} {
		if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(ns, name string, typ corev1.SecretType, labels map[string]string) {
		t.Helper()
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Type:       typ,
			Data:       map[string][]byte{TLSCertKey: []byte("crt of " + name), "tls.key": []byte("key")},
		}
		if _, err := k.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	auth := map[string]string{"app": "auth"}
	for i := range 5 {
		secret("core-a", fmt.Sprintf("tls-%d", i), corev1.SecretTypeTLS, auth)
	}
	secret("core-a", "opaque", corev1.SecretTypeOpaque, auth)
	secret("core-a", "unlabelled", corev1.SecretTypeTLS, nil)
	secret("core-b", "tls-b", corev1.SecretTypeTLS, auth)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "core-a", Name: "auth-1", Labels: auth},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "auth-service", Image: "auth"}, {Name: "sidecar", Image: "sidecar"}}},
	}
	created, err := k.Client.CoreV1().Pods("core-a").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Secrets page by page", func(t *testing.T) {
		tests := []struct {
			name      string
			namespace string
			want      []string
		}{
			{"one namespace", "core-a", []string{"core-a/tls-0", "core-a/tls-1", "core-a/tls-2", "core-a/tls-3", "core-a/tls-4"}},
			{"every namespace", "", []string{"core-a/tls-0", "core-a/tls-1", "core-a/tls-2", "core-a/tls-3", "core-a/tls-4", "core-b/tls-b"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				o := ListOptions{LabelSelector: "app=auth", FieldSelector: "type=" + SecretTypeTLS, Limit: 2}
				var got []string
				pages := 0
				for {
					page, err := client.ListSecrets(ctx, tt.namespace, o)
					if err != nil {
						t.Fatal(err)
					}
					pages++
					if len(page.Items) > 2 {
						t.Fatalf("page %d holds %d Secrets, more than the limit", pages, len(page.Items))
					}
					for _, s := range page.Items {
						if s.Type != SecretTypeTLS || string(s.Data[TLSCertKey]) != "crt of "+s.Metadata.Name || s.Metadata.UID == "" {
							t.Errorf("Secret %s/%s: type %q, data %q, uid %q", s.Metadata.Namespace, s.Metadata.Name, s.Type, s.Data, s.Metadata.UID)
						}
						got = append(got, s.Metadata.Namespace+"/"+s.Metadata.Name)
					}
					if page.Continue() == "" {
						break
					}
					o.Continue = page.Continue()
				}
				if !slices.Equal(got, tt.want) || pages != (len(tt.want)+1)/2 {
					t.Errorf("got %q in %d pages, want %q in %d", got, pages, tt.want, (len(tt.want)+1)/2)
				}
			})
		}
	})

	t.Run("pods", func(t *testing.T) {
		list, err := client.ListPods(ctx, "core-a", ListOptions{LabelSelector: "app=auth"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 {
			t.Fatalf("%d pods, want 1", len(list.Items))
		}
		p := list.Items[0]
		if p.Metadata.Name != "auth-1" || p.Metadata.UID != string(created.UID) || p.Status.Phase != "Pending" ||
			len(p.Spec.Containers) != 2 || p.Spec.Containers[0].Name != "auth-service" || p.Metadata.DeletionTimestamp != nil {
			t.Errorf("pod = %+v", p)
		}
		if list, err := client.ListPods(ctx, "core-a", ListOptions{LabelSelector: "app=other"}); err != nil || len(list.Items) != 0 {
			t.Errorf("pods of another selector: %+v, %v", list, err)
		}
	})

	t.Run("log of a pod without a node is empty, not an error", func(t *testing.T) {
		rc, err := client.PodLogs(ctx, "core-a", "auth-1", LogOptions{Container: "auth-service", Follow: true})
		if err != nil {
			t.Fatalf("PodLogs of an unscheduled pod: %v, want an empty stream", err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || len(b) != 0 {
			t.Fatalf("read %q, %v; want nothing and no error", b, err)
		}
	})

	t.Run("errors carry the API server's message", func(t *testing.T) {
		nobody, err := k.AddUser("core-nobody")
		if err != nil {
			t.Fatal(err)
		}
		forbidden, err := NewForConfig(nobody)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name     string
			call     func() error
			wantCode int
			wantMsg  string
		}{
			{"forbidden list", func() error {
				_, err := forbidden.ListSecrets(ctx, "core-a", ListOptions{})
				return err
			}, http.StatusForbidden, `secrets is forbidden: User "core-nobody" cannot list resource "secrets"`},
			{"bad selector", func() error {
				_, err := client.ListSecrets(ctx, "core-a", ListOptions{FieldSelector: "nonsense=1"})
				return err
			}, http.StatusBadRequest, `field label not supported: nonsense`},
			{"missing pod", func() error {
				rc, err := client.PodLogs(ctx, "core-a", "nope", LogOptions{})
				if err == nil {
					rc.Close()
				}
				return err
			}, http.StatusNotFound, `pods "nope" not found`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.call()
				var se *StatusError
				if !errors.As(err, &se) || se.Code != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v, want a %d answer with %q", err, tt.wantCode, tt.wantMsg)
				}
			})
		}
	})
}

// countingLimiter admits every request and counts the waits.
type countingLimiter struct {
	flowcontrol.RateLimiter
	waits atomic.Int32
}

func (l *countingLimiter) Wait(context.Context) error {
	l.waits.Add(1)
	return nil
}

// TestClientRequests checks what goes on the wire, against a server
// recording the requests: paths below a host path prefix, query
// parameters, user agent, Accept, rate limiting, and answers that are not
// Status objects.
func TestClientRequests(t *testing.T) {
	var (
		mu       sync.Mutex
		requests []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, fmt.Sprintf("%s?%s ua=%s accept=%s", r.URL.Path, r.URL.RawQuery, r.UserAgent(), r.Header.Get("Accept")))
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/secrets"):
			_, _ = io.WriteString(w, `{"metadata":{"continue":"next"},"items":[{"metadata":{"name":"a","namespace":"ns"},"type":"kubernetes.io/tls","data":{"tls.crt":"Y3J0"}}]}`)
		case strings.HasSuffix(r.URL.Path, "/log"):
			_, _ = io.WriteString(w, "line 1\nline 2\n")
		case strings.HasSuffix(r.URL.Path, "/pods"):
			http.Error(w, "upstream connect error", http.StatusBadGateway)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	limiter := &countingLimiter{RateLimiter: flowcontrol.NewFakeAlwaysRateLimiter()}
	client, err := NewForConfig(&rest.Config{Host: srv.URL + "/prefix", UserAgent: "warden-test", RateLimiter: limiter})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	page, err := client.ListSecrets(ctx, "ns", ListOptions{LabelSelector: "app=auth", FieldSelector: "type=" + SecretTypeTLS, Limit: 500, Continue: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if page.Continue() != "next" || len(page.Items) != 1 || string(page.Items[0].Data[TLSCertKey]) != "crt" {
		t.Errorf("page = %+v", page)
	}
	tail := int64(0)
	for _, o := range []LogOptions{
		{Container: "auth-service", Follow: true, Timestamps: true, TailLines: &tail},
		{Container: "auth-service", Follow: true, Timestamps: true, SinceTime: time.Date(2026, 11, 27, 12, 0, 1, 5e8, time.FixedZone("CET", 3600))},
	} {
		rc, err := client.PodLogs(ctx, "rust-security", "auth-1", o)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(body) != "line 1\nline 2\n" {
			t.Errorf("log body = %q, %v", body, err)
		}
	}
	_, err = client.ListPods(ctx, "", ListOptions{})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadGateway || !strings.Contains(err.Error(), "upstream connect error") {
		t.Errorf("err = %v, want the 502 answer's text", err)
	}

	want := []string{
		"/prefix/api/v1/namespaces/ns/secrets?continue=tok&fieldSelector=type%3Dkubernetes.io%2Ftls&labelSelector=app%3Dauth&limit=500 ua=warden-test accept=application/json",
		"/prefix/api/v1/namespaces/rust-security/pods/auth-1/log?container=auth-service&follow=true&tailLines=0&timestamps=true ua=warden-test accept=application/json",
		"/prefix/api/v1/namespaces/rust-security/pods/auth-1/log?container=auth-service&follow=true&sinceTime=2026-11-27T11%3A00%3A01Z&timestamps=true ua=warden-test accept=application/json",
		"/prefix/api/v1/pods? ua=warden-test accept=application/json",
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(requests, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(requests, "\n"), strings.Join(want, "\n"))
	}
	if n := limiter.waits.Load(); n != int32(len(want)) {
		t.Errorf("%d rate-limiter waits for %d requests", n, len(want))
	}
}

// TestNewForConfigRateLimit: QPS and Burst make the client's token bucket,
// zero keeps client-go's defaults, a negative QPS turns it off.
func TestNewForConfigRateLimit(t *testing.T) {
	tests := []struct {
		name    string
		qps     float32
		burst   int
		wantQPS float32
	}{
		{"stated", 20, 40, 20},
		{"defaults", 0, 0, rest.DefaultQPS},
		{"off", -1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewForConfig(&rest.Config{Host: "https://127.0.0.1:6443", QPS: tt.qps, Burst: tt.burst})
			if err != nil {
				t.Fatal(err)
			}
			var got float32
			if c.limiter != nil {
				got = c.limiter.QPS()
			}
			if got != tt.wantQPS {
				t.Errorf("limiter QPS = %v, want %v", got, tt.wantQPS)
			}
		})
	}
}
