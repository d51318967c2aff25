package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/examples/images/imagedata"
)

// shapesSpec is an images pipeline on the Go example image trainer and
// server: the same loop as the tabular one, with class folders for data.
const shapesSpec = `name: shapes
data:
  format: images
  settle: 0s
  validate: {labels: [north, east, south, west], min_per_class: 5, files: {extensions: [.png, .jpg]}}
train:
  image: kiln.local/image-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
serve:
  image: kiln.local/image-server:1
  resources: {memory: 256Mi}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0.9}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

var shapesClasses = []string{"north", "east", "south", "west"}

// TestLoopImages is the whole loop for an images pipeline: a batch folder
// of class folders closed by _SUCCESS -> validated (every image decoded)
// -> trained in a container on the SageMaker layout -> scored by kilnd
// through the candidate's server (one x-image request an image) -> live ->
// images predicted through the endpoint by kiln predict; then a batch
// holding a corrupt image is quarantined with that image's name.
func TestLoopImages(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t) // containers, mounts and leases need root
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	root := newRoot(t, "containerd: {address: "+addr+", namespace: kiln-test-images}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	for _, f := range []string{"image-trainer.tar", "image-server.tar"} {
		if _, stderr, err := k.kiln(nil, "images", "import", filepath.Join(imgDir, f)); err != nil {
			t.Fatalf("kiln images import %s: %v: %s", f, err, stderr)
		}
	}
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/shapes.yaml"), shapesSpec)
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	t.Cleanup(func() { removeContainers(t, addr, "kiln-test-images") })

	drop := filepath.Join(root, "var/lib/kiln/drop/shapes")
	waitFor(t, "the drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	batch := filepath.Join(drop, "b1")
	files, err := imagedata.Write(batch, shapesClasses, 40, 1, imagedata.Options{JPEG: true})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := imagedata.Close(batch); err != nil {
		t.Fatal(err)
	}

	live := waitLive(t, k, "shapes", 3*time.Minute)
	t.Logf("batch closed -> model live in %s; metrics %v", time.Since(t0).Round(time.Millisecond), live.Metrics)
	if live.Metrics["accuracy"] < 0.9 || live.Metrics["holdout_rows"] < 10 {
		t.Errorf("live model measured by kilnd: accuracy %v on %v holdout images; want >= 0.9 on >= 10", live.Metrics["accuracy"], live.Metrics["holdout_rows"])
	}
	ds := listJSON[api.Dataset](t, k, "datasets", "-p", "shapes")
	if len(ds) != 1 || ds[0].Format != "images" || ds[0].Rows != int64(len(files)) {
		t.Fatalf("datasets = %+v; want one images version of %d images", ds, len(files))
	}
	labelled, held := 0, 0
	for _, f := range ds[0].Files {
		if f.Label != "" {
			labelled++
		}
		if f.Holdout {
			held++
		}
	}
	if labelled != len(files) || held == 0 || held == len(files) {
		t.Errorf("version files: %d labelled, %d held out of %d images; want all labelled, some (not all) held out", labelled, held, len(files))
	}

	// Unseen images (another seed) through the endpoint, one PNG and one
	// JPEG a class.
	fresh, err := imagedata.Write(filepath.Join(t.TempDir(), "fresh"), shapesClasses, 2, 99, imagedata.Options{JPEG: true})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"predict", "shapes", "-o", "json"}
	var want []string
	for _, f := range fresh {
		args = append(args, writeImage(t, f))
		want = append(want, f.Label)
	}
	out, stderr, err := k.kiln(nil, args...)
	if err != nil {
		t.Fatalf("kiln predict: %v: %s", err, stderr)
	}
	var got []string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("kiln predict -o json: %v: %s", err, out)
	}
	if agreement(got, want) < 0.75 {
		t.Errorf("kiln predict answered %v for %v (agreement %.2f); want >= 0.75", got, want, agreement(got, want))
	}

	// A batch with one corrupt PNG is quarantined, the reason naming it;
	// the live model keeps serving.
	bad := filepath.Join(drop, "b2")
	if _, err := imagedata.Write(bad, shapesClasses, 10, 2, imagedata.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := imagedata.WriteCorrupt(filepath.Join(bad, "east", "broken.png")); err != nil {
		t.Fatal(err)
	}
	if err := imagedata.Close(bad); err != nil {
		t.Fatal(err)
	}
	var q api.Dataset
	waitLong(t, time.Minute, "the corrupt batch quarantined", func() bool {
		for _, d := range listJSON[api.Dataset](t, k, "datasets", "-p", "shapes") {
			if d.State == "quarantined" {
				q = d
				return true
			}
		}
		return false
	})
	if !strings.Contains(q.Reason, "east/broken.png") {
		t.Errorf("quarantine reason %q; want it to name east/broken.png", q.Reason)
	}
	if out, stderr, err := k.kiln(nil, "predict", "shapes", writeImage(t, fresh[0])); err != nil || !strings.Contains(out, fresh[0].Label) {
		t.Errorf("kiln predict after the quarantine = %q, %v, %s; want %s", out, err, stderr, fresh[0].Label)
	}

	// Labelled images as feedback: the monitor scores the live model on
	// them, sending each image through it.
	fbDir := filepath.Join(root, "var/lib/kiln/feedback/shapes/f1")
	fbImages, err := imagedata.Write(fbDir, shapesClasses, 10, 3, imagedata.Options{JPEG: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := imagedata.Close(fbDir); err != nil {
		t.Fatal(err)
	}
	var fb api.Dataset
	waitLong(t, time.Minute, "the feedback batch accepted", func() bool {
		for _, d := range listJSON[api.Dataset](t, k, "datasets", "-p", "shapes") {
			if d.Kind == "feedback" {
				fb = d
				return true
			}
		}
		return false
	})
	if fb.State != "accepted" {
		t.Fatalf("feedback batch %s is %s: %s", fb.ID, fb.State, fb.Reason)
	}
	details := waitScored(t, k, fb.ID)
	if details["live_rows"] != strconv.Itoa(len(fbImages)) {
		t.Errorf("feedback scored on %s images; want %d: %v", details["live_rows"], len(fbImages), details)
	}
	if acc, err := strconv.ParseFloat(details["live_accuracy"], 64); err != nil || acc < 0.9 {
		t.Errorf("live accuracy on the feedback images = %q; want >= 0.9: %v", details["live_accuracy"], details)
	}
}

// waitLive waits for pipeline's first live model and returns it; a
// rejected model fails the test with the gate's reason.
func waitLive(t *testing.T, k *kilnd, pipeline string, d time.Duration) api.Model {
	t.Helper()
	var live api.Model
	waitLong(t, d, pipeline+" live", func() bool {
		for _, m := range listJSON[api.Model](t, k, "models", "-p", pipeline) {
			if m.State == "rejected" {
				t.Fatalf("model %s rejected: %s", m.ID, m.Reason)
			}
			if m.State == "live" {
				live = m
				return true
			}
		}
		return false
	})
	return live
}

// listJSON runs a kiln listing with -o json and decodes it; a failing
// command or bad JSON counts as an empty list (callers poll).
func listJSON[T any](t *testing.T, k *kilnd, args ...string) []T {
	t.Helper()
	out, _, err := k.kiln(nil, append(args, "-o", "json")...)
	if err != nil {
		return nil
	}
	var v []T
	if json.Unmarshal([]byte(out), &v) != nil {
		return nil
	}
	return v
}

// writeImage writes f to a file of its own and returns the path.
func writeImage(t *testing.T, f imagedata.File) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), strings.ReplaceAll(f.Path, "/", "-"))
	if err := os.WriteFile(p, f.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
