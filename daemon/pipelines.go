package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// pipelineSet is one complete, validated generation of pipeline specs. It is
// immutable once published: a reload builds a new set and swaps the pointer,
// so readers never see a half-applied change (Caddy's reload discipline).
type pipelineSet struct {
	specs  map[string]*config.Pipeline
	loaded time.Time
}

// reload builds the new set from the pipelines folder and swaps it in. When
// any spec is bad, the whole new set is rejected and the old one keeps
// running; the error names the file, line and field.
func (d *Daemon) reload(ctx context.Context, trigger string) (api.ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()

	prevState, _ := d.state.Load().(string)
	if prevState == stateReady {
		d.state.Store(stateReloading)
		_ = d.notify.Reloading()
		defer func() {
			d.state.Store(stateReady)
			_ = d.notify.Ready()
			d.setStatus(d.readyStatus())
		}()
	}

	res := api.ReloadResult{Time: time.Now().UTC(), Trigger: trigger}
	specs, err := config.LoadPipelines(d.cfg.Paths.PipelinesDir)
	if err != nil {
		res.Error = err.Error()
		d.lastReload.Store(&res)
		d.metrics.reloads.WithLabelValues("rejected").Inc()
		d.recordEvent(ctx, "pipelines.reload_rejected", "", nil, map[string]string{"trigger": trigger, "error": firstLine(res.Error)})
		return res, err
	}
	old := d.pipelines.Load()
	for name, p := range specs {
		switch prev, ok := old.specs[name]; {
		case !ok:
			res.Added = append(res.Added, name)
		case prev.Digest != p.Digest:
			res.Changed = append(res.Changed, name)
		default:
			res.Unchanged = append(res.Unchanged, name)
		}
	}
	for name := range old.specs {
		if _, ok := specs[name]; !ok {
			res.Removed = append(res.Removed, name)
		}
	}
	for _, s := range []*[]string{&res.Added, &res.Changed, &res.Unchanged, &res.Removed} {
		slices.Sort(*s)
	}
	res.OK = true
	if trigger == "start" {
		// Start must not wait on containerd (it may be down): check later.
		go d.checkImages(context.WithoutCancel(ctx), specs, append(res.Added, res.Changed...))
	} else {
		res.Warnings = d.checkImages(ctx, specs, append(res.Added, res.Changed...))
	}
	d.pipelines.Store(&pipelineSet{specs: specs, loaded: res.Time})
	if d.pipes != nil {
		d.pipes.Apply(specs) // before Start (the load in New) this is a no-op; Start takes the set
	}
	if d.ingest != nil {
		d.ingest.SetPipelines(specs) // added pipelines are watched, removed ones no longer
	}
	if d.mon != nil {
		d.mon.Apply(specs)
	}
	d.lastReload.Store(&res)
	d.metrics.reloads.WithLabelValues("applied").Inc()
	if len(res.Added)+len(res.Changed)+len(res.Removed) > 0 {
		d.log.Info("pipelines reloaded", "trigger", trigger, "added", res.Added, "changed", res.Changed, "removed", res.Removed)
		d.recordEvent(ctx, "pipelines.reloaded", "", slices.Sorted(maps.Keys(specs)), map[string]string{
			"trigger": trigger, "added": strings.Join(res.Added, ","), "changed": strings.Join(res.Changed, ","),
			"removed": strings.Join(res.Removed, ",")})
	}
	return res, nil
}

// checkImages resolves the images of the named pipelines, so a missing
// image is reported when the spec loads rather than when a run starts. It
// does not reject the set: the image may be imported next, and containerd
// may be down for a while.
func (d *Daemon) checkImages(ctx context.Context, specs map[string]*config.Pipeline, names []string) []string {
	if d.rt == nil {
		return nil
	}
	var warnings []string
	// One budget for all: a containerd that does not answer costs seconds
	// once, not per image.
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, name := range names {
		p := specs[name]
		for _, ref := range []string{p.Train.Image, p.Serve.Image} {
			if err := d.resolveImage(rctx, ref); err != nil {
				w := fmt.Sprintf("pipeline %s: image %s: %v (import it with `kiln images import FILE`)", name, ref, err)
				warnings = append(warnings, w)
				d.log.Warn("pipeline image not resolvable", "pipeline", name, "image", ref, "err", err)
				d.recordEvent(ctx, "pipeline.image_missing", name, []string{ref}, map[string]string{"error": err.Error()})
			}
		}
	}
	return warnings
}

func (d *Daemon) resolveImage(ctx context.Context, ref string) error {
	_, err := d.rt.Resolve(ctx, ref)
	return err
}

func (d *Daemon) recordEvent(ctx context.Context, kind, pipeline string, refs []string, details map[string]string) {
	if _, err := d.store.Append(ctx, storage.Event{Actor: actorFrom(ctx), Kind: kind, Pipeline: pipeline,
		Refs: refs, Details: details}); err != nil {
		d.log.Error("record event", "kind", kind, "err", err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// watchPipelines reloads when the pipelines folder changes. Editors and
// config management write a temp file and rename it, often several times in
// a row, so changes are debounced.
func (d *Daemon) watchPipelines(ctx context.Context) {
	const debounce = 250 * time.Millisecond
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Error("cannot watch pipelines folder; use `kiln pipelines reload` or SIGHUP", "err", err)
		return
	}
	defer func() { _ = w.Close() }() // on the way out: a failure to stop watching leaves nothing to do
	if err := w.Add(d.cfg.Paths.PipelinesDir); err != nil {
		d.log.Error("cannot watch pipelines folder; use `kiln pipelines reload` or SIGHUP", "dir", d.cfg.Paths.PipelinesDir, "err", err)
		return
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if config.IsSpecFile(ev.Name) {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow loses events; a reload reads the whole folder anyway.
			d.log.Warn("pipelines folder watch", "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			if _, err := d.reload(ctx, "folder"); err != nil {
				d.log.Error("pipelines folder changed but the new set is rejected; old pipelines keep running", "err", err)
			}
		}
	}
}
