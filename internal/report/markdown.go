package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Markdown writes the report as Markdown: a table per check (charts as a
// table of first, last, lowest and highest value per series) and the PromQL
// behind each number.
func Markdown(w io.Writer, r *Report) error {
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "# %s\n\n", mdEscape(r.Title))
	fmt.Fprintf(b, "Report time: %s. Window: the last %s (from %s).\n\n",
		r.At.UTC().Format(time.RFC3339), formatWindow(r.Window), r.At.Add(-r.Window).UTC().Format(time.RFC3339))
	for _, s := range r.Sections {
		fmt.Fprintf(b, "## %s\n\n", mdEscape(s.Title))
		if s.Intro != "" {
			fmt.Fprintf(b, "%s\n\n", mdEscape(s.Intro))
		}
		for i := 0; i < len(s.Results); i++ {
			// Consecutive numbers share one table.
			if s.Results[i].Type == Stat {
				j := i
				for j < len(s.Results) && s.Results[j].Type == Stat {
					j++
				}
				mdStats(b, s.Results[i:j])
				i = j - 1
				continue
			}
			mdCheck(b, s.Results[i])
		}
	}
	return b.Flush()
}

func mdStats(b *bufio.Writer, rs []Result) {
	b.WriteString("| measure | value |\n|---|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(b, "| %s | %s |\n", mdEscape(r.Title), mdEscape(statText(r)))
	}
	b.WriteString("\n")
	for _, r := range rs {
		fmt.Fprintf(b, "- %s: %s\n", mdEscape(r.Title), mdCode(r.Query))
	}
	b.WriteString("\n")
}

func statText(r Result) string {
	if st := r.Status(); st != "" {
		return st
	}
	return r.Unit.Format(r.Value)
}

func mdCheck(b *bufio.Writer, r Result) {
	fmt.Fprintf(b, "### %s\n\n", mdEscape(r.Title))
	if r.Note != "" {
		fmt.Fprintf(b, "%s\n\n", mdEscape(r.Note))
	}
	if st := r.Status(); st != "" {
		fmt.Fprintf(b, "%s\n\n", mdEscape(st))
	} else {
		switch r.Type {
		case Table:
			mdTable(b, r)
		case Chart:
			mdChart(b, r)
		}
	}
	b.WriteString("PromQL:\n\n")
	for i, q := range r.Queries() {
		if r.Type == Table {
			fmt.Fprintf(b, "- %s: %s\n", mdEscape(r.Columns[i].Header), mdCode(q))
		} else {
			fmt.Fprintf(b, "- %s\n", mdCode(q))
		}
	}
	b.WriteString("\n")
}

func mdTable(b *bufio.Writer, r Result) {
	var head, align []string
	for _, l := range r.Labels {
		head = append(head, mdEscape(l))
		align = append(align, "---")
	}
	for _, c := range r.Columns {
		head = append(head, mdEscape(c.Header))
		align = append(align, "---:")
	}
	fmt.Fprintf(b, "| %s |\n|%s|\n", strings.Join(head, " | "), strings.Join(align, "|"))
	for _, row := range r.Rows {
		var cells []string
		for _, l := range row.Labels {
			cells = append(cells, mdEscape(l))
		}
		for i, c := range row.Cells {
			cells = append(cells, mdEscape(cellText(r.Columns[i].Unit, c)))
		}
		fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
	}
	b.WriteString("\n")
	for i, m := range r.ColumnMissing {
		if m != "" {
			fmt.Fprintf(b, "%s: no data (%s)\n\n", mdEscape(r.Columns[i].Header), mdEscape(m))
		}
	}
}

func cellText(u Unit, c Cell) string {
	if !c.OK {
		return "–"
	}
	return u.Format(c.Value)
}

func mdChart(b *bufio.Writer, r Result) {
	b.WriteString("(Chart in the HTML report.)\n\n| series | first | last | lowest | highest |\n|---|---:|---:|---:|---:|\n")
	for _, s := range r.Series {
		st := summarize(s)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", mdEscape(s.Name),
			mdEscape(r.Unit.Format(st.first)), mdEscape(r.Unit.Format(st.last)),
			mdEscape(r.Unit.Format(st.min)), mdEscape(r.Unit.Format(st.max)))
	}
	b.WriteString("\n")
}

type seriesSummary struct{ first, last, min, max float64 }

func summarize(s Series) seriesSummary {
	if len(s.Points) == 0 {
		return seriesSummary{math.NaN(), math.NaN(), math.NaN(), math.NaN()}
	}
	st := seriesSummary{first: s.Points[0].V, last: s.Points[len(s.Points)-1].V, min: math.Inf(1), max: math.Inf(-1)}
	for _, p := range s.Points {
		st.min = math.Min(st.min, p.V)
		st.max = math.Max(st.max, p.V)
	}
	return st
}

// mdEscape makes untrusted text (label values) plain text in Markdown: no
// markup, no HTML, no table cell breaks.
func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\n', '\r', '\t':
			b.WriteByte(' ')
		case '\\', '`', '*', '_', '[', ']', '<', '>', '|', '&':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdCode writes a query as a code span, outside tables only (a pipe would
// end a table cell even inside a code span).
func mdCode(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	fence := "`"
	for strings.Contains(q, fence) {
		fence += "`"
	}
	return fence + q + fence
}
