package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const prometheusInstall = "scripts/tools.sh prometheus, then eval \"$(scripts/tools.sh env)\" (sets PROMETHEUS)"

// ScrapeJob is one static scrape job.
type ScrapeJob struct {
	Name        string
	Targets     []string // host:port
	MetricsPath string   // default /metrics
	// Labels are attached to every series of the job's targets, as
	// Kubernetes service discovery would attach namespace, service and pod.
	Labels map[string]string
	// HonorLabels keeps the target's own labels when they clash with
	// Labels (as for warden-remediator, whose namespace label names the
	// workload it protects).
	HonorLabels bool
	// BearerTokenFile authenticates the scrape when set.
	BearerTokenFile string
}

// PrometheusConfig is what a test Prometheus scrapes, evaluates and alerts to.
type PrometheusConfig struct {
	// ScrapeInterval and EvaluationInterval default to 1 s.
	ScrapeInterval     time.Duration
	EvaluationInterval time.Duration
	Jobs               []ScrapeJob
	// RuleFiles are paths (or globs) of rule files.
	RuleFiles []string
	// Alertmanagers are host:port addresses alerts are sent to.
	Alertmanagers []string
	// ExternalLabels are added to every alert sent.
	ExternalLabels map[string]string
	// StorageArgs replace the default storage flags (a fresh TSDB in the
	// server's directory): see StartPrometheusOnData.
	StorageArgs []string
}

// YAML renders the configuration in Prometheus's file format.
func (c PrometheusConfig) YAML() ([]byte, error) {
	scrape, eval := c.ScrapeInterval, c.EvaluationInterval
	if scrape <= 0 {
		scrape = time.Second
	}
	if eval <= 0 {
		eval = time.Second
	}
	type staticConfig struct {
		Targets []string          `yaml:"targets"`
		Labels  map[string]string `yaml:"labels,omitempty"`
	}
	type authorization struct {
		CredentialsFile string `yaml:"credentials_file"`
	}
	type scrapeConfig struct {
		JobName       string         `yaml:"job_name"`
		MetricsPath   string         `yaml:"metrics_path,omitempty"`
		HonorLabels   bool           `yaml:"honor_labels,omitempty"`
		Authorization *authorization `yaml:"authorization,omitempty"`
		StaticConfigs []staticConfig `yaml:"static_configs"`
	}
	type amConfig struct {
		StaticConfigs []staticConfig `yaml:"static_configs"`
	}
	doc := struct {
		Global struct {
			ScrapeInterval     string            `yaml:"scrape_interval"`
			ScrapeTimeout      string            `yaml:"scrape_timeout"`
			EvaluationInterval string            `yaml:"evaluation_interval"`
			ExternalLabels     map[string]string `yaml:"external_labels,omitempty"`
		} `yaml:"global"`
		RuleFiles []string `yaml:"rule_files,omitempty"`
		Alerting  *struct {
			Alertmanagers []amConfig `yaml:"alertmanagers"`
		} `yaml:"alerting,omitempty"`
		ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
	}{}
	doc.Global.ScrapeInterval = scrape.String()
	doc.Global.ScrapeTimeout = scrape.String()
	doc.Global.EvaluationInterval = eval.String()
	doc.Global.ExternalLabels = c.ExternalLabels
	doc.RuleFiles = c.RuleFiles
	if len(c.Alertmanagers) > 0 {
		doc.Alerting = &struct {
			Alertmanagers []amConfig `yaml:"alertmanagers"`
		}{Alertmanagers: []amConfig{{StaticConfigs: []staticConfig{{Targets: c.Alertmanagers}}}}}
	}
	seen := map[string]bool{}
	for i, j := range c.Jobs {
		if j.Name == "" {
			return nil, fmt.Errorf("jobs[%d].name: required", i)
		}
		if seen[j.Name] {
			return nil, fmt.Errorf("jobs[%d].name: %q used twice", i, j.Name)
		}
		seen[j.Name] = true
		sc := scrapeConfig{JobName: j.Name, MetricsPath: j.MetricsPath, HonorLabels: j.HonorLabels, StaticConfigs: []staticConfig{{Targets: j.Targets, Labels: j.Labels}}}
		if j.BearerTokenFile != "" {
			sc.Authorization = &authorization{CredentialsFile: j.BearerTokenFile}
		}
		doc.ScrapeConfigs = append(doc.ScrapeConfigs, sc)
	}
	return yaml.Marshal(doc)
}

// Prometheus is a throw-away Prometheus server on a loopback port, with
// settings for a fast loop: targets applied within 100 ms, alerts resent
// every second.
type Prometheus struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:41234.
	URL  string
	Addr string
	dir  string
	proc *Process
}

// NewPrometheus starts Prometheus with cfg. Stop it with Stop.
func NewPrometheus(ctx context.Context, cfg PrometheusConfig) (*Prometheus, error) {
	bin, err := LookBinary("prometheus", "PROMETHEUS", prometheusInstall)
	if err != nil {
		return nil, err
	}
	raw, err := cfg.YAML()
	if err != nil {
		return nil, fmt.Errorf("prometheus config: %w", err)
	}
	storageFlag, extra := "--storage.tsdb.path", []string{"--web.enable-lifecycle", "--scrape.discovery-reload-interval=100ms", "--rules.alert.resend-delay=1s"}
	if len(cfg.StorageArgs) > 0 {
		storageFlag, extra = "", append(extra, cfg.StorageArgs...)
	}
	s, err := startWebServer(ctx, "prometheus", bin, raw, storageFlag, extra...)
	if err != nil {
		return nil, err
	}
	return &Prometheus{URL: s.URL, Addr: s.Addr, dir: s.dir, proc: s.proc}, nil
}

// webServer is a server of the Prometheus family (Prometheus,
// Alertmanager) in a temp dir of its own, listening on a free loopback
// port.
type webServer struct {
	URL, Addr, dir string
	proc           *Process
}

// startWebServer writes config to <dir>/<name>.yml, starts bin with it,
// its storage flag (storageFlag, unless empty) set to <dir>/data, the address flags and
// extraArgs, logging to <dir>/<name>.log, and waits until /-/ready answers
// 200. On error nothing is left behind.
func startWebServer(ctx context.Context, name, bin string, config []byte, storageFlag string, extraArgs ...string) (webServer, error) {
	var s webServer
	dir, err := os.MkdirTemp("", "warden-"+name+"-")
	if err != nil {
		return s, fmt.Errorf("%s temp dir: %w", name, err)
	}
	fail := func(err error) (webServer, error) {
		os.RemoveAll(dir)
		return webServer{}, err
	}
	configPath := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(configPath, config, 0o644); err != nil {
		return fail(fmt.Errorf("write %s config: %w", name, err))
	}
	port, err := FreePort()
	if err != nil {
		return fail(err)
	}
	s.dir, s.Addr = dir, "127.0.0.1:"+strconv.Itoa(port)
	s.URL = "http://" + s.Addr
	args := []string{
		"--config.file=" + configPath,
		"--web.listen-address=" + s.Addr,
		"--web.external-url=" + s.URL,
		"--log.level=info",
	}
	if storageFlag != "" {
		args = append(args, storageFlag+"="+filepath.Join(dir, "data"))
	}
	args = append(args, extraArgs...)
	s.proc, err = StartProcess(filepath.Join(dir, name+".log"), func() *exec.Cmd { return exec.Command(bin, args...) })
	if err != nil {
		return fail(err)
	}
	if err := s.proc.WaitReady(ctx, 30*time.Second, HTTPReady(s.URL+"/-/ready")); err != nil {
		return fail(fmt.Errorf("%s: %w", name, err))
	}
	return s, nil
}

// StartPrometheus starts Prometheus for one test and removes it afterwards;
// it skips the test under -short.
func StartPrometheus(t testing.TB, cfg PrometheusConfig) *Prometheus {
	t.Helper()
	skipUnderShort(t)
	p, err := NewPrometheus(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// LogPath is the server's log file, for failure messages.
func (p *Prometheus) LogPath() string { return filepath.Join(p.dir, "prometheus.log") }

// Reload replaces the configuration and asks the server to reload it.
func (p *Prometheus) Reload(ctx context.Context, cfg PrometheusConfig) error {
	raw, err := cfg.YAML()
	if err != nil {
		return fmt.Errorf("prometheus config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "prometheus.yml"), raw, 0o644); err != nil {
		return fmt.Errorf("write prometheus config: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reload prometheus: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("reload prometheus: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// Stop ends the server and removes its directory.
func (p *Prometheus) Stop() {
	if p.proc != nil {
		p.proc.Stop(syscall.SIGTERM, 5*time.Second)
	}
	os.RemoveAll(p.dir)
}

// PrometheusAlert is one alert as Prometheus's /api/v1/alerts reports it.
type PrometheusAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"` // pending or firing
	ActiveAt    time.Time         `json:"activeAt"`
	Value       string            `json:"value"`
}

// Name is the alertname label.
func (a PrometheusAlert) Name() string { return a.Labels["alertname"] }

// Alerts returns the pending and firing alerts.
func (p *Prometheus) Alerts(ctx context.Context) ([]PrometheusAlert, error) {
	var data struct {
		Alerts []PrometheusAlert `json:"alerts"`
	}
	if err := p.get(ctx, "/api/v1/alerts", nil, &data); err != nil {
		return nil, err
	}
	return data.Alerts, nil
}

// Sample is one element of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query evaluates an instant PromQL query that returns a vector.
func (p *Prometheus) Query(ctx context.Context, query string) ([]Sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", query, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: bad sample value %v", query, r.Value[1])
		}
		out = append(out, Sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// Series is one element of a range vector: a series and its samples.
type Series struct {
	Metric map[string]string
	Times  []time.Time
	Values []float64
}

// QueryRange evaluates a PromQL query at every step from start to end
// (/api/v1/query_range), as a graph panel does.
func (p *Prometheus) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	params := url.Values{
		"query": {query},
		"start": {strconv.FormatFloat(float64(start.UnixMilli())/1000, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	if err := p.get(ctx, "/api/v1/query_range", params, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("query %q: result type %s, want matrix", query, data.ResultType)
	}
	out := make([]Series, 0, len(data.Result))
	for _, r := range data.Result {
		s := Series{Metric: r.Metric}
		for _, pt := range r.Values {
			ts, _ := pt[0].(float64)
			str, _ := pt[1].(string)
			v, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return nil, fmt.Errorf("query %q: bad sample value %v", query, pt[1])
			}
			s.Times = append(s.Times, time.UnixMilli(int64(ts*1000)))
			s.Values = append(s.Values, v)
		}
		out = append(out, s)
	}
	return out, nil
}

// LabelValues returns the values of label among the series that match the
// selector between start and end (/api/v1/label/<label>/values), as
// Grafana's label_values(selector, label) does.
func (p *Prometheus) LabelValues(ctx context.Context, label, selector string, start, end time.Time) ([]string, error) {
	params := url.Values{
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix()+1, 10)},
	}
	if selector != "" {
		params.Set("match[]", selector)
	}
	var values []string
	if err := p.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", params, &values); err != nil {
		return nil, err
	}
	return values, nil
}

// Target is one scrape target's health.
type Target struct {
	Job       string
	ScrapeURL string
	Health    string // up, down, unknown
	LastError string
}

// Targets returns the active scrape targets.
func (p *Prometheus) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			ScrapeURL string            `json:"scrapeUrl"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return nil, err
	}
	out := make([]Target, 0, len(data.ActiveTargets))
	for _, t := range data.ActiveTargets {
		out = append(out, Target{Job: t.Labels["job"], ScrapeURL: t.ScrapeURL, Health: t.Health, LastError: t.LastError})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ScrapeURL < out[j].ScrapeURL })
	return out, nil
}

// RuleGroups returns the names of the loaded rule groups with the number of
// rules in each, to check that rule files were picked up.
func (p *Prometheus) RuleGroups(ctx context.Context) (map[string]int, error) {
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			File  string `json:"file"`
			Rules []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
				Name      string `json:"name"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get(ctx, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, g := range data.Groups {
		out[g.Name] = len(g.Rules)
		for _, r := range g.Rules {
			if r.Health == "err" {
				return out, fmt.Errorf("rule %s in group %s (%s): %s", r.Name, g.Name, g.File, r.LastError)
			}
		}
	}
	return out, nil
}

// WaitForAlert polls until an alert named name whose labels include match
// is in state ("pending" or "firing") and returns it.
func (p *Prometheus) WaitForAlert(ctx context.Context, name, state string, match map[string]string) (PrometheusAlert, error) {
	var last []PrometheusAlert
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		alerts, err := p.Alerts(ctx)
		if err != nil {
			return false, nil // transient; the deadline reports it
		}
		last = alerts
		for _, a := range alerts {
			if a.Name() == name && a.State == state && labelsMatch(a.Labels, match) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return PrometheusAlert{}, fmt.Errorf("alert %s%v not %s: %w (active: %s)", name, match, state, err, describePromAlerts(last))
	}
	for _, a := range last {
		if a.Name() == name && a.State == state && labelsMatch(a.Labels, match) {
			return a, nil
		}
	}
	return PrometheusAlert{}, errors.New("unreachable")
}

// WaitForAlertGone polls until no alert named name whose labels include
// match is pending or firing.
func (p *Prometheus) WaitForAlertGone(ctx context.Context, name string, match map[string]string) error {
	var last []PrometheusAlert
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		alerts, err := p.Alerts(ctx)
		if err != nil {
			return false, nil
		}
		last = alerts
		for _, a := range alerts {
			if a.Name() == name && labelsMatch(a.Labels, match) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("alert %s%v still active: %w (active: %s)", name, match, err, describePromAlerts(last))
	}
	return nil
}

func describePromAlerts(alerts []PrometheusAlert) string {
	if len(alerts) == 0 {
		return "none"
	}
	var b bytes.Buffer
	for i, a := range alerts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s[%s]", a.Name(), a.State)
	}
	return b.String()
}

func (p *Prometheus) get(ctx context.Context, path string, query url.Values, into any) error {
	u := p.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("prometheus %s: %s: decode: %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("prometheus %s: %s: %s", path, resp.Status, env.Error)
	}
	if err := json.Unmarshal(env.Data, into); err != nil {
		return fmt.Errorf("prometheus %s: decode data: %w", path, err)
	}
	return nil
}

func labelsMatch(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}
