package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// The accuracy chart is plain SVG written here: no charting library and no
// browser, so `kiln models accuracy P --svg FILE` works on an air-gapped box
// and the file opens anywhere. Geometry of the drawing area, in SVG units.
const (
	svgWidth, svgHeight = 900, 460
	plotLeft, plotRight = 70, 690 // the legend sits right of the plot
	plotTop, plotBottom = 50, 400
)

// palette is one colour per model (cycled), readable on white.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"}

// accuracySVG draws each model's cumulative metric over label-arrival time:
// live stretches solid, standby stretches dashed, a vertical marker at each
// promotion and rollback, axis ticks and a legend. With no points it is an
// empty chart that says so.
func accuracySVG(a api.Accuracy) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="28" font-size="16">%s</text>
`, svgWidth, svgHeight, svgWidth, svgHeight, plotLeft, esc(a.Pipeline+": "+a.Metric+" on labelled feedback (cumulative, by label arrival)"))
	fmt.Fprintf(&b, `<rect class="plot" x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>
`, plotLeft, plotTop, plotRight-plotLeft, plotBottom-plotTop)

	points := 0
	var tmin, tmax time.Time
	ymax := 0.0
	widen := func(t time.Time) {
		if tmin.IsZero() || t.Before(tmin) {
			tmin = t
		}
		if t.After(tmax) {
			tmax = t
		}
	}
	for _, m := range a.Models {
		for _, p := range m.Points {
			if p.Cumulative == nil {
				continue
			}
			points++
			widen(p.Time)
			ymax = max(ymax, *p.Cumulative)
		}
	}
	if points == 0 {
		fmt.Fprintf(&b, `<text class="empty" x="%d" y="%d" text-anchor="middle" font-size="16" fill="#666">no labelled feedback yet</text>
</svg>
`, (plotLeft+plotRight)/2, (plotTop+plotBottom)/2)
		return b.Bytes()
	}
	for _, d := range a.Deployments {
		widen(d.Created)
	}
	if !tmax.After(tmin) {
		tmin, tmax = tmin.Add(-30*time.Minute), tmax.Add(30*time.Minute)
	}
	// A little room each side, so a marker or point at the edge stays clear of the frame.
	pad := tmax.Sub(tmin) / 30
	tmin, tmax = tmin.Add(-pad), tmax.Add(pad)
	top := 1.0 // accuracy and macro F1 live in [0, 1]
	if a.Metric == "mae" || a.Metric == "rmse" {
		top = niceCeil(ymax)
	}
	x := func(t time.Time) float64 {
		return plotLeft + float64(t.Sub(tmin))/float64(tmax.Sub(tmin))*(plotRight-plotLeft)
	}
	y := func(v float64) float64 { return plotBottom - v/top*(plotBottom-plotTop) }

	// Axes: five intervals each way, with grid lines.
	for i := 0; i <= 5; i++ {
		v := top * float64(i) / 5
		fmt.Fprintf(&b, `<g class="ytick"><line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text></g>
`, plotLeft, plotRight, y(v), y(v), plotLeft-6, y(v), esc(fmt.Sprintf("%.3g", v)))
		t := tmin.Add(time.Duration(float64(tmax.Sub(tmin)) * float64(i) / 5))
		fmt.Fprintf(&b, `<g class="xtick"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#444"/><text x="%.1f" y="%d" text-anchor="middle">%s</text></g>
`, x(t), x(t), plotBottom, plotBottom+5, x(t), plotBottom+18, esc(tickLabel(t, tmax.Sub(tmin))))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">label arrival (UTC)</text>
<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>
`, (plotLeft+plotRight)/2, plotBottom+40, (plotTop+plotBottom)/2, esc(a.Metric))

	// Promotions and rollbacks.
	for _, d := range a.Deployments {
		kind, colour, dash, label := "promotion", "#888", "", "promoted "+d.Model
		if d.Rollback {
			kind, colour, dash, label = "rollback", "#d00", ` stroke-dasharray="2 3"`, "rollback to "+d.Model
		}
		fmt.Fprintf(&b, `<g class="marker" data-kind="%s" data-model="%s"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"%s/><text transform="translate(%.1f %d) rotate(-90)" text-anchor="end" font-size="10" fill="%s">%s</text></g>
`, kind, esc(d.Model), x(d.Created), x(d.Created), plotTop, plotBottom, colour, dash, x(d.Created)+10, plotTop+4, colour, esc(label))
	}

	// One polyline per stretch of a model in one role; a stretch starts at
	// the previous stretch's last point, so the line stays unbroken.
	for i, m := range a.Models {
		colour := palette[i%len(palette)]
		var seg []string
		role := ""
		flush := func() {
			if len(seg) == 0 {
				return
			}
			dash := ""
			if role != "live" {
				dash = ` stroke-dasharray="6 4"`
			}
			fmt.Fprintf(&b, `<polyline class="series" data-model="%s" data-role="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"/>
`, esc(m.Model), esc(role), colour, dash, joinPoints(seg))
		}
		last := ""
		for _, p := range m.Points {
			if p.Cumulative == nil {
				continue
			}
			xy := fmt.Sprintf("%.1f,%.1f", x(p.Time), y(*p.Cumulative))
			if p.Role != role && len(seg) > 0 {
				flush()
				seg = []string{last}
			}
			role = p.Role
			seg = append(seg, xy)
			last = xy
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s</title></circle>
`, x(p.Time), y(*p.Cumulative), colour, esc(fmt.Sprintf("%s %s %s: %.4g on %s (%s)", m.Model, p.Role, p.Feedback, *p.Cumulative, plural(p.Labels, "label"), p.Time.UTC().Format(time.RFC3339))))
		}
		flush()
	}

	// Legend: models, then what the line styles mean.
	ly := plotTop + 6
	for i, m := range a.Models {
		now := ""
		switch m.Model {
		case a.Live:
			now = " (live)"
		case a.Standby:
			now = " (standby)"
		}
		fmt.Fprintf(&b, `<g class="legend"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d" dominant-baseline="middle">%s</text></g>
`, plotRight+20, plotRight+44, ly, ly, palette[i%len(palette)], plotRight+50, ly, esc(m.Model+now))
		ly += 18
	}
	ly += 8
	fmt.Fprintf(&b, `<g class="legend-key"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#444" stroke-width="2"/><text x="%d" y="%d" dominant-baseline="middle">scored as live</text>
<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#444" stroke-width="2" stroke-dasharray="6 4"/><text x="%d" y="%d" dominant-baseline="middle">scored as standby</text></g>
</svg>
`, plotRight+20, plotRight+44, ly, ly, plotRight+50, ly, plotRight+20, plotRight+44, ly+18, ly+18, plotRight+50, ly+18)
	return b.Bytes()
}

func joinPoints(pts []string) string {
	var b bytes.Buffer
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p)
	}
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0), so
// an error metric's axis ends on a round number.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// tickLabel shows as much of t as the span needs.
func tickLabel(t time.Time, span time.Duration) string {
	t = t.UTC()
	switch {
	case span > 72*time.Hour:
		return t.Format("Jan 02")
	case span > 2*time.Hour:
		return t.Format("Jan 02 15:04")
	default:
		return t.Format("15:04:05")
	}
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to memory: cannot fail
	return b.String()
}

// writeFileAtomic replaces path with data crash-safely: a temp file beside
// it, fsync, rename, fsync the folder. A reader sees the old file or the new
// one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // best effort; a no-op (ENOENT) after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644) // a chart is for sharing
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
