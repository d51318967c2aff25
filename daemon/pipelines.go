package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
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
	// since is when each spec, as it is now (its digest), was loaded: a
	// reload that leaves a spec unchanged keeps its time (kiln pipelines
	// LOADED), so an operator can tell which file last changed.
	since map[string]time.Time
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
			// Runs after lastReload is stored: a rejection shows in
			// `systemctl status` until a reload succeeds.
			d.setStatus(d.currentStatus())
		}()
	}

	res := api.ReloadResult{Time: time.Now().UTC(), Trigger: trigger}
	specs, err := config.LoadPipelines(d.cfg.Paths.PipelinesDir)
	if err != nil {
		res.Error = err.Error()
		res.Rejected = rejectedSpecs(err, d.cfg.Paths.PipelinesDir)
		d.lastReload.Store(&res)
		d.metrics.reloads.WithLabelValues("rejected").Inc()
		// The whole cause, one line per file joined: the journal line and
		// `kiln events` both name every bad file.
		d.recordEvent(ctx, "pipelines.reload_rejected", "", nil, map[string]string{"trigger": trigger, "error": oneLine(res.Error)})
		return res, err
	}
	old := d.pipelines.Load()
	since := make(map[string]time.Time, len(specs))
	for name, p := range specs {
		since[name] = res.Time
		switch prev, ok := old.specs[name]; {
		case !ok:
			res.Added = append(res.Added, name)
		case prev.Digest != p.Digest:
			res.Changed = append(res.Changed, name)
		default:
			res.Unchanged = append(res.Unchanged, name)
			if t, ok := old.since[name]; ok {
				since[name] = t
			}
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
	d.pipelines.Store(&pipelineSet{specs: specs, loaded: res.Time, since: since})
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
		// The event is the log line (journal.go).
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
				// The event is the log line (journal.go).
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

// currentStatus is the sd_notify STATUS of a running kilnd: after a
// rejected reload it leads with the cause ("reload rejected: FILE:LINE:
// ...") so `systemctl status kilnd` says why the new specs are not in use.
func (d *Daemon) currentStatus() string {
	s := d.readyStatus()
	if r := d.lastReload.Load(); r != nil && !r.OK {
		return "reload rejected: " + firstLine(r.Error) + "; old pipelines keep running; " + s
	}
	return s
}

// rejectedSpecs groups a LoadPipelines error by file: each bad file once,
// with all of its errors. An error that names no file (the folder
// unreadable) is filed under the folder.
func rejectedSpecs(err error, dir string) []api.RejectedSpec {
	var out []api.RejectedSpec
	at := map[string]int{}
	for _, leaf := range leafErrors(err) {
		file := dir
		var ce *config.Error
		var pe *fs.PathError
		switch {
		case errors.As(leaf, &ce) && ce.File != "":
			file = ce.File
		case errors.As(leaf, &pe):
			file = pe.Path
		}
		msg := oneLine(leaf.Error())
		if i, ok := at[file]; ok {
			out[i].Error += "; " + msg
			continue
		}
		at[file] = len(out)
		out = append(out, api.RejectedSpec{File: file, Error: msg})
	}
	return out
}

// leafErrors flattens errors.Join trees (one per file, and within a file
// one per field when the decoder reports them all).
func leafErrors(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leafErrors(e)...)
	}
	return out
}

// rejectedPipelines are the rows `kiln pipelines` adds for the files the
// last reload refused, beside the loaded set that keeps running.
func (d *Daemon) rejectedPipelines() []api.Pipeline {
	r := d.lastReload.Load()
	if r == nil || r.OK {
		return nil
	}
	out := make([]api.Pipeline, 0, len(r.Rejected))
	for _, f := range r.Rejected {
		name := filepath.Base(f.File)
		for _, ext := range []string{".yaml", ".yml"} {
			name = strings.TrimSuffix(name, ext)
		}
		out = append(out, api.Pipeline{ID: name, Pipeline: name, State: "rejected", Created: r.Time, File: f.File, Error: f.Error})
	}
	return out
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
			// A rejection is journaled by its event, with every cause.
			_, _ = d.reload(ctx, "folder")
		}
	}
}
