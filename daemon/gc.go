package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/storage"
)

// runGC collects garbage at start and then every gc.interval, so a box that
// nobody tends never fills its disk with pruned models and dead blobs.
func (d *Daemon) runGC(ctx context.Context) {
	t := time.NewTicker(d.cfg.GC.Interval.Duration)
	defer t.Stop()
	for {
		if _, err := d.collectGarbage(ctx, false, actorKilnd); err != nil && ctx.Err() == nil {
			d.log.Error("gc", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// collectGarbage applies the retention of the loaded pipelines (models, and
// the prediction logs' monitor.log), then removes what the store expired that
// lives outside it: quarantine folders and run logs, each only inside its own
// folder.
func (d *Daemon) collectGarbage(ctx context.Context, dryRun bool, actor string) (storage.GCReport, error) {
	keep := map[string]int{}
	for name, p := range d.pipelines.Load().specs {
		keep[name] = p.Retention.Models
	}
	rep, err := d.store.GC(ctx, storage.GCPolicy{
		KeepModels:    keep,
		QuarantineAge: d.cfg.GC.QuarantineAge.Duration,
		RunLogAge:     d.cfg.GC.RunLogAge.Duration,
		DryRun:        dryRun,
	})
	if err != nil {
		return rep, err
	}
	if dryRun {
		return rep, nil
	}
	crashpoint.Hit("gc.after-store")
	var errs []error
	errs = append(errs, d.collectPredictions(ctx, d.pipelines.Load().specs))
	for _, id := range rep.ExpiredQuarantine {
		errs = append(errs, removeWithin(d.cfg.Paths.QuarantineDir, filepath.Join(d.cfg.Paths.QuarantineDir, id)))
	}
	for _, l := range rep.ExpiredRunLogs {
		errs = append(errs, removeWithin(d.cfg.Paths.RunsDir, l.Path))
	}
	if len(rep.PrunedModels)+len(rep.DeletedBlobs)+len(rep.ExpiredQuarantine)+len(rep.ExpiredRunLogs) > 0 {
		d.recordEvent(ctx, "store.gc", "", rep.PrunedModels, map[string]string{
			"actor":              actor,
			"pruned_models":      strconv.Itoa(len(rep.PrunedModels)),
			"deleted_blobs":      strconv.Itoa(len(rep.DeletedBlobs)),
			"freed_bytes":        strconv.FormatInt(rep.FreedBytes, 10),
			"expired_quarantine": strings.Join(rep.ExpiredQuarantine, ","),
			"expired_run_logs":   strconv.Itoa(len(rep.ExpiredRunLogs)),
		})
	}
	return rep, errors.Join(errs...)
}

// removeWithin deletes path only when it lies inside dir: a record naming a
// path elsewhere (a corrupted or hand-edited database) must not make GC
// delete outside kiln's folders.
func removeWithin(dir, path string) error {
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return fmt.Errorf("gc: refusing to remove %s: not inside %s", path, dir)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// gcDryRun tells a dry run, which changes nothing and so is open to
// readers (the route's ReadIf).
func gcDryRun(r *http.Request) bool { return r.URL.Query().Get("dry_run") == "1" }

func (d *Daemon) handleGC(w http.ResponseWriter, r *http.Request) {
	dry := gcDryRun(r)
	rep, err := d.collectGarbage(r.Context(), dry, actorFrom(r.Context()))
	if err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var removedImages []string
	if r.URL.Query().Get("images") == "1" {
		if removedImages, err = d.collectImages(r.Context(), rep.KeepImages, dry); err != nil {
			localapi.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	var foreign []string
	if r.URL.Query().Get("foreign") == "1" {
		if foreign, err = d.collectForeign(r.Context(), dry, actorFrom(r.Context())); err != nil {
			localapi.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	deleted := make([]string, 0, len(rep.DeletedBlobs))
	for _, b := range rep.DeletedBlobs {
		deleted = append(deleted, b.Digest)
	}
	localapi.WriteJSON(w, http.StatusOK, api.GCReport{
		DryRun: dry, KeptModels: nonNil(rep.KeptModels), PrunedModels: nonNil(rep.PrunedModels),
		Protected: rep.Protected, DeletedBlobs: deleted, FreedBytes: rep.FreedBytes,
		ExpiredQuarantine: nonNil(rep.ExpiredQuarantine), ExpiredRunLogs: len(rep.ExpiredRunLogs),
		KeepImages: nonNil(rep.KeepImages), RemovedImages: nonNil(removedImages), Took: rep.Took,
		Foreign: nonNil(foreign),
	})
}

// collectForeign removes the containers of other installations (or none)
// from kiln's namespace, with their tasks and snapshots; with dryRun it only
// lists them. Only `kiln gc --foreign` asks for it: kilnd never removes a
// container it cannot prove is its own on its own.
func (d *Daemon) collectForeign(ctx context.Context, dryRun bool, actor string) ([]string, error) {
	_, foreign, err := d.classifyContainers(ctx)
	if err != nil || dryRun {
		return foreignIDs(foreign), err
	}
	var removed []string
	var errs []error
	for _, f := range foreign {
		if err := d.rt.Remove(ctx, f.c.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, f.c.ID)
		details := f.details()
		details["actor"] = actor
		d.recordEvent(ctx, "container.removed", "", []string{f.c.ID}, details)
	}
	return removed, errors.Join(errs...)
}

// collectImages deletes the images in kiln's containerd namespace that no
// kept model or unfinished run recorded and no loaded pipeline names. It is
// never automatic: an operator may import images before writing the spec
// that uses them, so only `kiln gc --images` asks for it.
func (d *Daemon) collectImages(ctx context.Context, keep []string, dryRun bool) ([]string, error) {
	keep = slices.Clone(keep)
	for _, p := range d.pipelines.Load().specs {
		for _, ref := range []string{p.Train.Image, p.Serve.Image} {
			digest, err := d.rt.Resolve(ctx, ref)
			if err != nil {
				continue // not imported: nothing to keep
			}
			keep = append(keep, digest)
		}
	}
	if dryRun {
		ims, err := d.rt.List(ctx)
		if err != nil {
			return nil, err
		}
		var would []string
		for _, im := range ims {
			if !slices.Contains(keep, im.Digest) {
				would = append(would, im.Name)
			}
		}
		return would, nil
	}
	removed, err := d.rt.GC(ctx, keep)
	var names []string
	for _, im := range removed {
		names = append(names, im.Name)
	}
	if len(names) > 0 {
		d.recordEvent(ctx, "images.removed", "", names, map[string]string{"kept_digests": strconv.Itoa(len(keep))})
	}
	return names, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
