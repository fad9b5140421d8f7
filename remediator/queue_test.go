package remediator

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"
)

// TestBackloggedQueueRefuses: while the jobs the workers take have waited
// more than half of defaults.max_delay, the webhook answers 503 instead of
// accepting alerts that would wait long enough to be dropped as stale;
// an empty queue accepts whatever the last job waited.
func TestBackloggedQueueRefuses(t *testing.T) {
	// Not started: nothing takes the queued jobs, so the test sets the
	// wait the workers would have seen.
	r, err := New(Options{
		Kube: fake.NewClientset(), Executor: &recordingExecutor{}, Registerer: prometheus.NewRegistry(),
		Auth: Auth{BearerToken: testToken},
	}, mustPolicy(t, "defaults: {max_delay: 1m}\n"+declinePolicy))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.WebhookHandler())
	defer srv.Close()
	postOne := func(fp string) (int, string) {
		code, body, _ := post(t, srv.URL, payload(firing("HighMemoryUsage", fp, time.Now(), nil)), nil)
		return code, body
	}
	steps := []struct {
		name     string
		lastWait time.Duration
		drain    bool
		want     int
		body     string
	}{
		{"short waits accept", 10 * time.Second, false, 202, "queued"},
		{"waits over half of max_delay refuse", 31 * time.Second, false, 503, "queued alerts wait 31s before they are handled (defaults.max_delay 1m0s)"},
		{"an empty queue accepts", 31 * time.Second, true, 202, "queued"},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r.lastWait.Store(int64(s.lastWait))
			if s.drain {
				for len(r.queue) > 0 {
					<-r.queue
				}
			}
			code, body := postOne(strings.Repeat("a", i+1))
			if code != s.want || !strings.Contains(body, s.body) {
				t.Fatalf("%d %q, want %d with %q", code, body, s.want, s.body)
			}
		})
	}
}
