package main

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
)

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

func sampleAccuracy() api.Accuracy {
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	f := func(v float64) *float64 { return &v }
	return api.Accuracy{Pipeline: "iris", Metric: "accuracy", Live: "iris/m1", Standby: "iris/m2",
		Models: []api.ModelSeries{
			// Live twice, standby twice (m2 promoted at hour 3).
			{Model: "iris/m1", Points: []api.SeriesPoint{
				{Time: at(1), Feedback: "iris/d1", Role: "live", Rows: 10, Value: f(0.8), Labels: 10, Cumulative: f(0.8)},
				{Time: at(2), Feedback: "iris/d2", Role: "live", Rows: 10, Value: f(0.9), Labels: 20, Cumulative: f(0.85)},
				{Time: at(4), Feedback: "iris/d3", Role: "standby", Rows: 10, Value: f(0.7), Labels: 30, Cumulative: f(0.8)},
				{Time: at(5), Feedback: "iris/d4", Role: "standby", Rows: 10, Value: f(0.6), Labels: 40, Cumulative: f(0.75)},
			}},
			{Model: "iris/m2", Points: []api.SeriesPoint{
				{Time: at(4), Feedback: "iris/d3", Role: "live", Rows: 10, Value: f(0.5), Labels: 10, Cumulative: f(0.5)},
				{Time: at(5), Feedback: "iris/d4", Role: "live", Rows: 10, Value: f(0.4), Labels: 20, Cumulative: f(0.45)},
				{Time: at(6), Feedback: "iris/d5", Role: "live", Rows: 10, Value: f(0.3), Labels: 30, Cumulative: f(0.4)},
			}},
		},
		Deployments: []api.DeploymentMark{
			{ID: "iris/e1", Model: "iris/m1", State: "ended", Created: at(0)},
			{ID: "iris/e2", Model: "iris/m2", State: "standby", Created: at(3)},
			{ID: "iris/e3", Model: "iris/m1", State: "live", Created: at(7), Rollback: true},
		},
	}
}

// TestAccuracySVG: one polyline per stretch of a model in one role (a
// standby stretch starts at the live stretch's last point), dashed when
// standby; a marker per promotion and rollback; every point inside the plot.
func TestAccuracySVG(t *testing.T) {
	root := parseSVG(t, accuracySVG(sampleAccuracy()))
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
				if errx != nil || erry != nil || x < plotLeft || x > plotRight || y < plotTop || y > plotBottom {
					t.Errorf("point %q outside the plot [%d,%d]x[%d,%d]", p, plotLeft, plotRight, plotTop, plotBottom)
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
	a := sampleAccuracy()
	a.Metric = "rmse"
	v := 3.7
	a.Models[0].Points[0].Cumulative = &v
	root := parseSVG(t, accuracySVG(a))
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
	root := parseSVG(t, accuracySVG(a))
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
		t.Errorf("empty chart does not say so:\n%s", accuracySVG(a))
	}
}

// TestWriteFileAtomic: the chart replaces an old file whole, readable by
// others, and leaves no temp file.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chart.svg")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := accuracySVG(sampleAccuracy())
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v (%v), want 0644", fi.Mode(), err)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Errorf("folder holds %d entries, want only chart.svg", len(des))
	}
	if err := writeFileAtomic(filepath.Join(dir, "no", "such", "dir.svg"), data); err == nil || !strings.Contains(err.Error(), "dir.svg") {
		t.Errorf("write into a missing folder: %v, want an error naming the file", err)
	}
}
