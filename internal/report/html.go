package report

import (
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// HTML writes the report as one self-contained HTML file: inline CSS,
// charts as inline SVG, no scripts and no external assets.
func HTML(w io.Writer, r *Report) error {
	page := htmlPage{
		Title:  r.Title,
		At:     r.At.UTC().Format(time.RFC3339),
		From:   r.At.Add(-r.Window).UTC().Format(time.RFC3339),
		Window: formatWindow(r.Window),
	}
	for si, s := range r.Sections {
		hs := htmlSection{ID: fmt.Sprintf("s%d", si+1), Title: s.Title, Intro: s.Intro}
		for i := 0; i < len(s.Results); i++ {
			res := s.Results[i]
			if res.Type == Stat {
				// Consecutive numbers share one table.
				block := htmlBlock{Stats: true}
				for ; i < len(s.Results) && s.Results[i].Type == Stat; i++ {
					st := s.Results[i]
					block.Rows = append(block.Rows, htmlStat{Title: st.Title, Value: statText(st), Status: st.Status() != "", Query: oneLine(st.Query)})
				}
				i--
				hs.Blocks = append(hs.Blocks, block)
				continue
			}
			block := htmlBlock{Title: res.Title, Note: res.Note, Status: res.Status()}
			for qi, q := range res.Queries() {
				hq := htmlQuery{Query: oneLine(q)}
				if res.Type == Table {
					hq.Name = res.Columns[qi].Header
				}
				block.Queries = append(block.Queries, hq)
			}
			if block.Status == "" {
				switch res.Type {
				case Table:
					block.Header = append(append([]string(nil), res.Labels...), columnHeaders(res.Columns)...)
					block.Labels = len(res.Labels)
					for _, row := range res.Rows {
						cells := append([]string(nil), row.Labels...)
						for ci, c := range row.Cells {
							cells = append(cells, cellText(res.Columns[ci].Unit, c))
						}
						block.Table = append(block.Table, cells)
					}
					for ci, m := range res.ColumnMissing {
						if m != "" {
							block.Notes = append(block.Notes, res.Columns[ci].Header+": no data ("+m+")")
						}
					}
				case Chart:
					svg, err := chartSVG(res)
					if err != nil {
						return err
					}
					if svg == "" {
						block.Status = "no finite values to draw"
						break
					}
					// chartSVG's output is generated here and escapes every
					// text it contains.
					block.SVG = template.HTML(svg)
					for _, s := range res.Series {
						st := summarize(s)
						block.Table = append(block.Table, []string{s.Name, res.Unit.Format(st.first), res.Unit.Format(st.last), res.Unit.Format(st.min), res.Unit.Format(st.max)})
					}
					block.Header = []string{"series", "first", "last", "lowest", "highest"}
					block.Labels = 1
				}
			}
			hs.Blocks = append(hs.Blocks, block)
		}
		page.Sections = append(page.Sections, hs)
	}
	return htmlTemplate.Execute(w, page)
}

func columnHeaders(cols []Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Header
	}
	return out
}

func oneLine(q string) string { return strings.Join(strings.Fields(q), " ") }

type htmlPage struct {
	Title, At, From, Window string
	Sections                []htmlSection
}

type htmlSection struct {
	ID, Title, Intro string
	Blocks           []htmlBlock
}

type htmlBlock struct {
	Stats bool
	Rows  []htmlStat

	Title, Note, Status string
	Header              []string
	Labels              int // leading label columns of Header
	Table               [][]string
	Notes               []string
	SVG                 template.HTML
	Queries             []htmlQuery
}

type htmlStat struct {
	Title, Value, Query string
	Status              bool
}

type htmlQuery struct{ Name, Query string }

var htmlTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} – {{.At}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-bottom: 0.3rem; }
table { border-collapse: collapse; margin: 0.6rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
.status { color: #57606a; font-style: italic; }
.meta, .note { color: #57606a; }
figure { margin: 0.6rem 0; }
figure svg { max-width: 100%; height: auto; }
details { margin: 0.3rem 0 1rem; color: #57606a; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.85em; overflow-wrap: anywhere; }
nav ul { columns: 2; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">Report time {{.At}}; window: the last {{.Window}} (from {{.From}}). Every number is a PromQL query against Prometheus, listed under it.</p>
<nav><ul>{{range .Sections}}<li><a href="#{{.ID}}">{{.Title}}</a></li>{{end}}</ul></nav>
{{range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
{{with .Intro}}<p class="note">{{.}}</p>{{end}}
{{range .Blocks}}{{if .Stats}}
<table class="stats">
<tr><th>measure</th><th>value</th></tr>
{{range .Rows}}<tr><td>{{.Title}}</td>{{if .Status}}<td class="status">{{.Value}}</td>{{else}}<td class="num">{{.Value}}</td>{{end}}</tr>
{{end}}</table>
<details><summary>PromQL</summary><ul>{{range .Rows}}<li>{{.Title}}: <code>{{.Query}}</code></li>{{end}}</ul></details>
{{else}}
<h3>{{.Title}}</h3>
{{with .Note}}<p class="note">{{.}}</p>{{end}}
{{if .Status}}<p class="status">{{.Status}}</p>{{else}}
{{if .SVG}}<figure role="img" aria-label="{{.Title}}">{{.SVG}}</figure>{{end}}
{{if .Header}}{{$labels := .Labels}}<table>
<tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr>
{{range .Table}}<tr>{{range $i, $c := .}}{{if lt $i $labels}}<td>{{$c}}</td>{{else}}<td class="num">{{$c}}</td>{{end}}{{end}}</tr>
{{end}}</table>{{end}}
{{range .Notes}}<p class="status">{{.}}</p>
{{end}}{{end}}
<details><summary>PromQL</summary><ul>{{range .Queries}}<li>{{with .Name}}{{.}}: {{end}}<code>{{.Query}}</code></li>{{end}}</ul></details>
{{end}}{{end}}
</section>
{{end}}
</body>
</html>
`))
