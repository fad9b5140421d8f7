package certs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/kubecore"
	"github.com/warden-sre/warden/internal/testenv"
)

// certsListAnswers records what the API server answers to Secret lists:
// the requests' selectors and limits, and the Secrets each page holds by
// type.
type certsListAnswers struct {
	mu       sync.Mutex
	requests []string // "fieldSelector=… limit=… continue=…"
	pages    []map[corev1.SecretType]int
}

func (a *certsListAnswers) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func (a *certsListAnswers) client(t testing.TB, cfg *rest.Config) *kubecore.Client {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return certsRoundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err != nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/secrets") {
				return resp, err
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr != nil {
				return nil, rerr
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			var list corev1.SecretList
			if err := json.Unmarshal(body, &list); err != nil {
				return nil, fmt.Errorf("decode the Secret list answer: %w", err)
			}
			types := map[corev1.SecretType]int{}
			for _, s := range list.Items {
				types[s.Type]++
			}
			q := r.URL.Query()
			a.mu.Lock()
			a.requests = append(a.requests, fmt.Sprintf("fieldSelector=%s limit=%s continue=%t", q.Get("fieldSelector"), q.Get("limit"), q.Get("continue") != ""))
			a.pages = append(a.pages, types)
			a.mu.Unlock()
			return resp, nil
		})
	}
	return certsCoreClient(t, cfg)
}

// certsAdminClient is a clientset without client-side rate limit, to
// create fixtures quickly.
func certsAdminClient(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certsCreateSecrets creates n Secrets of type typ named prefix-00000… in
// namespace, from workers goroutines.
func certsCreateSecrets(t testing.TB, ctx context.Context, client kubernetes.Interface, namespace, prefix string, typ corev1.SecretType, n int, data map[string][]byte) {
	t.Helper()
	const workers = 16
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				s := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("%s-%05d", prefix, i)},
					Type:       typ,
					Data:       data,
				}
				if _, err := client.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create Secret %s/%s: %w", namespace, s.Name, err)
					return
				}
			}
		})
	}
	sent := 0
feed:
	for ; sent < n; sent++ {
		select {
		case next <- sent:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func certsFleetNamespace(t testing.TB, ctx context.Context, client kubernetes.Interface, name string) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCertsKubernetesReadsOnlyTLSSecretsPageByPage: 500 TLS Secrets among
// 500 Opaque ones. Only TLS Secrets cross the wire (the API server filters
// by type), in pages of at most the page size, and each page's metrics are
// sent before the next page is asked for.
func TestCertsKubernetesReadsOnlyTLSSecretsPageByPage(t *testing.T) {
	const tlsSecrets, opaqueSecrets = 500, 500
	k := testenv.StartKube(t)
	ctx := t.Context()
	var answers certsListAnswers
	client := answers.client(t, k.Config)
	admin := certsAdminClient(t, k.Config)
	chain := certsNewChain(t)
	certsFleetNamespace(t, ctx, admin, "fleet")
	certsCreateSecrets(t, ctx, admin, "fleet", "tls", corev1.SecretTypeTLS, tlsSecrets, map[string][]byte{
		corev1.TLSCertKey: certgen.ChainPEM(chain.Leaf, chain.Intermediate), corev1.TLSPrivateKeyKey: chain.Leaf.KeyPEM()})
	certsCreateSecrets(t, ctx, admin, "fleet", "opaque", corev1.SecretTypeOpaque, opaqueSecrets, map[string][]byte{
		corev1.TLSCertKey: certgen.ChainPEM(chain.Leaf, chain.Intermediate), "password": []byte("not read")})

	c := NewKubernetes(&KubernetesConfig{Namespaces: []string{"fleet"}}, client, slog.New(slog.DiscardHandler))
	// Pages of 100 (the default is 500), so that 500 TLS Secrets take
	// several.
	c.pageSize = 100
	ch := make(chan prometheus.Metric)
	var err error
	go func() {
		err = c.Collect(certsCtx(t, 2*time.Minute), ch)
		close(ch)
	}()
	sources, requestsAtFirstSource := 0, 0
	for m := range ch {
		if !strings.Contains(m.Desc().String(), `"warden_certs_source_success"`) {
			continue
		}
		if sources == 0 {
			// The collector waits for this receive: the requests made so
			// far are those made before the first page was processed.
			requestsAtFirstSource = answers.count()
		}
		sources++
	}
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if sources != tlsSecrets {
		t.Errorf("%d sources reported, want the %d TLS Secrets", sources, tlsSecrets)
	}
	if requestsAtFirstSource != 1 {
		t.Errorf("the first Secret was reported after %d list requests, want 1: pages are processed as they come", requestsAtFirstSource)
	}
	answers.mu.Lock()
	defer answers.mu.Unlock()
	if n := len(answers.requests); n < tlsSecrets/100 {
		t.Errorf("%d list requests, want at least %d (pages of 100)", n, tlsSecrets/100)
	}
	read := 0
	for i, page := range answers.pages {
		if want := "fieldSelector=type=kubernetes.io/tls limit=100 continue=" + strconv.FormatBool(i > 0); answers.requests[i] != want {
			t.Errorf("request %d: %s, want %s", i+1, answers.requests[i], want)
		}
		n := 0
		for typ, count := range page {
			n += count
			if typ != corev1.SecretTypeTLS {
				t.Errorf("request %d answered %d Secrets of type %s", i+1, count, typ)
			}
		}
		if n > 100 {
			t.Errorf("request %d answered %d Secrets, more than the page size", i+1, n)
		}
		read += n
	}
	if read != tlsSecrets {
		t.Errorf("%d Secrets read in all, want %d", read, tlsSecrets)
	}
}

// BenchmarkCertsKubernetes10000Secrets lists 10,000 TLS Secrets (among
// 1,000 Opaque ones) from a real API server, once per op. Reported:
// ns/op, the scrape's time; peak-heap-MiB, the most heap in use during a
// scrape (sampled every 2 ms); peak-rss-MiB, the process's peak resident
// set during the scrapes (VmHWM, reset after setup); the full subbenchmark
// also gathers every metric into a registry, as the exporter's handler
// does. Creating the Secrets takes a minute or more.
//
// Measured on a shared 2-core AMD EPYC, API server on the same machine
// (go test -run '^$' -bench CertsKubernetes10000Secrets -benchtime 3x
// ./exporter/certs/): pages of 500: collector 0.96–1.14 s/op, peak heap
// 12.6–16.3 MiB, peak RSS 60–62 MiB; gathered 0.88 s/op, peak heap
// 81 MiB, peak RSS 134 MiB (the 60,000 series themselves: 10,000 × two
// certificates × not_before and not_after, plus earliest and success). With
// pages of 100 the collector took 4.3 s/op, most of it waiting for the
// client's rate limit. RSS is the test process's, setup leftovers included.
func BenchmarkCertsKubernetes10000Secrets(b *testing.B) {
	const tlsSecrets, opaqueSecrets = 10000, 1000
	k := testenv.StartKube(b)
	ctx := b.Context()
	admin := certsAdminClient(b, k.Config)
	chain := certsNewChain(b)
	certsFleetNamespace(b, ctx, admin, "fleet")
	certsCreateSecrets(b, ctx, admin, "fleet", "tls", corev1.SecretTypeTLS, tlsSecrets, map[string][]byte{
		corev1.TLSCertKey: certgen.ChainPEM(chain.Leaf, chain.Intermediate), corev1.TLSPrivateKeyKey: chain.Leaf.KeyPEM()})
	certsCreateSecrets(b, ctx, admin, "fleet", "opaque", corev1.SecretTypeOpaque, opaqueSecrets, map[string][]byte{"password": []byte("not read")})
	// The client the exporter builds, with its client-side rate limit
	// (exporter.Set's kubeClient).
	client, err := kubecore.New(kubecore.Options{Kubeconfig: certsKubeconfig(b, k.Config), UserAgent: "warden-exporter", QPS: 20, Burst: 40})
	if err != nil {
		b.Fatal(err)
	}
	c := NewKubernetes(&KubernetesConfig{}, client, slog.New(slog.DiscardHandler))

	scrapes := map[string]func(b *testing.B) int{
		// The collector alone: its metrics are counted and dropped.
		"collector": func(b *testing.B) int {
			ch := make(chan prometheus.Metric, 1024)
			n := 0
			done := make(chan struct{})
			go func() {
				for m := range ch {
					if strings.Contains(m.Desc().String(), `"warden_certs_source_success"`) {
						n++
					}
				}
				close(done)
			}()
			err := c.Collect(certsCtx(b, 5*time.Minute), ch)
			close(ch)
			<-done
			if err != nil {
				b.Fatal(err)
			}
			return n
		},
		// A whole scrape: every metric gathered into a registry.
		"gathered": func(b *testing.B) int {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(&exportertest.Adapter{C: c, Timeout: 5 * time.Minute})
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "warden_certs_source_success" {
					return len(mf.GetMetric())
				}
			}
			return 0
		},
	}
	for _, name := range []string{"collector", "gathered"} {
		b.Run(name, func(b *testing.B) {
			runtime.GC()
			certsResetPeakRSS(b)
			var peakHeap uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for {
					metrics.Read(sample)
					peakHeap = max(peakHeap, sample[0].Value.Uint64())
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			for b.Loop() {
				if n := scrapes[name](b); n != tlsSecrets {
					b.Fatalf("%d Secrets reported, want %d", n, tlsSecrets)
				}
			}
			close(stop)
			<-sampled
			b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(certsPeakRSS(b))/(1<<20), "peak-rss-MiB")
		})
	}
}

// certsResetPeakRSS resets the process's peak resident set (VmHWM).
func certsResetPeakRSS(b *testing.B) {
	b.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// certsPeakRSS is VmHWM, in bytes.
func certsPeakRSS(b *testing.B) uint64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
