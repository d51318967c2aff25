package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/ui/chart"
	"github.com/kiln-edge/kiln/daemon/ui/chart/charttest"
)

// near counts the pixels within 40 of col in each channel inside r.
func near(img image.Image, r image.Rectangle, col color.RGBA) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			if absDiff(c.R, col.R) < 40 && absDiff(c.G, col.G) < 40 && absDiff(c.B, col.B) < 40 {
				n++
			}
		}
	}
	return n
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

var (
	blue = color.RGBA{0x1f, 0x77, 0xb4, 255} // the chart's first model
	red  = color.RGBA{0xd6, 0x27, 0x28, 255} // its second
)

// TestPNGOfSample draws the chart package's sample as the demo does and
// finds the chart in the pixels: each model's line in the plot in its
// colour, the frame, text in the title's place, and white elsewhere.
func TestPNGOfSample(t *testing.T) {
	svg := chart.Accuracy(charttest.Sample(), chart.Options{XMLHeader: true})
	path := filepath.Join(t.TempDir(), "a.png")
	if err := writePNG(path, svg); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path)
	if got := img.Bounds(); got != image.Rect(0, 0, chart.Width, chart.Height) {
		t.Fatalf("size %v, want the SVG's %dx%d", got, chart.Width, chart.Height)
	}
	plot := image.Rect(chart.PlotLeft+2, chart.PlotTop+2, chart.PlotRight-2, chart.PlotBottom-2)
	// m1 spans four hours of the plot's width, m2 two: a 2-unit line.
	if n := near(img, plot, blue); n < 300 {
		t.Errorf("%d pixels of m1's blue in the plot; want its line (300+)", n)
	}
	if n := near(img, plot, red); n < 150 {
		t.Errorf("%d pixels of m2's red in the plot; want its line (150+)", n)
	}
	ink := color.RGBA{0, 0, 0, 255}
	if n := near(img, image.Rect(chart.PlotLeft, 10, chart.PlotLeft+400, 34), ink); n < 200 {
		t.Errorf("%d dark pixels where the title is; want its text", n)
	}
	// A 1-unit line falls across two pixel columns: grey, not #444.
	if n := near(img, image.Rect(chart.PlotLeft-1, chart.PlotTop+100, chart.PlotLeft+1, chart.PlotTop+200), color.RGBA{0x90, 0x90, 0x90, 255}); n < 100 {
		t.Errorf("%d frame pixels on the plot's left edge; want the frame", n)
	}
	white := color.RGBA{255, 255, 255, 255}
	if n := near(img, image.Rect(0, chart.Height-15, chart.Width, chart.Height), white); n < chart.Width*15*9/10 {
		t.Errorf("the bottom margin is not white (%d white pixels)", n)
	}
}

// TestPNGRefusesUnknownShapes: a drawing element the rasteriser does not
// know fails it, so the PNG never silently shows less than the SVG.
func TestPNGRefusesUnknownShapes(t *testing.T) {
	for _, svg := range []string{
		`<svg width="10" height="10"><path d="M0 0 L5 5"/></svg>`,
		`<svg width="10" height="10"><g transform="scale(2)"/></svg>`,
		`<svg width="10" height="10"><text transform="rotate(45)">x</text></svg>`,
		`<rect/>`,
		`<svg width="0" height="10"/>`,
	} {
		if _, err := rasterise([]byte(svg)); err == nil {
			t.Errorf("rasterise(%s) = nil error, want a refusal", svg)
		} else if !strings.Contains(err.Error(), "<") && !strings.Contains(err.Error(), "svg") {
			t.Errorf("rasterise(%s): %v; want the element named", svg, err)
		}
	}
}

// TestPNGDashes: a dashed line leaves gaps, a solid one none.
func TestPNGDashes(t *testing.T) {
	img, err := rasterise([]byte(`<svg width="100" height="20"><line x1="0" x2="100" y1="5" y2="5" stroke="#000" stroke-width="2"/>` +
		`<line x1="0" x2="100" y1="15" y2="15" stroke="#000" stroke-width="2" stroke-dasharray="6 4"/></svg>`))
	if err != nil {
		t.Fatal(err)
	}
	ink := color.RGBA{0, 0, 0, 255}
	solid, dashed := near(img, image.Rect(0, 4, 100, 6), ink), near(img, image.Rect(0, 14, 100, 16), ink)
	if solid < 190 || dashed < 100 || dashed > 140 {
		t.Errorf("ink: solid %d of 200, dashed %d (want about 60%% of 200)", solid, dashed)
	}
}
