package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"golang.org/x/net/html"
)

// fakeAPI answers instant and range queries from maps; any other query
// returns an empty vector (or matrix), as Prometheus does for a selector
// without series.
type fakeAPI struct {
	instant map[string]model.Value
	ranges  map[string]model.Value
	fail    map[string]error
	asked   []string
	steps   []time.Duration // of the range queries, in order
}

func (f *fakeAPI) Query(_ context.Context, q string, _ time.Time, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	f.asked = append(f.asked, q)
	if err := f.fail[q]; err != nil {
		return nil, nil, nil, err
	}
	if v, ok := f.instant[q]; ok {
		return v, nil, nil, nil
	}
	return model.Vector{}, nil, nil, nil
}

func (f *fakeAPI) QueryRange(_ context.Context, q string, r v1.Range, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	f.asked = append(f.asked, q)
	f.steps = append(f.steps, r.Step)
	if err := f.fail[q]; err != nil {
		return nil, nil, nil, err
	}
	if v, ok := f.ranges[q]; ok {
		return v, nil, nil, nil
	}
	return model.Matrix{}, nil, nil, nil
}

func vec(v float64, labels ...string) model.Vector {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return model.Vector{{Metric: m, Value: model.SampleValue(v)}}
}

func join(vs ...model.Vector) model.Vector {
	var out model.Vector
	for _, v := range vs {
		out = append(out, v...)
	}
	return out
}

// present is the answer to the presence query for a selector.
func present(sel string) (string, model.Value) {
	return fmt.Sprintf("count(last_over_time(%s[1d]))", sel), vec(1)
}

func withPresent(m map[string]model.Value, sels ...string) map[string]model.Value {
	for _, s := range sels {
		q, v := present(s)
		m[q] = v
	}
	return m
}

var at = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func TestRendering(t *testing.T) {
	const requests = `sum(increase(auth_requests_total[24h]))`
	const errors5xx = `sum(increase(auth_requests_total{status=~"5.."}[24h]))`
	tests := []struct {
		name  string
		check Check
		api   *fakeAPI
		// wantMD and wantHTML must all occur in the output, notMD and
		// notHTML must not.
		wantMD, wantHTML, notMD, notHTML []string
	}{
		{
			name:     "a number",
			check:    Check{Type: Stat, Title: "Requests", Query: requests, Unit: Count},
			api:      &fakeAPI{instant: map[string]model.Value{requests: vec(12345.4)}},
			wantMD:   []string{"| Requests | 12,345 |", "- Requests: `" + requests + "`"},
			wantHTML: []string{`<td class="num">12,345</td>`, `<code>sum(increase(auth_requests_total[24h]))</code>`},
		},
		{
			name:     "a real zero is a number",
			check:    Check{Type: Stat, Title: "Requests", Query: requests, Unit: Count},
			api:      &fakeAPI{instant: map[string]model.Value{requests: vec(0)}},
			wantMD:   []string{"| Requests | 0 |"},
			notMD:    []string{"no data"},
			wantHTML: []string{`<td class="num">0</td>`},
		},
		{
			name:     "a metric without series is missing, not zero",
			check:    Check{Type: Stat, Title: "Requests", Query: requests, Unit: Count},
			api:      &fakeAPI{instant: map[string]model.Value{}},
			wantMD:   []string{"| Requests | no data (metric auth\\_requests\\_total not found) |"},
			notMD:    []string{"| Requests | 0 |"},
			wantHTML: []string{`<td class="status">no data (metric auth_requests_total not found)</td>`},
		},
		{
			name:   "a label filter that matches nothing is none, saying which selector",
			check:  Check{Type: Stat, Title: "Errors", Query: errors5xx, Unit: Count, Empty: "No 5xx answer."},
			api:    &fakeAPI{instant: withPresent(map[string]model.Value{}, "auth_requests_total")},
			wantMD: []string{`| Errors | No 5xx answer. (no series match auth\_requests\_total{status=~"5.."}) |`},
			notMD:  []string{"no data"},
		},
		{
			name:   "an empty answer with every metric present is the check's none",
			check:  Check{Type: Stat, Title: "Errors", Query: errors5xx, Unit: Count, Empty: "No 5xx answer."},
			api:    &fakeAPI{instant: withPresent(map[string]model.Value{}, "auth_requests_total", `auth_requests_total{status=~"5.."}`)},
			wantMD: []string{"| Errors | No 5xx answer. |"},
		},
		{
			name: "table columns join on labels; a row without a value shows a dash",
			check: Check{Type: Table, Title: "Databases", Labels: []string{"datname"}, Order: ByValueDesc, Columns: []Column{
				{Header: "size", Query: `pg_database_size_bytes`, Unit: Bytes},
				{Header: "forecast", Query: `predict_linear(pg_database_size_bytes[30d], 2592000)`, Unit: Bytes},
			}},
			api: &fakeAPI{instant: map[string]model.Value{
				`pg_database_size_bytes`:                               join(vec(1024, "datname", "small"), vec(3*1024*1024*1024, "datname", "auth")),
				`predict_linear(pg_database_size_bytes[30d], 2592000)`: vec(4*1024*1024*1024, "datname", "auth"),
			}},
			wantMD:   []string{"| datname | size | forecast |", "| auth | 3 GiB | 4 GiB |\n| small | 1 KiB | – |"},
			wantHTML: []string{"<td>auth</td><td class=\"num\">3 GiB</td><td class=\"num\">4 GiB</td>"},
		},
		{
			name: "a metric that only exists once something happened: absent means none",
			check: Check{Type: Table, Title: "Escalations", Labels: []string{"target"}, Columns: []Column{
				{Header: "count", Query: `sum by (target) (increase(warden_remediator_escalations_total[24h])) > 0`, Unit: Count},
			}, Empty: "No escalation.", AbsentMeansNone: true},
			api:    &fakeAPI{instant: map[string]model.Value{}},
			wantMD: []string{"No escalation."},
			notMD:  []string{"no data"},
		},
		{
			name:     "a failed query is reported in place",
			check:    Check{Type: Stat, Title: "Requests", Query: requests, Unit: Count},
			api:      &fakeAPI{fail: map[string]error{requests: errors.New("bad_data: boom")}},
			wantMD:   []string{"query failed: query"},
			wantHTML: []string{"bad_data: boom"},
		},
		{
			name: "label values are text, never markup",
			check: Check{Type: Table, Title: "Sources", Labels: []string{"source"}, Columns: []Column{
				{Header: "failures", Query: `warden_auth_failed_logins_by_source`, Unit: Count},
			}},
			api: &fakeAPI{instant: map[string]model.Value{
				`warden_auth_failed_logins_by_source`: vec(3, "source", "<script>alert(1)</script>|*x*"),
			}},
			wantMD:   []string{`| \<script\>alert(1)\</script\>\|\*x\* | 3 |`},
			notMD:    []string{"<script>"},
			wantHTML: []string{"&lt;script&gt;alert(1)&lt;/script&gt;|*x*"},
			notHTML:  []string{"<script>"},
		},
		{
			name:  "a chart is inline SVG in HTML and a summary table in Markdown",
			check: Check{Type: Chart, Title: "Memory", Query: `max by (target) (redis_memory_used_bytes)`, Unit: Bytes, Labels: []string{"target"}, Step: time.Hour},
			api: &fakeAPI{ranges: map[string]model.Value{
				`max by (target) (redis_memory_used_bytes)`: model.Matrix{{
					Metric: model.Metric{"target": "<b>cache</b>"},
					Values: []model.SamplePair{
						{Timestamp: model.TimeFromUnix(at.Add(-2 * time.Hour).Unix()), Value: 1024},
						{Timestamp: model.TimeFromUnix(at.Add(-time.Hour).Unix()), Value: 4096},
						{Timestamp: model.TimeFromUnix(at.Unix()), Value: 2048},
					},
				}},
			}},
			wantMD:   []string{"| \\<b\\>cache\\</b\\> | 1 KiB | 2 KiB | 1 KiB | 4 KiB |"},
			wantHTML: []string{`<figure role="img" aria-label="Memory"><svg`, "&lt;b&gt;cache&lt;/b&gt;", "</svg>\n</figure>"},
			notHTML:  []string{"<b>cache", "<?xml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := Definition{Kind: Daily, Title: "Test report", Window: 24 * time.Hour, Sections: []Section{{Title: "Section", Checks: []Check{tt.check}}}}
			rep, _ := Run(context.Background(), tt.api, def, at, Options{})
			var md, h bytes.Buffer
			if err := Markdown(&md, rep); err != nil {
				t.Fatal(err)
			}
			if err := HTML(&h, rep); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.wantMD {
				if !strings.Contains(md.String(), s) {
					t.Errorf("Markdown lacks %q:\n%s", s, md.String())
				}
			}
			for _, s := range tt.notMD {
				if strings.Contains(md.String(), s) {
					t.Errorf("Markdown contains %q:\n%s", s, md.String())
				}
			}
			for _, s := range tt.wantHTML {
				if !strings.Contains(h.String(), s) {
					t.Errorf("HTML lacks %q:\n%s", s, h.String())
				}
			}
			for _, s := range tt.notHTML {
				if strings.Contains(h.String(), s) {
					t.Errorf("HTML contains %q", s)
				}
			}
			checkHTMLBalanced(t, h.String())
		})
	}
}

func TestAbsentMeansNoneAsksNoPresenceQuery(t *testing.T) {
	api := &fakeAPI{}
	def := Definition{Kind: Daily, Window: 24 * time.Hour, Sections: []Section{{Checks: []Check{alertsCheck("Alerts", "24h", "")}}}}
	rep, err := Run(context.Background(), api, def, at, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Sections[0].Results[0]; !got.Empty || got.Missing != "" {
		t.Fatalf("result = %+v; want empty, not missing", got)
	}
	if len(api.asked) != 1 {
		t.Fatalf("asked %q; want only the table's first column", api.asked)
	}
}

func TestChartStepOverridesEachChartsStep(t *testing.T) {
	def := Definition{Kind: Daily, Window: 24 * time.Hour, Sections: []Section{{Checks: []Check{
		{Type: Chart, Title: "Requests", Query: `sum(rate(http_requests_total[5m]))`, Step: 15 * time.Minute},
	}}}}
	for _, tt := range []struct {
		chartStep, want time.Duration
	}{
		{0, 15 * time.Minute},
		{30 * time.Second, 30 * time.Second},
	} {
		api := &fakeAPI{}
		rep, err := Run(context.Background(), api, def, at, Options{ChartStep: tt.chartStep})
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.Sections[0].Results[0].Step; got != tt.want {
			t.Errorf("ChartStep %v: result step %v, want %v", tt.chartStep, got, tt.want)
		}
		if len(api.steps) != 1 || api.steps[0] != tt.want {
			t.Errorf("ChartStep %v: range queries asked with steps %v, want [%v]", tt.chartStep, api.steps, tt.want)
		}
	}
}

func TestUnreachablePrometheusStopsAfterTheFirstQuery(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantRuns int
	}{
		{"connection refused", errors.New("dial tcp 127.0.0.1:9: connect: connection refused"), 1},
		{"authentication refused", &v1.Error{Type: v1.ErrClient, Msg: "client error: 401"}, 1},
		{"a query's own error", &v1.Error{Type: v1.ErrBadData, Msg: "parse error"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &fakeAPI{fail: map[string]error{`pg_up`: tt.err, `redis_up`: tt.err}}
			def := Definition{Kind: Daily, Window: 24 * time.Hour, Sections: []Section{{Checks: []Check{
				{Type: Stat, Title: "PostgreSQL", Query: `pg_up`},
				{Type: Stat, Title: "Redis", Query: `redis_up`},
			}}}}
			rep, err := Run(context.Background(), api, def, at, Options{})
			if err == nil {
				t.Fatal("Run returned no error")
			}
			if len(api.asked) != tt.wantRuns {
				t.Errorf("asked %q; want %d queries", api.asked, tt.wantRuns)
			}
			if failed, total := rep.Failed(); failed != 2 || total != 2 {
				t.Errorf("Failed() = %d, %d; want 2, 2", failed, total)
			}
		})
	}
}

func TestStatWithSeveralSeriesIsAnError(t *testing.T) {
	api := &fakeAPI{instant: map[string]model.Value{`pg_up`: join(vec(1, "target", "a"), vec(0, "target", "b"))}}
	def := Definition{Kind: Daily, Window: 24 * time.Hour, Sections: []Section{{Checks: []Check{{Type: Stat, Title: "PostgreSQL", Query: `pg_up`}}}}}
	rep, err := Run(context.Background(), api, def, at, Options{})
	if err == nil || !strings.Contains(rep.Sections[0].Results[0].Err, "returned 2 series") {
		t.Fatalf("Run error = %v, result %+v; want 'returned 2 series'", err, rep.Sections[0].Results[0])
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		unit Unit
		v    float64
		want string
	}{
		{Count, 0, "0"},
		{Count, 0.25, "0.25"},
		{Count, 2.5, "3"},
		{Count, 1234567.4, "1,234,567"},
		{Count, -1500, "-1,500"},
		{Bytes, 512, "512 B"},
		{Bytes, 1536, "1.5 KiB"},
		{Bytes, 5 * 1024 * 1024 * 1024, "5 GiB"},
		{Ratio, 0.99512, "99.51 %"},
		{Seconds, 0.0123, "12.3 ms"},
		{Seconds, 42, "42 s"},
		{Seconds, 600, "10 min"},
		{Days, 12.345, "12.3 days"},
		{PerSecond, 3.25, "3.25/s"},
		{UpDown, 1, "up"},
		{UpDown, 0, "DOWN"},
		{Bool, 0, "NO"},
		{Cores, 0.1234, "0.123 cores"},
	}
	for _, tt := range tests {
		if got := tt.unit.Format(tt.v); got != tt.want {
			t.Errorf("Unit(%d).Format(%v) = %q; want %q", tt.unit, tt.v, got, tt.want)
		}
	}
}

// voidElements have no end tag in HTML.
var voidElements = map[string]bool{"meta": true, "br": true, "hr": true, "img": true, "input": true, "link": true}

// checkHTMLBalanced parses the document with the HTML tokenizer and fails
// when an element is closed that is not open, or is left open.
func checkHTMLBalanced(t *testing.T, doc string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(doc))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatalf("HTML tokenizer: %v", z.Err())
			}
			if len(stack) > 0 {
				t.Fatalf("HTML leaves %v open", stack)
			}
			if _, err := html.Parse(strings.NewReader(doc)); err != nil {
				t.Fatalf("parse HTML: %v", err)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if !voidElements[string(name)] {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Fatalf("HTML closes </%s> while %v are open", name, stack)
			}
			stack = stack[:len(stack)-1]
		}
	}
}
