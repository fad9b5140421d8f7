package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/exporter"
	"github.com/warden-sre/warden/internal/testenv"
)

const (
	fleetExample         = "examples/prometheus-fleet.yml"
	fleetShardLine       = `regex: "0" # shard index`
	fleetExporterService = "warden-exporter.rust-security.svc:10187"
)

func TestFleetExamplePassesPromtool(t *testing.T) {
	promtool := testenv.Promtool(t)
	out, err := exec.Command(promtool, "check", "config", "--lint=all", fleetExample).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check config %s: %v\n%s", fleetExample, err, out)
	}
}

// fleetConfig is the example for one shard, pointed at the test's API
// server and exporter Service.
func fleetConfig(t *testing.T, shard int, kubeconfig, exporterAddr string) string {
	t.Helper()
	b, err := os.ReadFile(fleetExample)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, edit := range [][2]string{
		{fleetShardLine, fmt.Sprintf(`regex: "%d" # shard index`, shard)},
		{fleetExporterService, exporterAddr},
		{"      - role: service\n", "      - role: service\n        kubeconfig_file: " + kubeconfig + "\n"},
		{"scrape_interval: 30s", "scrape_interval: 2s"},
		{"scrape_timeout: 10s", "scrape_timeout: 2s"},
	} {
		if !strings.Contains(s, edit[0]) {
			t.Fatalf("%s no longer contains %q", fleetExample, edit[0])
		}
		s = strings.ReplaceAll(s, edit[0], edit[1])
	}
	return s
}

// startFleetPrometheus runs Prometheus on a raw configuration.
func startFleetPrometheus(t *testing.T, config string) *testenv.Prometheus {
	t.Helper()
	bin, err := testenv.LookBinary("prometheus", "PROMETHEUS", "scripts/tools.sh prometheus")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	cfgPath := testenv.WriteFile(t, dir, "prometheus.yml", config)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	proc, err := testenv.StartProcess(filepath.Join(dir, "prometheus.log"), func() *exec.Cmd {
		return exec.Command(bin, "--config.file="+cfgPath, "--web.listen-address="+addr,
			"--storage.tsdb.path="+filepath.Join(dir, "data"), "--scrape.discovery-reload-interval=100ms")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(syscall.SIGTERM, 5*time.Second) })
	if err := proc.WaitReady(t.Context(), time.Minute, testenv.HTTPReady("http://"+addr+"/-/ready")); err != nil {
		t.Fatalf("prometheus: %v\n%s", err, testenv.Tail(proc.LogPath(), 20))
	}
	return &testenv.Prometheus{URL: "http://" + addr, Addr: addr}
}

// TestFleetShardsScrapeEveryTargetOnce runs the fleet example as
// documented: 40 annotated Services in a real API server (each pointing,
// through warden.io/probe-target, at its own database of one PostgreSQL
// server), two exporter replicas behind one address standing in for the
// Service, and two Prometheus servers with shard indexes 0 and 1. Every
// target is scraped, by exactly one shard, through both replicas, and
// reports pg_up 1.
func TestFleetShardsScrapeEveryTargetOnce(t *testing.T) {
	const targets = 40
	// Behind one Service each replica ends up probing every target and
	// keeps its connection warm: 2 × 40 connections, more than the test
	// server's default of 50 (docs/configuration.md, probe).
	pg := testenv.StartPostgres(t, testenv.WithPostgresSetting("max_connections", "120"))
	kube := testenv.StartKube(t)
	ctx := t.Context()

	cfg, err := exporter.ParseConfig([]byte(`
modules:
  postgres:
    type: postgres
    allowed_targets: ["127.0.0.1"]
    postgres: {dsn: "postgres://postgres@/postgres?sslmode=disable", max_connections: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	// The replicas' logs, shown for the targets that never reported.
	var exporterLog lockedBuffer
	logger := slog.New(slog.NewTextHandler(&exporterLog, nil))
	var replicas []*url.URL
	var served [2]atomic.Int64
	for i := range 2 {
		set, err := exporter.Build(ctx, cfg, logger, nil)
		if err != nil {
			t.Fatal(err)
		}
		exp := exporter.New(logger, set, cfg.Scrape, prometheus.NewRegistry())
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served[i].Add(1)
			exp.ServeProbe(w, r)
		}))
		t.Cleanup(func() {
			srv.Close()
			_ = exp.Close()
		})
		u, _ := url.Parse(srv.URL)
		replicas = append(replicas, u)
	}
	// The Service: round robin over the replicas.
	var next atomic.Uint64
	service := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(replicas[next.Add(1)%uint64(len(replicas))])
		},
		// Prometheus hangs up on a scrape at shutdown; nothing to report.
		ErrorLog: log.New(io.Discard, "", 0),
	})
	t.Cleanup(service.Close)

	want := map[string]bool{}
	if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range targets {
		db := fmt.Sprintf("fleet_%02d", i)
		pg.CreateDatabase(t, db)
		target := pg.Addr() + "/" + db
		want[target] = true
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pg-%02d", i), Annotations: map[string]string{
				"warden.io/probe-module": "postgres",
				"warden.io/probe-target": target,
			}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "postgres", Port: 5432}}},
		}
		if _, err := kube.Client.CoreV1().Services("fleet").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A Service without the annotation is not probed.
	unannotated := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := kube.Client.CoreV1().Services("fleet").Create(ctx, unannotated, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(kube.Config, kubeconfig, ""); err != nil {
		t.Fatal(err)
	}
	exporterAddr := strings.TrimPrefix(service.URL, "http://")
	shards := []*testenv.Prometheus{
		startFleetPrometheus(t, fleetConfig(t, 0, kubeconfig, exporterAddr)),
		startFleetPrometheus(t, fleetConfig(t, 1, kubeconfig, exporterAddr)),
	}

	// Each shard's targets that reported pg_up 1 at least once (on a busy
	// machine a probe may miss its deadline now and then); wait until both
	// shards together have every target.
	perShard := make([][]string, len(shards))
	pollCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = testenv.Poll(pollCtx, 500*time.Millisecond, func() (bool, error) {
		total := 0
		for i, p := range shards {
			samples, err := p.Query(ctx, `max_over_time(pg_up{job="warden-probe", module="postgres", namespace="fleet"}[1h]) == 1`)
			if err != nil {
				return false, err
			}
			perShard[i] = perShard[i][:0]
			for _, s := range samples {
				perShard[i] = append(perShard[i], s.Metric["instance"])
			}
			total += len(samples)
		}
		return total >= targets, nil
	})
	if err != nil {
		logMissingTargets(t, shards, want, perShard, exporterLog.String())
		t.Fatalf("the shards never reported every target: %v (shard 0: %d, shard 1: %d)", err, len(perShard[0]), len(perShard[1]))
	}

	seen := map[string]int{}
	for i, instances := range perShard {
		if len(instances) == 0 {
			t.Errorf("shard %d scrapes no target: hashmod does not spread them", i)
		}
		for _, inst := range instances {
			seen[inst]++
			if !want[inst] {
				t.Errorf("shard %d scrapes %q, which no annotated Service names", i, inst)
			}
		}
	}
	for target := range want {
		if seen[target] != 1 {
			t.Errorf("target %s is scraped by %d shards, want exactly 1", target, seen[target])
		}
	}
	// up counts every scrape target of the job, failed ones included:
	// 40 in all, none twice, and the Service without annotation absent.
	total := 0
	for i, p := range shards {
		samples, err := p.Query(ctx, `max_over_time(up{job="warden-probe"}[1h])`)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range samples {
			if s.Metric["service"] == "web" {
				t.Errorf("shard %d probes the unannotated Service", i)
			}
		}
		total += len(samples)
	}
	if total != targets {
		t.Errorf("%d scrape targets across the shards, want %d", total, targets)
	}
	for i := range served {
		if served[i].Load() == 0 {
			t.Errorf("exporter replica %d served no probe", i)
		}
	}
	t.Logf("shard sizes %d and %d; probes served by the replicas: %d and %d",
		len(perShard[0]), len(perShard[1]), served[0].Load(), served[1].Load())
}

// logMissingTargets logs, for each target no shard reported up, what the
// shards' target pages say of it (health and last scrape error), so a
// failure shows why a probe kept failing.
func logMissingTargets(t *testing.T, shards []*testenv.Prometheus, want map[string]bool, perShard [][]string, exporterLog string) {
	t.Helper()
	reported := map[string]bool{}
	for _, instances := range perShard {
		for _, inst := range instances {
			reported[inst] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for target := range want {
		if reported[target] {
			continue
		}
		db := target[strings.LastIndexByte(target, '/')+1:]
		logged := 0
		for line := range strings.Lines(exporterLog) {
			if strings.Contains(line, db) && logged < 3 {
				t.Logf("missing %s: exporter: %s", target, strings.TrimSpace(line))
				logged++
			}
		}
		escaped := url.QueryEscape(target)
		for i, p := range shards {
			targets, err := p.Targets(ctx)
			if err != nil {
				t.Logf("shard %d: targets: %v", i, err)
				continue
			}
			for _, tg := range targets {
				if strings.Contains(tg.ScrapeURL, escaped) || strings.Contains(tg.ScrapeURL, target) {
					t.Logf("missing %s: shard %d scrapes %s: health %s, last error %q", target, i, tg.ScrapeURL, tg.Health, tg.LastError)
				}
			}
		}
	}
}

// lockedBuffer is an io.Writer safe for the replicas' concurrent logging.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
