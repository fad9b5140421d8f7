// Package reload re-reads a binary's configuration on SIGHUP and on
// POST /-/reload, one reload at a time, and reports the outcome as the
// <namespace>_config_last_reload_successful and
// <namespace>_config_last_reload_success_timestamp_seconds gauges.
package reload

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Options name the gauges and what is reloaded.
type Options struct {
	// Namespace prefixes the gauges' names, e.g. "warden_exporter".
	Namespace string
	// Subject is what a reload re-reads ("configuration", "policy"), as
	// named in the HTTP answers.
	Subject string
	// SuccessfulHelp and TimestampHelp are the gauges' help texts.
	SuccessfulHelp string
	TimestampHelp  string
	// ReasonInLog leaves the reason of a failed reload out of the HTTP
	// answer: the reload function logs it. For binaries whose errors name
	// files and their contents that a caller of /-/reload need not see.
	ReasonInLog bool
}

// Reloader runs a reload function at most once at a time and records its
// outcome. It is a prometheus.Collector of its two gauges.
type Reloader struct {
	subject     string
	reasonInLog bool
	apply       func() error
	mu          sync.Mutex
	successful  prometheus.Gauge
	timestamp   prometheus.Gauge
}

// New returns a Reloader that calls apply to re-read and put in force the
// configuration; apply leaves the previous configuration in force when it
// returns an error. The gauges read 0 until Loaded or a successful Reload.
func New(opts Options, apply func() error) *Reloader {
	return &Reloader{
		subject:     opts.Subject,
		reasonInLog: opts.ReasonInLog,
		apply:       apply,
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: opts.Namespace + "_config_last_reload_successful",
			Help: opts.SuccessfulHelp,
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: opts.Namespace + "_config_last_reload_success_timestamp_seconds",
			Help: opts.TimestampHelp,
		}),
	}
}

// Loaded records a successful load made outside Reload (the one at start).
func (r *Reloader) Loaded() {
	r.successful.Set(1)
	r.timestamp.SetToCurrentTime()
}

// Reload calls the reload function and records its outcome; concurrent
// calls run one after the other.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.apply(); err != nil {
		r.successful.Set(0)
		return err
	}
	r.Loaded()
	return nil
}

// HandleSIGHUP reloads on every SIGHUP until ctx ends. The signal is
// caught from the moment HandleSIGHUP returns. It stays caught afterwards,
// so that a late SIGHUP does not terminate the process while it shuts
// down.
func (r *Reloader) HandleSIGHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-hup:
				_ = r.Reload()
			case <-ctx.Done():
				return
			}
		}
	}()
}

// Handler serves /-/reload: POST (or PUT) reloads and answers 200, or 500
// with the reason when the previous configuration stays in force; other
// methods get 405.
func (r *Reloader) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost && req.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "use POST to reload the "+r.subject, http.StatusMethodNotAllowed)
			return
		}
		if err := r.Reload(); err != nil {
			msg := fmt.Sprintf("reload failed, previous %s kept: %v", r.subject, err)
			if r.reasonInLog {
				msg = fmt.Sprintf("reload failed, previous %s kept; the reason is in the log", r.subject)
			}
			http.Error(w, msg, http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Reloaded.")
	})
}

// Describe implements prometheus.Collector.
func (r *Reloader) Describe(ch chan<- *prometheus.Desc) {
	r.successful.Describe(ch)
	r.timestamp.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Reloader) Collect(ch chan<- prometheus.Metric) {
	r.successful.Collect(ch)
	r.timestamp.Collect(ch)
}
