package logfollow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/warden-sre/warden/internal/kubecore"
)

// PodClient lists pods and opens their log streams (a *kubecore.Client).
type PodClient interface {
	ListPods(ctx context.Context, namespace string, o kubecore.ListOptions) (*kubecore.PodList, error)
	PodLogs(ctx context.Context, namespace, name string, o kubecore.LogOptions) (io.ReadCloser, error)
}

// PodOptions configure a Pods follower.
type PodOptions struct {
	Namespace     string
	LabelSelector string
	Container     string
	FromBeginning bool
	PollInterval  time.Duration
	MaxLineBytes  int
}

// Pods follows the logs of every running pod matching a label
// selector: it lists the pods every poll interval, starts a log stream for
// each new pod and stops the streams of pods that are gone. Pods present at
// the first listing are read from now on (unless fromBeginning); pods that
// appear later are read from their start. A broken stream is reopened from
// the time of the last line read (log lines carry the kubelet's timestamps
// for that), so a reconnect neither loses nor repeats lines.
type Pods struct {
	client PodClient
	opts   PodOptions
	sink   Sink
	logger *slog.Logger

	mu       sync.Mutex
	streams  map[string]context.CancelFunc // by pod UID
	listErr  error
	wg       sync.WaitGroup
	retryMin time.Duration
	retryMax time.Duration
}

// NewPods returns a follower of the pods opts selects; Run starts it.
func NewPods(client PodClient, opts PodOptions, sink Sink, logger *slog.Logger) *Pods {
	return &Pods{
		client:   client,
		opts:     opts,
		sink:     sink,
		logger:   logger,
		streams:  map[string]context.CancelFunc{},
		retryMin: time.Second,
		retryMax: 30 * time.Second,
	}
}

// Err is the error of the last pod listing, nil when it succeeded.
func (p *Pods) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listErr
}

// Run lists pods and follows their logs until ctx ends.
func (p *Pods) Run(ctx context.Context) {
	defer p.wg.Wait()
	initial := true
	t := time.NewTicker(p.opts.PollInterval)
	defer t.Stop()
	for {
		p.reconcile(ctx, initial)
		initial = false
		select {
		case <-ctx.Done():
			p.mu.Lock()
			for uid, cancel := range p.streams {
				cancel()
				delete(p.streams, uid)
			}
			p.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

func (p *Pods) reconcile(ctx context.Context, initial bool) {
	list, err := p.client.ListPods(ctx, p.opts.Namespace, kubecore.ListOptions{LabelSelector: p.opts.LabelSelector})
	if err != nil {
		if ctx.Err() == nil {
			p.logger.Warn("cannot list pods", "namespace", p.opts.Namespace, "label_selector", p.opts.LabelSelector, "err", err)
		}
		p.mu.Lock()
		p.listErr = fmt.Errorf("list pods in %s (%s): %w", p.opts.Namespace, p.opts.LabelSelector, err)
		p.mu.Unlock()
		return
	}
	running := map[string]*kubecore.Pod{}
	for i := range list.Items {
		pod := &list.Items[i]
		if pod.Status.Phase == kubecore.PodRunning && pod.Metadata.DeletionTimestamp == nil && len(pod.Spec.Containers) > 0 {
			running[pod.Metadata.UID] = pod
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listErr = nil
	for uid, cancel := range p.streams {
		if _, ok := running[uid]; !ok {
			cancel()
			delete(p.streams, uid)
		}
	}
	for uid, pod := range running {
		if _, ok := p.streams[uid]; ok {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		p.streams[uid] = cancel
		fromNow := initial && !p.opts.FromBeginning
		p.wg.Go(func() { p.follow(sctx, pod, fromNow) })
	}
}

// follow reads one pod's log until ctx ends, reopening the stream when it
// breaks (container restart, API server restart, network).
func (p *Pods) follow(ctx context.Context, pod *kubecore.Pod, fromNow bool) {
	container := p.opts.Container
	if container == "" {
		container = pod.Spec.Containers[0].Name
	}
	logger := p.logger.With("pod", pod.Metadata.Namespace+"/"+pod.Metadata.Name, "container", container)
	logger.Debug("following pod log")
	ts := &timestampedSink{sink: p.sink}
	split := Splitter{max: p.opts.MaxLineBytes + len(time.RFC3339Nano) + 1}
	buf := make([]byte, 32<<10)
	retry := p.retryMin
	for ctx.Err() == nil {
		o := kubecore.LogOptions{Container: container, Follow: true, Timestamps: true}
		switch {
		case !ts.last.IsZero():
			// The API takes SinceTime with second precision; say so here.
			o.SinceTime = ts.last.Truncate(time.Second)
			ts.resumed = true
		case fromNow:
			zero := int64(0)
			o.TailLines = &zero
		}
		rc, err := p.client.PodLogs(ctx, pod.Metadata.Namespace, pod.Metadata.Name, o)
		if err == nil {
			for {
				n, rerr := rc.Read(buf)
				if n > 0 {
					retry = p.retryMin
					split.Write(buf[:n], ts)
				}
				if rerr != nil {
					err = rerr
					break
				}
			}
			_ = rc.Close()
			// A line cut by the break is sent again whole after the
			// reconnect (SinceTime covers it); drop the fragment.
			split.reset()
			if ts.last.IsZero() {
				// Nothing read: resume from now rather than from the start.
				ts.last = time.Now()
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, io.EOF) {
			logger.Debug("pod log stream ended", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, p.retryMax)
	}
}

// timestampedSink strips the kubelet's timestamp from each line, remembers
// the latest, and after a reconnect skips lines not newer than it (SinceTime
// has second precision, so the first second is sent again).
type timestampedSink struct {
	sink    Sink
	last    time.Time
	resumed bool
}

func (s *timestampedSink) Line(b []byte) {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		s.sink.Line(b)
		return
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[:sp]))
	if err != nil {
		s.sink.Line(b)
		return
	}
	if s.resumed && !t.After(s.last) {
		return
	}
	s.resumed = false
	s.last = t
	s.sink.Line(b[sp+1:])
}

func (s *timestampedSink) TooLong() { s.sink.TooLong() }
