// Package chart draws kiln's accuracy timeline as plain SVG: each model's
// metric on labelled feedback over label-arrival time, promotions,
// rollbacks and training runs marked, and optionally the detector's
// statistic in a panel beneath. No charting library and no browser: `kiln
// models accuracy P --svg FILE` writes it to a file that opens anywhere on
// an air-gapped box, and kilnd's dashboard inlines the same drawing in its
// pages. It reads only daemon/api types, so the CLI may link it.
package chart

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Geometry of the drawing area, in SVG units.
const (
	Width, Height       = 900, 460
	PlotLeft, PlotRight = 70, 690 // the legend sits right of the plot
	PlotTop, PlotBottom = 50, 400
	// The detector panel, when drawn, sits below the time axis's label.
	DetTop, DetBottom = 470, 560
	detHeight         = 600
)

// palette is one colour per model (cycled), readable on white.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"}

// Mark is an event drawn as a vertical line across the plot: a training
// run queued, with its trigger.
type Mark struct {
	Time  time.Time
	Kind  string // "retrain"
	Ref   string // the run's ID
	Label string
}

// DetectorPoint is the detector's statistic after one feedback version: the
// largest of its CUSUMs as a fraction of their alarm threshold (1 alarms).
type DetectorPoint struct {
	Time      time.Time
	Statistic float64
	Phase     string // warmup, armed, blind
}

// Options are the parts beyond the series and deployments.
type Options struct {
	// XMLHeader starts the output with an XML declaration, for a file; a
	// chart inlined in HTML goes without.
	XMLHeader bool
	Marks     []Mark
	// Detector, when not nil, adds the detector panel beneath the plot;
	// DetectorNote is its caption's tail (the phase, the warm-up's progress).
	Detector     []DetectorPoint
	DetectorNote string
}

// Accuracy draws each model's cumulative metric over label-arrival time:
// live stretches solid, standby stretches dashed, a vertical marker at each
// promotion, rollback and mark, axis ticks and a legend. With no points it
// is an empty chart that says so.
func Accuracy(a api.Accuracy, o Options) []byte {
	var b bytes.Buffer
	height := Height
	if o.Detector != nil {
		height = detHeight
	}
	if o.XMLHeader {
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="28" font-size="16">%s</text>
`, Width, height, Width, height, PlotLeft, esc(a.Pipeline+": "+a.Metric+" on labelled feedback (cumulative, by label arrival)"))
	fmt.Fprintf(&b, `<rect class="plot" x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>
`, PlotLeft, PlotTop, PlotRight-PlotLeft, PlotBottom-PlotTop)

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
`, (PlotLeft+PlotRight)/2, (PlotTop+PlotBottom)/2)
		return b.Bytes()
	}
	for _, d := range a.Deployments {
		widen(d.Created)
	}
	for _, m := range o.Marks {
		widen(m.Time)
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
		return PlotLeft + float64(t.Sub(tmin))/float64(tmax.Sub(tmin))*(PlotRight-PlotLeft)
	}
	y := func(v float64) float64 { return PlotBottom - v/top*(PlotBottom-PlotTop) }

	// Axes: five intervals each way, with grid lines.
	for i := 0; i <= 5; i++ {
		v := top * float64(i) / 5
		fmt.Fprintf(&b, `<g class="ytick"><line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text></g>
`, PlotLeft, PlotRight, y(v), y(v), PlotLeft-6, y(v), esc(fmt.Sprintf("%.3g", v)))
		t := tmin.Add(time.Duration(float64(tmax.Sub(tmin)) * float64(i) / 5))
		fmt.Fprintf(&b, `<g class="xtick"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#444"/><text x="%.1f" y="%d" text-anchor="middle">%s</text></g>
`, x(t), x(t), PlotBottom, PlotBottom+5, x(t), PlotBottom+18, esc(tickLabel(t, tmax.Sub(tmin))))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">label arrival (UTC)</text>
<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>
`, (PlotLeft+PlotRight)/2, PlotBottom+40, (PlotTop+PlotBottom)/2, esc(a.Metric))

	// Promotions, rollbacks and training runs.
	for _, d := range a.Deployments {
		kind, colour, dash, label := "promotion", "#888", "", "promoted "+d.Model
		if d.Rollback {
			kind, colour, dash, label = "rollback", "#d00", ` stroke-dasharray="2 3"`, "rollback to "+d.Model
		}
		marker(&b, kind, d.Model, label, colour, dash, x(d.Created))
	}
	for _, m := range o.Marks {
		marker(&b, m.Kind, m.Ref, m.Label, "#2a7", ` stroke-dasharray="1 3"`, x(m.Time))
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
			fmt.Fprintf(&b, `<circle class="point" data-model="%s" data-feedback="%s" data-value="%s" cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s</title></circle>
`, esc(m.Model), esc(p.Feedback), strconv.FormatFloat(*p.Cumulative, 'f', 4, 64), x(p.Time), y(*p.Cumulative), colour,
				esc(fmt.Sprintf("%s %s %s: %.4g on %s (%s)", m.Model, p.Role, p.Feedback, *p.Cumulative, plural(p.Labels, "label"), p.Time.UTC().Format(time.RFC3339))))
		}
		flush()
	}

	// Legend: models, then what the line styles mean.
	ly := PlotTop + 6
	for i, m := range a.Models {
		now := ""
		switch m.Model {
		case a.Live:
			now = " (live)"
		case a.Standby:
			now = " (standby)"
		}
		fmt.Fprintf(&b, `<g class="legend"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d" dominant-baseline="middle">%s</text></g>
`, PlotRight+20, PlotRight+44, ly, ly, palette[i%len(palette)], PlotRight+50, ly, esc(m.Model+now))
		ly += 18
	}
	ly += 8
	fmt.Fprintf(&b, `<g class="legend-key"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#444" stroke-width="2"/><text x="%d" y="%d" dominant-baseline="middle">scored as live</text>
<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#444" stroke-width="2" stroke-dasharray="6 4"/><text x="%d" y="%d" dominant-baseline="middle">scored as standby</text></g>
`, PlotRight+20, PlotRight+44, ly, ly, PlotRight+50, ly, PlotRight+20, PlotRight+44, ly+18, ly+18, PlotRight+50, ly+18)
	if o.Detector != nil {
		detectorPanel(&b, o, x, tmin, tmax)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func marker(b *bytes.Buffer, kind, ref, label, colour, dash string, x float64) {
	fmt.Fprintf(b, `<g class="marker" data-kind="%s" data-model="%s"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"%s/><text transform="translate(%.1f %d) rotate(-90)" text-anchor="end" font-size="10" fill="%s">%s</text></g>
`, kind, esc(ref), x, x, PlotTop, PlotBottom, colour, dash, x+10, PlotTop+4, colour, esc(label))
}

// detectorPanel draws the statistic on the plot's time axis, 0 to 1.2 of
// the threshold, with the threshold as a red line. Points outside the
// plot's time span (before the first label) are left out.
func detectorPanel(b *bytes.Buffer, o Options, x func(time.Time) float64, tmin, tmax time.Time) {
	const top = 1.2
	y := func(v float64) float64 { return DetBottom - math.Min(v, top)/top*(DetBottom-DetTop) }
	fmt.Fprintf(b, `<g class="detector"><rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>
<text x="%d" y="%d">%s</text>
<line class="threshold" x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#d00" stroke-dasharray="4 3"/><text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle" fill="#d00">alarm</text>
<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">0</text>
`, PlotLeft, DetTop, PlotRight-PlotLeft, DetBottom-DetTop, PlotLeft, DetTop-6,
		esc("detector statistic (fraction of the alarm threshold)"+o.DetectorNote), PlotLeft, PlotRight, y(1), y(1), PlotLeft-6, y(1), PlotLeft-6, y(0))
	var pts []string
	for _, p := range o.Detector {
		if p.Time.Before(tmin) || p.Time.After(tmax) {
			continue
		}
		xy := fmt.Sprintf("%.1f,%.1f", x(p.Time), y(p.Statistic))
		pts = append(pts, xy)
		fmt.Fprintf(b, `<circle class="detector-point" data-statistic="%s" data-phase="%s" cx="%.1f" cy="%.1f" r="2.5" fill="#333"><title>%s</title></circle>
`, strconv.FormatFloat(p.Statistic, 'f', 4, 64), esc(p.Phase), x(p.Time), y(p.Statistic),
			esc(fmt.Sprintf("%s: %.3f of the threshold (%s)", p.Time.UTC().Format(time.RFC3339), p.Statistic, p.Phase)))
	}
	if len(pts) > 1 {
		fmt.Fprintf(b, `<polyline fill="none" stroke="#333" stroke-width="1.5" points="%s"/>
`, joinPoints(pts))
	}
	b.WriteString("</g>\n")
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

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(n, 10) + " " + word + "s"
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to memory: cannot fail
	return b.String()
}
