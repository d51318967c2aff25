package ingest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/storage"
)

// BenchmarkImageBatch times the whole path of an images batch, as kilnbench's
// ingest.images_vs_baseline does: a batch folder of 2,000 32x32 PNG and JPEG images in ten
// class folders, staged and flushed beside the drop folder, renamed in whole, and read,
// stored (fsynced), decoded, checked and committed as one version. It reports images/s.
// Run it on a real disk (TMPDIR=/var/tmp) for numbers that mean anything.
func BenchmarkImageBatch(b *testing.B) {
	classes := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}
	p := spec(b, "img", "format: images\nsettle: 0s\nvalidate: {labels: [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9], min_per_class: 10, files: {extensions: [.png, .jpg], max_size: 1Mi}}\n")
	e := newEnv(b, p)
	stage := filepath.Join(e.root, "stage")
	const perClass = 200
	n, images := 0, 0
	var took time.Duration
	b.StopTimer()
	for range b.N {
		n++
		dir := filepath.Join(stage, fmt.Sprintf("b%d", n))
		files, err := imagedata.Write(dir, classes, perClass, int64(n), imagedata.Options{JPEG: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := imagedata.Close(dir); err != nil {
			b.Fatal(err)
		}
		if out, err := exec.Command("sync").CombinedOutput(); err != nil {
			b.Fatalf("sync: %v: %s", err, out)
		}
		b.StartTimer()
		t0 := time.Now()
		dst := filepath.Join(e.drop("img"), filepath.Base(dir))
		if err := os.Rename(dir, dst); err != nil {
			b.Fatal(err)
		}
		// The commit's observation, as kilnbench waits for it: polling the store would decode
		// every version's 2,000 file records each time, and measure that.
		for o := range e.obs {
			if o.Path == dst && o.Step != "seen" {
				break
			}
		}
		took += time.Since(t0)
		b.StopTimer()
		ds := e.datasets("img")
		images += len(files)
		if d := ds[len(ds)-1]; d.State != storage.DatasetAccepted || d.Rows != int64(len(files)) {
			b.Fatalf("%s: %s, %d images: %s", d.ID, d.State, d.Rows, d.Reason)
		}
	}
	b.ReportMetric(float64(images)/took.Seconds(), "images/s")
}
