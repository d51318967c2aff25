package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/examples/torch"
)

const digitsPipeline = "digits"

// digitsHeld are the digits no batch carries: kiln predict gets them as
// PNG files at the end.
const digitsHeld = 8

// digitsArchive is the PyTorch image's archive in the demo's images folder,
// or why the step cannot run: it is built apart (make images-torch: a
// debootstrapped rootfs and Debian's PyTorch, minutes once), so a run
// without it, TestDemo's in CI among them, skips the step and still passes.
func digitsArchive(images string) (path, skip string, err error) {
	path = filepath.Join(images, torch.ArchiveName)
	switch _, err := os.Stat(path); {
	case errors.Is(err, fs.ErrNotExist):
		return path, fmt.Sprintf("skipped: %s is not built (make images-torch, ~5 min once)", path), nil
	case err != nil:
		return path, "", err
	}
	return path, "", nil
}

// Step 7: an images pipeline, the same loop: the PyTorch example's 8x8
// digits in two batch folders, a small CNN trained in a container on the
// CPU, scored by kilnd on the images it held back, live; PNG files through
// kiln predict; a batch with a corrupt PNG quarantined with its name.
func (d *demo) digits(ctx context.Context) error {
	d.step(7, "images: the PyTorch digits (examples/torch, a small CNN on Debian's CPU PyTorch)")
	archive, skip, err := digitsArchive(d.b.opt.images)
	if err != nil {
		return err
	}
	if skip != "" {
		d.rep.DigitsSkipped = skip
		d.say("%s", skip)
		return nil
	}
	all, err := torch.LoadDigits(ctx, torch.DefaultDigitsCache)
	if err != nil {
		return fmt.Errorf("the digits data set (%s): %w", torch.DefaultDigitsCache, err)
	}
	spec, err := os.ReadFile(d.b.opt.digitsSpec)
	if err != nil {
		return err
	}
	// The example waits 1s for a batch to settle and 5s for more batches
	// before training; the demo waits less, as the bench does.
	text := strings.NewReplacer("settle: 1s", "settle: 0s", "debounce: 5s", "debounce: 2s").Replace(string(spec))
	if text == string(spec) {
		return fmt.Errorf("%s: no settle: 1s / debounce: 5s to shorten", d.b.opt.digitsSpec)
	}
	t0 := time.Now()
	var res api.ImportResult
	if err := d.b.kilnJSON(ctx, &res, "images", "import", archive); err != nil {
		return fmt.Errorf("%w (make images-torch)", err)
	}
	if err := os.WriteFile(filepath.Join(d.b.root, "etc/kiln/pipelines", digitsPipeline+".yaml"), []byte(text), 0o644); err != nil {
		return err
	}
	var rr api.ReloadResult
	if err := d.b.kilnJSON(ctx, &rr, "pipelines", "reload"); err != nil {
		return err
	}
	d.say("%s imported (%.1fs); pipeline %s loaded from %s, settle 0s and debounce 2s instead of 1s and 5s (the demo waits less)",
		torch.Ref, time.Since(t0).Seconds(), digitsPipeline, d.b.opt.digitsSpec)
	drop := filepath.Join(d.b.root, "var/lib/kiln/drop", digitsPipeline)
	if err := d.b.until(ctx, 10*time.Second, "the digits drop folder", func() (bool, error) {
		_, err := os.Stat(drop)
		return err == nil, nil
	}); err != nil {
		return err
	}

	// Two batch folders, each closed by _SUCCESS: the first 1,000 digits,
	// then the rest but the last few, which no model sees.
	rest := len(all) - digitsHeld
	t0 = time.Now()
	for i, span := range [][2]int{{0, 1000}, {1000, rest}} {
		if err := d.dropDigits(drop, "b"+strconv.Itoa(i+1), all, span[0], span[1], false); err != nil {
			return err
		}
	}
	var batches []api.Dataset
	if err := d.b.until(ctx, 2*time.Minute, "the two digits batches ingested", func() (bool, error) {
		var err error
		batches, err = d.digitsDatasets(ctx)
		return len(batches) >= 2, err
	}); err != nil {
		return err
	}
	for _, ds := range batches {
		if ds.State != "accepted" {
			return fmt.Errorf("digits batch %s: %s: %s", ds.ID, ds.State, ds.Reason)
		}
	}
	d.say("b1 (1,000 digits) and b2 (%d) dropped as ImageFolder batches closed by _SUCCESS: %s accepted, %d and %d images decoded (%.1fs)",
		rest-1000, batchIDs(batches), batches[0].Rows, batches[1].Rows, time.Since(t0).Seconds())

	// A live model, after the run that trained on the second batch (alone
	// or with the first, as the debounce gathered them) was evaluated.
	var runs []api.Run
	var ms []api.Model
	var live api.Model
	if err := d.b.until(ctx, 10*time.Minute, "a digits model live after b2", func() (bool, error) {
		if err := d.b.kilnJSON(ctx, &runs, "runs", "-p", digitsPipeline); err != nil {
			return false, err
		}
		var last *api.Run
		for i, r := range runs {
			if slices.Contains(r.Datasets, batches[1].ID) {
				last = &runs[i]
			}
			if r.State == "failed" || r.State == "cancelled" {
				return false, fmt.Errorf("run %s %s: %s", r.ID, r.State, r.Reason)
			}
		}
		if last == nil || last.State != "succeeded" {
			return false, nil
		}
		if err := d.b.kilnJSON(ctx, &ms, "models", "-p", digitsPipeline); err != nil {
			return false, err
		}
		settled := false
		live = api.Model{}
		for _, m := range ms {
			if m.Run == last.ID && m.State != "candidate" && m.State != "evaluating" {
				settled = true
			}
			if m.State == "live" {
				live = m
			}
		}
		return settled && live.ID != "", nil
	}); err != nil {
		return err
	}
	slices.SortFunc(runs, func(a, b api.Run) int { return idNum(a.ID) - idNum(b.ID) })
	for _, r := range runs {
		line := fmt.Sprintf("%s on %s: the CNN trained in a container in %.1fs", r.ID, strings.Join(r.Datasets, " and "),
			r.Finished.Sub(r.Started).Seconds())
		for _, m := range ms {
			if m.Run == r.ID {
				line += fmt.Sprintf(" -> %s: %s -> %s", m.ID, d.gateWords(ctx, m.ID), m.State)
			}
		}
		d.say("%s", line)
	}
	d.rep.DigitsLive, d.rep.DigitsAccuracy = live.ID, live.Metrics["accuracy"]
	d.rep.DigitsHoldout = int(live.Metrics["holdout_rows"])
	d.say("%s live %.1fs after b1 was dropped: kilnd measured accuracy %.3f on the %d images it held back, through the model's own server",
		live.ID, time.Since(t0).Seconds(), d.rep.DigitsAccuracy, d.rep.DigitsHoldout)
	if d.rep.DigitsAccuracy < 0.9 {
		return fmt.Errorf("%s: holdout accuracy %.3f; want at least 0.9", live.ID, d.rep.DigitsAccuracy)
	}

	// The digits no batch carried, as PNG files, through kiln predict.
	pngDir := filepath.Join(d.b.opt.out, "digits")
	if err := os.MkdirAll(pngDir, 0o755); err != nil {
		return err
	}
	args := []string{"predict", digitsPipeline, "-o", "json"}
	d.rep.DigitsTruth = nil
	for i := rest; i < len(all); i++ {
		f := filepath.Join(pngDir, fmt.Sprintf("%04d.png", i))
		if err := os.WriteFile(f, all[i].PNG(), 0o644); err != nil {
			return err
		}
		args = append(args, f)
		d.rep.DigitsTruth = append(d.rep.DigitsTruth, strconv.Itoa(all[i].Label))
	}
	t1 := time.Now()
	out, err := d.b.kiln(ctx, nil, args...)
	if err != nil {
		return err
	}
	if err := jsonInto(out, &d.rep.DigitsPredicted); err != nil {
		return err
	}
	right := agreeing(d.rep.DigitsPredicted, d.rep.DigitsTruth)
	d.say("kiln predict digits %s/{%04d..%04d}.png, %d digits no batch carried -> %s (truth: %s): %d right (%.1fs)",
		pngDir, rest, len(all)-1, digitsHeld, strings.Join(d.rep.DigitsPredicted, " "), strings.Join(d.rep.DigitsTruth, " "),
		right, time.Since(t1).Seconds())
	if len(d.rep.DigitsPredicted) != digitsHeld || right < digitsHeld*3/4 {
		return fmt.Errorf("kiln predict digits: %v for %v; want %d answers, %d or more right", d.rep.DigitsPredicted,
			d.rep.DigitsTruth, digitsHeld, digitsHeld*3/4)
	}

	// A batch with one PNG that is not one: quarantined, the file named.
	t1 = time.Now()
	if err := d.dropDigits(drop, "b3", all, 0, 200, true); err != nil {
		return err
	}
	var q api.Dataset
	if err := d.b.until(ctx, time.Minute, "the corrupt digits batch", func() (bool, error) {
		ds, err := d.digitsDatasets(ctx)
		if len(ds) > 2 {
			q = ds[len(ds)-1]
		}
		return q.ID != "", err
	}); err != nil {
		return err
	}
	d.rep.DigitsQuarantined, d.rep.DigitsReason = q.State, q.Reason
	d.say("b3, 200 digits and 3/%s (a PNG cut short) -> %s %s (%.1fs): %s", corruptDigit, q.ID, q.State, time.Since(t1).Seconds(), q.Reason)
	if q.State != "quarantined" || !strings.Contains(q.Reason, "3/"+corruptDigit) {
		return fmt.Errorf("the corrupt batch %s is %s (reason %q); want quarantined, naming 3/%s", q.ID, q.State, q.Reason, corruptDigit)
	}
	d.say("-> %s still live; the batch and its REASON.json wait in quarantine", live.ID)
	return nil
}

// corruptDigit is the broken file of the corrupt batch, in class 3.
const corruptDigit = "broken.png"

// dropDigits writes digits [lo, hi) as a batch folder, with a truncated PNG
// in class 3 when corrupt, staged under a dot name the watcher ignores and
// renamed into the drop folder whole.
func (d *demo) dropDigits(drop, name string, all []torch.Digit, lo, hi int, corrupt bool) error {
	stage := filepath.Join(drop, "."+name)
	names := make([]int, hi-lo)
	for i := range names {
		names[i] = lo + i
	}
	if err := torch.WriteBatch(stage, all[lo:hi], names); err != nil {
		return err
	}
	if corrupt {
		p := all[3].PNG()
		if err := os.WriteFile(filepath.Join(stage, "3", corruptDigit), p[:len(p)/2], 0o644); err != nil {
			return err
		}
	}
	return os.Rename(stage, filepath.Join(drop, name))
}

// digitsDatasets are the digits pipeline's data versions, oldest first.
func (d *demo) digitsDatasets(ctx context.Context) ([]api.Dataset, error) {
	var ds, out []api.Dataset
	err := d.b.kilnJSON(ctx, &ds, "datasets", "-p", digitsPipeline)
	for _, v := range ds {
		if v.Kind != "feedback" {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b api.Dataset) int { return idNum(a.ID) - idNum(b.ID) })
	return out, err
}

func batchIDs(ds []api.Dataset) string {
	var ids []string
	for _, v := range ds {
		ids = append(ids, v.ID)
	}
	return strings.Join(ids, " and ")
}

func agreeing(a, b []string) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] == b[i] {
			n++
		}
	}
	return n
}
