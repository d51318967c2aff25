package chart

import (
	"encoding/xml"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart/charttest"
)

// draw is the chart as `kiln models accuracy --svg` writes it.
func draw(a api.Accuracy) []byte { return Accuracy(a, Options{XMLHeader: true}) }

// svgNode is any element of the chart, with its attributes and text.
type svgNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []svgNode  `xml:",any"`
}

func (n svgNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// walk calls fn for n and every element under it.
func (n svgNode) walk(fn func(svgNode)) {
	fn(n)
	for _, c := range n.Nodes {
		c.walk(fn)
	}
}

func (n svgNode) text() string {
	var b strings.Builder
	n.walk(func(c svgNode) { b.WriteString(c.Text) })
	return b.String()
}

func parseSVG(t *testing.T, b []byte) svgNode {
	t.Helper()
	var root svgNode
	if err := xml.Unmarshal(b, &root); err != nil {
		t.Fatalf("chart is not XML: %v\n%s", err, b)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element = %v, want svg in the SVG namespace", root.XMLName)
	}
	return root
}

// TestAccuracySVG: one polyline per stretch of a model in one role (a
// standby stretch starts at the live stretch's last point), dashed when
// standby; a marker per promotion and rollback; every point inside the plot.
func TestAccuracySVG(t *testing.T) {
	root := parseSVG(t, draw(charttest.Sample()))
	type line struct {
		Model, Role string
		Points      int
		Dashed      bool
	}
	var lines []line
	var markers []string
	root.walk(func(n svgNode) {
		switch {
		case n.XMLName.Local == "polyline" && n.attr("class") == "series":
			pts := strings.Fields(n.attr("points"))
			for _, p := range pts {
				xs, ys, _ := strings.Cut(p, ",")
				x, errx := strconv.ParseFloat(xs, 64)
				y, erry := strconv.ParseFloat(ys, 64)
				if errx != nil || erry != nil || x < PlotLeft || x > PlotRight || y < PlotTop || y > PlotBottom {
					t.Errorf("point %q outside the plot [%d,%d]x[%d,%d]", p, PlotLeft, PlotRight, PlotTop, PlotBottom)
				}
			}
			lines = append(lines, line{n.attr("data-model"), n.attr("data-role"), len(pts), n.attr("stroke-dasharray") != ""})
		case n.XMLName.Local == "g" && n.attr("class") == "marker":
			markers = append(markers, n.attr("data-kind")+" "+n.attr("data-model")+": "+n.text())
		}
	})
	wantLines := []line{
		{"iris/m1", "live", 2, false},
		{"iris/m1", "standby", 3, true},
		{"iris/m2", "live", 3, false},
	}
	if diff := cmp.Diff(wantLines, lines); diff != "" {
		t.Errorf("polylines (-want +got):\n%s", diff)
	}
	wantMarkers := []string{
		"promotion iris/m1: promoted iris/m1",
		"promotion iris/m2: promoted iris/m2",
		"rollback iris/m1: rollback to iris/m1",
	}
	if diff := cmp.Diff(wantMarkers, markers); diff != "" {
		t.Errorf("markers (-want +got):\n%s", diff)
	}
	all := root.text()
	for _, want := range []string{"iris: accuracy on labelled feedback", "iris/m1 (live)", "iris/m2 (standby)", "0.6", "Mar 01 0"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart text lacks %q", want)
		}
	}
}

// TestAccuracySVGErrorAxis: mae and rmse get a y axis up to a round number
// above the largest value, not 0..1.
func TestAccuracySVGErrorAxis(t *testing.T) {
	a := charttest.Sample()
	a.Metric = "rmse"
	v := 3.7
	a.Models[0].Points[0].Cumulative = &v
	root := parseSVG(t, draw(a))
	var ticks []string
	root.walk(func(n svgNode) {
		if n.XMLName.Local == "g" && n.attr("class") == "ytick" {
			ticks = append(ticks, strings.TrimSpace(n.text()))
		}
	})
	if want := []string{"0", "1", "2", "3", "4", "5"}; !cmp.Equal(want, ticks) {
		t.Errorf("y ticks = %v, want %v", ticks, want)
	}
}

// TestAccuracySVGEmpty: no labelled feedback gives a valid chart that says so.
func TestAccuracySVGEmpty(t *testing.T) {
	a := api.Accuracy{Pipeline: "pumps", Metric: "accuracy", Models: []api.ModelSeries{},
		Deployments: []api.DeploymentMark{{ID: "pumps/e1", Model: "pumps/m1", State: "live", Created: time.Now()}}}
	root := parseSVG(t, draw(a))
	polylines := 0
	root.walk(func(n svgNode) {
		if n.XMLName.Local == "polyline" {
			polylines++
		}
	})
	if polylines != 0 {
		t.Errorf("%d polylines in an empty chart", polylines)
	}
	if !strings.Contains(root.text(), "no labelled feedback yet") {
		t.Errorf("empty chart does not say so:\n%s", draw(a))
	}
}

// TestAccuracyMarksAndDetector: training runs are marked across the plot,
// and the detector panel beneath has one point per statistic inside the
// time span, on a 0..1.2 scale with the threshold line at 1.
func TestAccuracyMarksAndDetector(t *testing.T) {
	a := charttest.Sample()
	t0 := a.Models[0].Points[0].Time
	root := parseSVG(t, Accuracy(a, Options{
		Marks:        []Mark{{Time: t0.Add(30 * time.Minute), Kind: "retrain", Ref: "iris/r2", Label: "run iris/r2 (monitor)"}},
		Detector:     []DetectorPoint{{Time: t0, Statistic: 0.1, Phase: "armed"}, {Time: t0.Add(3 * time.Hour), Statistic: 2, Phase: "armed"}},
		DetectorNote: ": armed",
	}))
	if got := root.attr("height"); got != strconv.Itoa(detHeight) {
		t.Errorf("height with a detector panel = %s, want %d", got, detHeight)
	}
	var marks, stats []string
	var ys []float64
	root.walk(func(n svgNode) {
		switch {
		case n.XMLName.Local == "g" && n.attr("data-kind") == "retrain":
			marks = append(marks, n.attr("data-model")+": "+n.text())
		case n.attr("class") == "detector-point":
			stats = append(stats, n.attr("data-statistic"))
			y, _ := strconv.ParseFloat(n.attr("cy"), 64)
			ys = append(ys, y)
		}
	})
	if want := []string{"iris/r2: run iris/r2 (monitor)"}; !cmp.Equal(want, marks) {
		t.Errorf("marks = %q, want %q", marks, want)
	}
	if want := []string{"0.1000", "2.0000"}; !cmp.Equal(want, stats) {
		t.Errorf("detector points = %v, want %v", stats, want)
	}
	for _, y := range ys {
		if y < DetTop || y > DetBottom {
			t.Errorf("detector point at y %.1f outside the panel [%d,%d]", y, DetTop, DetBottom)
		}
	}
	if !strings.Contains(root.text(), "fraction of the alarm threshold): armed") {
		t.Errorf("detector caption missing:\n%s", root.text())
	}
}
