package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/examples/images/imagedata"
)

const imagesName = "ingest.images_vs_baseline"

// inImagesClasses are the classes of the benchmark's image batch.
var inImagesClasses = []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}

// inImagesSpec is the data section an images batch is ingested with: the checks a
// real images pipeline sets (every image decoded, labels in the set, a class minimum).
const inImagesSpec = "{format: images, settle: 0s, validate: {labels: [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9], min_per_class: 10, files: {extensions: [.png, .jpg], max_size: 1Mi}}}"

// inBenchImages: kiln ingest of one batch folder of 10,000 images in class folders (32x32,
// PNG and JPEG alternating; every image decoded and checked, content-hashed into the blob
// store and fsynced, split by content hash, drift statistics taken) against `cp -r` +
// `xargs -P N sha256sum` + `sync` of every copied file and folder, N being the files kiln
// reads at once. Files per second; the order alternates between rounds.
func inBenchImages(ctx context.Context, dir string, opt Options) Figure {
	fail := func(why string) Figure { return unmeasured(imagesName, "x", ">= 1.0", why) }
	perClass, rounds := 1000, 2
	if opt.Quick {
		perClass, rounds = 100, 1
	}
	src := filepath.Join(dir, "src", "batch")
	files, err := imagedata.Write(src, inImagesClasses, perClass, 1, imagedata.Options{JPEG: true})
	if err != nil {
		return fail(err.Error())
	}
	if err := imagedata.Close(src); err != nil {
		return fail(err.Error())
	}
	var bytes int64
	for _, f := range files {
		bytes += int64(len(f.Data))
	}
	n := float64(len(files))
	var kiln, base, kilnCPU, baseCPU []float64
	baseline := func(round int) error {
		dst := filepath.Join(dir, fmt.Sprintf("cp%d", round))
		defer func() { _ = os.RemoveAll(dst) }()
		if err := exec.CommandContext(ctx, "sync").Run(); err != nil {
			return err
		}
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", `cp -r "$1" "$2" && find "$2" -type f -print0 | xargs -0 -P "$3" -n 64 sha256sum >/dev/null && find "$2" -print0 | xargs -0 sync`,
			"sh", src, dst, strconv.Itoa(ingest.ParallelFiles))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("baseline: %v: %s", err, out)
		}
		base = append(base, n/time.Since(t0).Seconds())
		baseCPU = append(baseCPU, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
		return nil
	}
	kilnRound := func(round int) error {
		secs, cpu, err := inIngestBatch(ctx, filepath.Join(dir, fmt.Sprintf("k%d", round)), src, len(files))
		kiln, kilnCPU = append(kiln, n/secs), append(kilnCPU, cpu)
		return err
	}
	for round := range rounds {
		steps := []func(int) error{baseline, kilnRound}
		if round%2 == 1 {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(round); err != nil {
				return fail(err.Error())
			}
		}
	}
	k, b := median(kiln), median(base)
	return measured(imagesName, k/b, "x", ">= 1.0", fmt.Sprintf(
		"kiln format images %.0f files/s (%.0f-%.0f) vs cp -r + xargs -P %d sha256sum + sync of every copy %.0f files/s (%.0f-%.0f); %d images (%.1f MB, 32x32 PNG and JPEG, 10 classes) in one batch folder; CPU seconds kiln %.2f, baseline %.2f; median of %d rounds, order alternating",
		k, slices.Min(kiln), slices.Max(kiln), ingest.ParallelFiles, b, slices.Min(base), slices.Max(base), len(files), float64(bytes)/1e6, median(kilnCPU), median(baseCPU), rounds))
}

// inIngestBatch stages the batch folder src into a fresh rig (a copy, flushed), renames it
// into the drop folder whole and returns the seconds from the rename to its commit, and
// the CPU seconds this process spent meanwhile. The version must be accepted with every
// image in it.
func inIngestBatch(ctx context.Context, dir, src string, images int) (secs, cpu float64, err error) {
	defer func() { _ = os.RemoveAll(dir) }()
	spec, err := inSpec("img", inImagesSpec)
	if err != nil {
		return 0, 0, err
	}
	r, err := newInRig(ctx, dir, spec)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	stage := filepath.Join(dir, "stage")
	if out, err := exec.CommandContext(ctx, "sh", "-c", `cp -r "$1" "$2" && sync`, "sh", src, stage).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("stage: %v: %s", err, out)
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	if err := os.Rename(stage, r.drop("img")+"/batch"); err != nil {
		return 0, 0, err
	}
	if err := r.waitCommitted(1, 10*time.Minute); err != nil {
		return 0, 0, err
	}
	took, cpu := time.Since(t0).Seconds(), cpuSeconds()-cpu0
	if err := checkAccepted(r.store, "img", 1, int64(images)); err != nil {
		return 0, 0, err
	}
	return took, cpu, nil
}
