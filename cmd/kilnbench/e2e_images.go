package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/examples/torch"
)

// benchE2EImages times BENCH.md's e2e.images_drop_to_serving_s: the PyTorch
// digits example (examples/pipelines/digits.yaml, CPU) from a closed batch
// folder of all 1,797 digits renamed into the drop folder until a new model
// answers an image on the endpoint. The spec is the example's with settle and
// the trigger's debounce at 0, so the figure is kiln's and the trainer's time,
// not the waits a site chooses.
func benchE2EImages(ctx context.Context, opt Options) Figure {
	const name, unit, goal = "e2e.images_drop_to_serving_s", "s", "<= 60"
	fail := func(why string) Figure { return unmeasured(name, unit, goal, why) }
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		return fail("needs a containerd: run under .ci/with-containerd (make bench does)")
	}
	if os.Geteuid() != 0 {
		return fail("needs root for containers")
	}
	archive := filepath.Join(opt.Bin, "images", torch.ArchiveName)
	if _, err := os.Stat(archive); err != nil {
		return fail("no " + archive + " (make images-torch builds it)")
	}
	spec, err := os.ReadFile("examples/pipelines/digits.yaml")
	if err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	digits, err := torch.LoadDigits(ctx, torch.DefaultDigitsCache)
	if err != nil {
		return fail("digits data: " + err.Error())
	}
	text := strings.NewReplacer("settle: 1s", "settle: 0s", "debounce: 5s", "debounce: 0s").Replace(string(spec))
	l, stop, err := startLoop(ctx, filepath.Join(opt.Bin, "kilnd"), addr, "e2ei", "digits", text)
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	fh, err := os.Open(archive)
	if err != nil {
		return fail(err.Error())
	}
	_, err = l.c.ImportImages(ctx, fh)
	_ = fh.Close() // read only
	if err != nil {
		return fail("import " + archive + ": " + err.Error())
	}
	drop := filepath.Join(l.root, "var/lib/kiln/drop/digits")
	if err := os.MkdirAll(drop, 0o755); err != nil {
		return fail(err.Error())
	}
	// Staged under a dot name, which the watcher ignores, then renamed in
	// closed: the clock starts when the batch is whole in the drop folder.
	stage := filepath.Join(drop, ".b1")
	names := make([]int, len(digits))
	for i := range names {
		names[i] = i
	}
	if err := torch.WriteBatch(stage, digits, names); err != nil {
		return fail(err.Error())
	}
	seq, _ := lastSeq(ctx, l.c)
	t0 := time.Now()
	if err := os.Rename(stage, filepath.Join(drop, "b1")); err != nil {
		return fail(err.Error())
	}
	img := digits[0].PNG()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var out strings.Builder
		err := l.c.PredictBody(ctx, "digits", contract.ContentTypeImage, bytes.NewReader(img), &out)
		if err == nil && strings.TrimSpace(out.String()) != "" {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail("no model answered within 10 minutes; see " + filepath.Join(l.root, "kilnd.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	total := time.Since(t0)
	return measured(name, total.Seconds(), unit, goal, fmt.Sprintf("%s; %d digits (8x8 PNG, 10 classes) in one batch, examples/pipelines/digits.yaml with settle and debounce 0, the small CNN on Debian's CPU PyTorch",
		phases(ctx, l.c, seq, t0), len(digits)))
}
