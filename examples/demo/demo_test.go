package main

import (
	"context"
	"image"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
	"github.com/kiln-edge/kiln/examples/tabular/images"
)

// TestDemo is `make demo` under make test: the same seven steps on a real
// kilnd, the private containerd of .ci/with-containerd and the example
// images (without the PyTorch one: step 7 says it is skipped), each asserted from what `kiln ... -o json` answered, and nothing
// of it left behind.
func TestDemo(t *testing.T) {
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	why := ""
	switch {
	case addr == "":
		why = "KILN_TEST_CONTAINERD is not set: run through .ci/with-containerd (make test does)"
	case os.Geteuid() != 0:
		why = "the demo runs containers: it needs root"
	}
	if why != "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatalf("KILN_REQUIRE_REAL=1 but %s", why)
		}
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin+"/", "github.com/kiln-edge/kiln/cmd/kilnd",
		"github.com/kiln-edge/kiln/cmd/kiln").CombinedOutput(); err != nil {
		t.Fatalf("build kilnd and kiln: %v: %s", err, out)
	}
	if _, err := images.BuildAll(ctx, filepath.Join(bin, "images"), images.Examples); err != nil {
		t.Fatalf("build the example images: %v", err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "kdemo*"))

	// The charts and the dashboard's screenshots: kept under
	// $KILN_TEST_ARTIFACTS when CI sets it.
	out := t.TempDir()
	if a := os.Getenv("KILN_TEST_ARTIFACTS"); a != "" {
		out = filepath.Join(a, "kiln-demo")
	}
	var narration strings.Builder
	t0 := time.Now()
	rep, err := demoRun(ctx, options{bin: bin, images: filepath.Join(bin, "images"), data: "../tabular/data/breast_cancer.csv",
		digitsSpec: "../pipelines/digits.yaml",
		out:        out, containerd: addr}, &narration)
	t.Logf("narration (%.0fs):\n%s", time.Since(t0).Seconds(), narration.String())
	if err != nil {
		t.Fatal(err)
	}

	// 1: live on real data, answering.
	if rep.FirstState != "live" || rep.FirstAccuracy < 0.9 {
		t.Errorf("first model %s: %s, holdout accuracy %v; want live, at least 0.9", rep.First, rep.FirstState, rep.FirstAccuracy)
	}
	if len(rep.Predicted) != 3 || agreeing(rep.Predicted, rep.Truth) < 2 {
		t.Errorf("predictions %v for truth %v; want 3, most right", rep.Predicted, rep.Truth)
	}
	if rep.Endpoint != "benign" && rep.Endpoint != "malignant" {
		t.Errorf("the endpoint answered %q; want a label", rep.Endpoint)
	}
	// 2: quarantined, the column and the value named.
	if !strings.Contains(rep.QuarantineReason, "area_mean") || !strings.Contains(rep.QuarantineReason, "um2") {
		t.Errorf("quarantine %s reason %q; want the column and the value", rep.Quarantined, rep.QuarantineReason)
	}
	// 3 and 4: the corrupted batch's model promoted, then rolled back by kilnd.
	if rep.CorruptedState != "live" || rep.RolledBackModel != rep.Corrupted {
		t.Errorf("corrupted batch's model %s: %s, rolled back %q", rep.Corrupted, rep.CorruptedState, rep.RolledBackModel)
	}
	if rep.Rollback["trigger"] != "monitor" || rep.Rollback["p_value"] == "" {
		t.Errorf("rollback details %v; want trigger monitor and a p-value", rep.Rollback)
	}
	if len(rep.Suspect) == 0 {
		t.Error("no dataset flagged suspect by the rollback")
	}
	// 5: drift seen, one retraining run, evaluated.
	if d := rep.Drift["decision"]; d != "standby not better" && d != "no standby model to compare with" {
		t.Errorf("drift decision %q (%v)", d, rep.Drift)
	}
	if rep.Retrain == "" || (rep.RetrainState != "live" && rep.RetrainState != "rejected") {
		t.Errorf("retraining run %q: model %s %s; want evaluated", rep.Retrain, rep.RetrainModel, rep.RetrainState)
	}
	if rep.RetrainState == "live" && rep.RetrainAfter < 0.85 {
		t.Errorf("the retrained %s on shifted rows: accuracy %v; want it to have learned the shift (0.85+)", rep.RetrainModel, rep.RetrainAfter)
	}
	// 6: the live model's lineage reaches back to its run; the charts.
	if rep.RetrainState == "live" && rep.Live != rep.RetrainModel {
		t.Errorf("live %s; the retrained %s was promoted", rep.Live, rep.RetrainModel)
	}
	if !slices.ContainsFunc(rep.Lineage.Nodes, func(n api.LineageNode) bool {
		return strings.Contains(n.ID, "/r")
	}) {
		t.Errorf("lineage of %s: %+v; want its run", rep.Live, rep.Lineage.Nodes)
	}
	if svg, err := os.ReadFile(rep.SVG); err != nil || !strings.Contains(string(svg), "<polyline") {
		t.Errorf("SVG %s: %v; want a drawn series", rep.SVG, err)
	}
	img := readPNG(t, rep.PNG)
	plot := image.Rect(chart.PlotLeft+2, chart.PlotTop+2, chart.PlotRight-2, chart.PlotBottom-2)
	// The series: m1 (blue) briefly, m2 (red) a point, m3 (green) through
	// the warm-up; the promotion and rollback markers are grey and red.
	green := color.RGBA{0x2c, 0xa0, 0x2c, 255}
	// m2's one point sits on the frame's bottom edge (accuracy 0).
	edge := plot.Inset(-6)
	if b, r, g := near(img, plot, blue), near(img, edge, red), near(img, plot, green); b < 20 || r < 5 || g < 300 {
		t.Errorf("PNG %s: %d blue, %d red, %d green pixels in the plot; want the three models' series", rep.PNG, b, r, g)
	}
	// The dashboard through kiln ui showed the same story; with chromium
	// (make deps installs it), each page's screenshot is a real picture.
	if want := []string{"overview", "pipeline", "lineage", "events"}; !slices.Equal(rep.UIPages, want) {
		t.Errorf("dashboard pages checked %v; want %v", rep.UIPages, want)
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Errorf("KILN_REQUIRE_REAL=1 but chromium is not installed (make deps): no dashboard screenshots")
		}
	} else if len(rep.UIShots) != len(rep.UIPages) {
		t.Errorf("dashboard screenshots %v; want one per page", rep.UIShots)
	}
	for _, shot := range rep.UIShots {
		img := readPNG(t, shot)
		if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1600 {
			t.Errorf("screenshot %s is %v; want 1280x1600", shot, b)
		}
		// A page, not a blank or an error: many pixels neither white nor
		// near it (text, tables, the chart).
		if n := img.Bounds().Dx()*img.Bounds().Dy() - near(img, img.Bounds(), color.RGBA{255, 255, 255, 255}); n < 5000 {
			t.Errorf("screenshot %s: %d pixels not white; want a drawn page", shot, n)
		}
	}
	// 7: the PyTorch digits, or one line saying why not (CI builds only
	// the tabular images here).
	if rep.DigitsSkipped != "" {
		if !strings.Contains(narration.String(), rep.DigitsSkipped) || !strings.Contains(rep.DigitsSkipped, "make images-torch") {
			t.Errorf("step 7 skipped as %q; want the narration to say so, naming make images-torch", rep.DigitsSkipped)
		}
	} else {
		checkDigits(t, rep)
	}
	for i := 1; i <= 7; i++ {
		if !strings.Contains(narration.String(), "["+string(rune('0'+i))+"/7") {
			t.Errorf("narration lacks step %d", i)
		}
	}
	// Nothing left: demoRun's close checked containers, tasks, mounts and
	// processes; here the scratch roots.
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "kdemo*"))
	for _, p := range after {
		if !slices.Contains(before, p) {
			t.Errorf("left behind: %s", p)
		}
	}
}
