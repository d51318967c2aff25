package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/daemon/monitor"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/daemon/serve"
	"github.com/kiln-edge/kiln/storage"
)

// newMonitor wires the monitor to the parts it reads: the pipelines' live
// and standby backends, feedback versions through ingest, and the
// prediction logs the endpoints write.
func (d *Daemon) newMonitor() *monitor.Monitor {
	return monitor.New(monitor.Deps{
		Store:    d.store,
		Serving:  d.servingPair,
		Feedback: feedbackSource{store: d.store, ing: d.ingest},
		Log:      &predictionLogs{dir: d.predLogDir(), eps: d.eps, readers: map[string]*serve.LogReader{}},
		Actions: monitorActions{pipes: d.pipes, store: d.store, now: time.Now,
			specs: func() map[string]*config.Pipeline { return d.pipelines.Load().specs }},
		Logger: d.log.With("part", "monitor"),
		RowKey: ingest.RowKey,
	})
}

func (d *Daemon) predLogDir() string { return filepath.Join(d.cfg.Paths.StateDir, "predictions") }

func (d *Daemon) servingPair(ctx context.Context, p string) (monitor.Backend, monitor.Backend, error) {
	pair, err := d.pipes.Serving(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	return asMonitorBackend(pair.Live), asMonitorBackend(pair.Standby), nil
}

// asMonitorBackend keeps a nil backend nil (not a non-nil interface
// holding nil).
func asMonitorBackend(b pipeline.Backend) monitor.Backend {
	if b == nil {
		return nil
	}
	return b
}

// feedbackSource reads feedback versions the way ingest stored them.
type feedbackSource struct {
	store *storage.Store
	ing   *ingest.Manager
}

func (f feedbackSource) ReadFeedback(d storage.Dataset, label string) (*monitor.Feedback, error) {
	if d.Format == storage.FormatImages && d.Feedback == storage.FeedbackRows {
		return f.readImages(d)
	}
	fb, err := ingest.ReadFeedback(f.store, d, label)
	if err != nil {
		return nil, err
	}
	return &monitor.Feedback{Type: fb.Type, Columns: fb.Columns, Rows: fb.Rows, Labels: fb.Labels, IDs: fb.IDs}, nil
}

// readImages reads a labelled image batch of feedback: every image with
// its label, the holdout part's too (the monitor scores them all). Ingest
// bounds a batch's count and sizes (validate.files).
func (f feedbackSource) readImages(d storage.Dataset) (*monitor.Feedback, error) {
	fb := &monitor.Feedback{Type: d.Feedback}
	for _, file := range d.Files {
		if file.Label == "" {
			continue // labels.csv
		}
		r, err := f.store.OpenBlob(file.Blob)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", d.ID, file.Path, err)
		}
		data, err := io.ReadAll(r)
		_ = r.Close() // opened read-only
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", d.ID, file.Path, err)
		}
		fb.Images = append(fb.Images, data)
		fb.Labels = append(fb.Labels, file.Label)
	}
	return fb, nil
}

func (f feedbackSource) CommitJoined(ctx context.Context, p, source string, cols []string, rows [][]string, labels []string) (storage.Dataset, error) {
	return f.ing.CommitJoined(ctx, p, source, cols, rows, labels)
}

// predictionLogs opens one reader per pipeline's log and keeps it: a
// reader maps the closed segments' indexes once and refreshes itself as
// segments come and go.
type predictionLogs struct {
	dir     string
	eps     *endpoints
	mu      sync.Mutex
	readers map[string]*serve.LogReader
}

func (l *predictionLogs) reader(p string) (*serve.LogReader, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.readers[p]; r != nil {
		return r, nil
	}
	r, err := serve.OpenLogReader(l.dir, p)
	if err != nil {
		return nil, err
	}
	l.readers[p] = r
	return r, nil
}

func (l *predictionLogs) Flush(ctx context.Context, p string) error {
	return l.eps.flushLog(ctx, p)
}

func (l *predictionLogs) Lookup(p, id string) (monitor.Logged, error) {
	r, err := l.reader(p)
	if err != nil {
		return monitor.Logged{}, err
	}
	rec, err := r.Lookup(id)
	if errors.Is(err, serve.ErrNotFound) {
		return monitor.Logged{}, fmt.Errorf("%w: %w", monitor.ErrNotLogged, err)
	}
	if err != nil {
		return monitor.Logged{}, err
	}
	return logged(rec), nil
}

func (l *predictionLogs) Scan(p string, since time.Time, fn func(monitor.Logged) error) error {
	r, err := l.reader(p)
	if err != nil {
		return err
	}
	// Borrowed: the monitor's passes keep only what they derive, so a
	// day's log is read without a copy per record.
	return r.ScanBorrowed(since, func(rec serve.Record) error { return fn(logged(rec)) })
}

func (l *predictionLogs) ScanFrom(p string, since time.Time, cur monitor.LogCursor, fn func(monitor.Logged) error) (monitor.LogCursor, error) {
	r, err := l.reader(p)
	if err != nil {
		return cur, err
	}
	next, err := r.ScanFrom(serve.LogCursor(cur), since, func(rec serve.Record) error { return fn(logged(rec)) })
	if errors.Is(err, serve.ErrCursorStale) {
		err = fmt.Errorf("%w: %w", monitor.ErrLogCursorStale, err)
	}
	return monitor.LogCursor(next), err
}

func logged(r serve.Record) monitor.Logged {
	out := monitor.Logged{Model: r.Model, Protocol: r.Protocol, ContentType: r.ContentType, Time: r.Time,
		Status: r.Status, LatencyUS: r.LatencyUS, Rows: r.Rows, Output: r.Output, Truncated: r.OutputTruncated}
	if r.InputKept {
		out.Input = r.Input
	}
	return out
}

// flushLog makes what p's endpoint has buffered visible to log readers; a
// pipeline with no open endpoint has nothing buffered.
func (e *endpoints) flushLog(ctx context.Context, p string) error {
	e.mu.Lock()
	o := e.open[p]
	e.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.ep.FlushLog(ctx)
}

// monitorActions carries out the monitor's decisions through the pipeline
// controller, with kilnd as the actor: the same commands people use, under
// the same guard (pin, cooldown, work in flight).
type monitorActions struct {
	pipes *pipeline.Manager
	store *storage.Store
	specs func() map[string]*config.Pipeline
	now   func() time.Time
}

func (a monitorActions) Rollback(ctx context.Context, p, from, trigger, reason string, details map[string]string) error {
	req := pipeline.Request{Pipeline: p, Actor: pipeline.ActorKilnd, Trigger: trigger, Reason: reason, Details: details}
	return actionError(a.pipes.Rollback(ctx, req, from))
}

// Retrain runs on the spec's window plus every labelled feedback version
// (rows, and late labels joined with their inputs): their train parts
// train, their holdout parts gate the candidate on rows it never saw.
func (a monitorActions) Retrain(ctx context.Context, p, reason string, details map[string]string) (string, error) {
	spec := a.specs()[p]
	if spec == nil {
		return "", fmt.Errorf("%w: pipeline %s is not loaded", monitor.ErrActNever, p)
	}
	var all []storage.Dataset
	if err := a.store.View(func(tx *storage.Tx) (err error) { all, err = tx.Datasets(p); return err }); err != nil {
		return "", err
	}
	var ids []string
	for _, d := range pipeline.SpecWindow(all, spec.Window, a.now()) {
		ids = append(ids, d.ID)
	}
	for _, d := range all {
		if d.Kind == storage.KindFeedback && (d.Feedback == storage.FeedbackRows || d.Feedback == storage.FeedbackJoined) &&
			(d.State == storage.DatasetAccepted || d.State == storage.DatasetReleased) {
			ids = append(ids, d.ID)
		}
	}
	req := pipeline.Request{Pipeline: p, Actor: pipeline.ActorKilnd, Trigger: pipeline.TriggerMonitor, Reason: reason, Details: details}
	t, err := a.pipes.Retrain(ctx, req, ids)
	return t.Run, actionError(err)
}

func (a monitorActions) EnsureStandby(ctx context.Context, p string) error {
	_, err := a.pipes.EnsureStandby(ctx, p)
	return err
}

// actionError sorts the controller's refusals for the monitor: a cooldown
// or work in flight passes, so it tries again; a pin or a live model that
// changed meanwhile settles the alarm.
func actionError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pipeline.ErrCooldown), errors.Is(err, pipeline.ErrBusy):
		return fmt.Errorf("%w: %w", monitor.ErrActLater, err)
	case errors.Is(err, pipeline.ErrPinned), errors.Is(err, pipeline.ErrStale):
		return fmt.Errorf("%w: %w", monitor.ErrActNever, err)
	}
	return err
}
