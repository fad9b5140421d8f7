package report

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// maxChartSeries bounds the lines of one chart; a report is read, and
// more lines than colours cannot be told apart.
const maxChartSeries = 10

// chartSVG draws a chart result as an SVG element (no XML prolog), to be
// placed inline in HTML. Series names are label values: vgsvg escapes
// every text it writes. It returns "" when no series has a finite point.
func chartSVG(r Result) (string, error) {
	p, err := chartPlot(r)
	if err != nil || p == nil {
		return "", err
	}
	c := vgsvg.New(18*vg.Centimeter, 8*vg.Centimeter)
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return "", fmt.Errorf("chart %s: %w", r.Title, err)
	}
	out := buf.Bytes()
	if i := bytes.Index(out, []byte("<svg")); i >= 0 {
		out = out[i:]
	}
	// Browsers without Liberation Sans (the metrics plot measured text
	// with) fall back to a sans-serif of about the same width.
	return strings.ReplaceAll(string(out), "font-family:Liberation Sans;", "font-family:'Liberation Sans',Arial,Helvetica,sans-serif;"), nil
}

// chartPlot lays out the chart; nil when no series has a finite point.
func chartPlot(r Result) (*plot.Plot, error) {
	p := plot.New()
	// Sans-serif like the page around the chart (plot's default is serif).
	for _, f := range []*font.Font{&p.X.Tick.Label.Font, &p.Y.Tick.Label.Font, &p.Legend.TextStyle.Font} {
		f.Variant = "Sans"
	}
	p.X.Tick.Marker = timeTicks{}
	p.Y.Tick.Marker = unitTicks{unit: r.Unit}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	lines := 0
	for _, s := range r.Series {
		if lines == maxChartSeries {
			break
		}
		xys := make(plotter.XYs, 0, len(s.Points))
		for _, pt := range s.Points {
			if math.IsNaN(pt.V) || math.IsInf(pt.V, 0) {
				continue
			}
			xys = append(xys, plotter.XY{X: float64(pt.T.Unix()), Y: pt.V})
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", r.Title, err)
		}
		l.Color = plotutil.Color(lines)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
		lines++
	}
	if lines == 0 {
		return nil, nil
	}
	// The Y axis starts at 0 for non-negative data, so that growth is not
	// exaggerated.
	if p.Y.Min > 0 {
		p.Y.Min = 0
	}
	if p.Y.Max == p.Y.Min {
		p.Y.Max = p.Y.Min + 1
	}
	// Headroom for the legend in the top left corner.
	p.Y.Max += (p.Y.Max - p.Y.Min) * 0.08 * float64(lines+1)
	return p, nil
}

// unitTicks places ticks as plot.DefaultTicks does and labels them in the
// chart's unit.
type unitTicks struct{ unit Unit }

func (t unitTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = t.unit.Format(ticks[i].Value)
		}
	}
	return ticks
}

// timeTicks places time ticks on round hours or days (UTC), which
// plot.TimeTicks does not: its ticks fall wherever the numbers are round.
type timeTicks struct{}

func (timeTicks) Ticks(min, max float64) []plot.Tick {
	span := time.Duration(max-min) * time.Second
	step, format := 24*time.Hour, "Jan 02"
	switch {
	case span <= 2*24*time.Hour:
		step, format = 4*time.Hour, "Jan 02\n15:04"
	case span > 10*24*time.Hour:
		step = 5 * 24 * time.Hour
	}
	t := time.Unix(int64(math.Ceil(min)), 0).UTC().Truncate(step)
	if float64(t.Unix()) < min {
		t = t.Add(step)
	}
	var ticks []plot.Tick
	for ; float64(t.Unix()) <= max; t = t.Add(step) {
		ticks = append(ticks, plot.Tick{Value: float64(t.Unix()), Label: t.Format(format)})
	}
	return ticks
}
