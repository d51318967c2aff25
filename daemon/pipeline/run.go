package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// trainable reports whether d is data a run on the spec's window may train
// on: admitted data, not suspect (a rollback flagged it until a release).
func trainable(d storage.Dataset) bool {
	return d.Kind == storage.KindData && admitted(d) && d.HasTrainPart() && d.Suspect == ""
}

func admitted(d storage.Dataset) bool {
	return d.State == storage.DatasetAccepted || d.State == storage.DatasetReleased
}

// window picks the datasets a new run on the spec's window trains on,
// oldest first.
func window(all []storage.Dataset, w config.Window, now time.Time) []storage.Dataset {
	var ds []storage.Dataset
	for _, d := range all {
		if trainable(d) {
			ds = append(ds, d)
		}
	}
	switch {
	case w.Last > 0 && len(ds) > w.Last:
		ds = ds[len(ds)-w.Last:]
	case w.Days > 0:
		cut := now.Add(-time.Duration(w.Days) * 24 * time.Hour)
		ds = slices.DeleteFunc(ds, func(d storage.Dataset) bool { return d.Created.Before(cut) })
	}
	return ds
}

// newRows counts the rows of trainable datasets no run has trained on yet.
func (c *controller) newRows() (int64, error) {
	var n int64
	err := c.deps.Store.View(func(tx *storage.Tx) error {
		runs, err := tx.Runs(c.name)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range runs {
			// A cancelled run's data still waits for a run that uses it. A
			// failed run's data is not new: training on it again at once
			// fails the same way (train.retries is for that); it stays in
			// the window of the run that new data starts.
			if r.State == storage.RunCancelled {
				continue
			}
			for _, d := range r.Datasets {
				seen[d] = true
			}
		}
		ds, err := tx.Datasets(c.name)
		for _, d := range ds {
			if trainable(d) && !seen[d.ID] {
				n += d.Rows
			}
		}
		return err
	})
	return n, err
}

// startRun records a run for req over the spec's window (or, with
// explicit, over datasets) and starts it; while a flight is in progress the
// run waits in the queue, which holds one: a later request replaces the
// queued one when it ranks at least as high (same trigger, or see rank),
// else it is refused with ErrBusy. The window is taken when the request is
// recorded.
func (c *controller) startRun(ctx context.Context, req Request, datasets []string, explicit bool) (Ticket, error) {
	if c.busy != nil && c.queued != nil && rank(req) < rank(c.queued.req) {
		q := c.queued
		return Ticket{}, fmt.Errorf("%w: %s is busy with %s, and run %s (%s by %s) waits behind it; try again when they are done",
			ErrBusy, c.name, c.busy.describe(), q.run, q.req.Trigger, q.req.Actor)
	}
	spec := c.currentSpec()
	var run storage.Run
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		var ids, leftOut []string
		if explicit {
			var err error
			if ids, leftOut, err = explicitWindow(tx, c.name, datasets); err != nil {
				return err
			}
		} else {
			all, err := tx.Datasets(c.name)
			if err != nil {
				return err
			}
			for _, d := range window(all, spec.Window, c.now()) {
				ids = append(ids, d.ID)
			}
		}
		if len(ids) == 0 {
			return errNoData
		}
		labels := map[string]string{"trigger": req.Trigger, "requested_by": req.Actor}
		if req.Reason != "" {
			labels["reason"] = req.Reason
		}
		if explicit {
			labels["window"] = "explicit"
		}
		var err error
		run, err = tx.CreateRun(storage.Run{Pipeline: c.name, State: storage.RunQueued, Datasets: ids, Labels: labels})
		if err != nil {
			return err
		}
		extra := map[string]string{"datasets": strings.Join(ids, ",")}
		if len(leftOut) > 0 {
			extra["suspect_left_out"] = strings.Join(leftOut, ",")
		}
		if explicit {
			extra["window"] = "explicit"
		}
		if c.busy != nil {
			extra["behind"] = c.busy.describe()
		}
		_, err = tx.Append(storage.Event{Actor: req.Actor, Kind: "run.queued", Pipeline: c.name, Refs: []string{run.ID}, Details: req.details(extra)})
		return err
	})
	if errors.Is(err, errNoData) {
		return Ticket{}, fmt.Errorf("%w: %s has no admitted data to train on (suspect versions stay out until kiln datasets release)", ErrConflict, c.name)
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("queue a run of %s: %w", c.name, err)
	}
	crashpoint.Hit("train.after-queued")
	c.log.Debug("run queued", // the run.queued event is the journal's line
		"run", run.ID, "trigger", req.Trigger, "actor", req.Actor, "datasets", len(run.Datasets))
	if c.busy == nil {
		c.launch(ctx, run, false, 0)
		return Ticket{Run: run.ID}, nil
	}
	if old := c.queued; old != nil {
		if err := c.cancelRun(ctx, old.run, req, "replaced in the queue by "+run.ID); err != nil {
			c.log.Error("cancel a replaced queued run", "run", old.run, "err", err)
		}
	}
	c.queued = &queuedRun{run: run.ID, req: req}
	return Ticket{Run: run.ID, Queued: true, Behind: c.busy.describe()}, nil
}

// rank orders requests competing for the one queue slot: a person's first,
// then the monitor's (a decision on labelled feedback), then kilnd's own
// triggers. Equal ranks replace each other: the newer request knows more.
func rank(r Request) int {
	switch {
	case !r.Automatic():
		return 3
	case r.Trigger == TriggerMonitor || r.Trigger == TriggerProbation:
		return 2
	}
	return 1
}

// explicitWindow checks the versions of an explicit window (Retrain): data
// versions and labelled feedback (rows or joined) of this pipeline, admitted.
// Suspect ones are left out (and listed), as from any window.
func explicitWindow(tx *storage.Tx, pipeline string, ids []string) (keep, leftOut []string, err error) {
	type ver struct {
		id string
		n  uint64
	}
	var vs []ver
	for _, id := range ids {
		p, letter, n, err := storage.ParseID(id)
		if err != nil {
			return nil, nil, err
		}
		if p != pipeline || letter != storage.LetterDataset {
			return nil, nil, fmt.Errorf("window version %s: not a dataset of %s: %w", id, pipeline, storage.ErrInvalid)
		}
		if slices.ContainsFunc(vs, func(v ver) bool { return v.id == id }) {
			continue
		}
		d, err := tx.Dataset(id)
		if err != nil {
			return nil, nil, fmt.Errorf("window version %s: %w", id, err)
		}
		if !admitted(d) {
			return nil, nil, fmt.Errorf("window version %s is %s: %w", id, d.State, storage.ErrInvalid)
		}
		switch {
		case d.Kind == storage.KindData && !d.HasTrainPart():
			return nil, nil, fmt.Errorf("window version %s has no train part: %w", id, storage.ErrInvalid)
		case d.Kind == storage.KindFeedback && d.Feedback != storage.FeedbackRows && d.Feedback != storage.FeedbackJoined:
			return nil, nil, fmt.Errorf("window version %s is feedback of type %q; only labelled rows (rows, joined) train: %w", id, d.Feedback, storage.ErrInvalid)
		}
		if d.Suspect != "" {
			leftOut = append(leftOut, id)
			continue
		}
		vs = append(vs, ver{id, n})
	}
	slices.SortFunc(vs, func(a, b ver) int { return cmp.Compare(a.n, b.n) })
	for _, v := range vs {
		keep = append(keep, v.id)
	}
	return keep, leftOut, nil
}

var errNoData = errors.New("no trainable data")

// launch runs execRun in a worker for run, as the pipeline's flight.
func (c *controller) launch(ctx context.Context, run storage.Run, attach bool, attempt int) {
	wctx, cancel := context.WithCancel(ctx)
	req := kilndRequest(c.name, run.Labels["trigger"], run.Labels["reason"])
	f := &flight{run: run.ID, req: req, cancel: cancel, attempt: attempt}
	c.busy = f
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		res := c.execRun(wctx, f, run, attach)
		res.attempt, res.flight = attempt, f
		select {
		case c.results <- res:
		case <-ctx.Done():
		}
	}()
}

// execRun takes a queued (or, with attach, running) run to its end. It
// persists each state before acting on it. When ctx ends first (kilnd
// stopping) it returns with ctx's error and leaves the container running.
func (c *controller) execRun(ctx context.Context, f *flight, run storage.Run, attach bool) runResult {
	spec := c.currentSpec()
	job, err := c.trainJob(ctx, spec, run)
	if err != nil {
		return runResult{run: run, err: err}
	}
	var tr Training
	again := ""
	if attach {
		tr, err = c.deps.Runtime.AttachTraining(ctx, job)
		switch {
		case errors.Is(err, runtime.ErrNotFound) && run.Container == job.ContainerID && ctx.Err() == nil:
			// Gone: never created (kilnd died between recording the run
			// as running and starting its container) or finished and
			// removed before its end was recorded. Its outcome is unknown,
			// so the run trains again on its window: failing it would lose
			// a run nothing was wrong with (found by the crash harness).
			// Only under the name the run recorded: a kilnd that names
			// containers otherwise (an upgrade) cannot tell a gone
			// container from one it no longer finds, which may still run.
			again = "its container was gone across a kilnd restart: " + err.Error()
			c.log.Warn("training again", "run", run.ID, "reason", again)
			attach = false
		case err != nil:
			return runResult{run: run, err: fmt.Errorf("lost across a kilnd restart: %w", err)}
		}
	}
	if !attach {
		if spec.Train.GPUs.Count > 0 {
			// A lease this run holds is stale (kilnd died between leasing
			// and starting the container): counted as taken, it would keep
			// the run waiting for its own GPU.
			if err := c.deps.GPUs.Release(ctx, run.ID); err != nil {
				return runResult{run: run, err: err}
			}
			if job.GPUs, err = c.waitForGPUs(ctx, spec, &run); err != nil {
				return runResult{run: run, err: err}
			}
		}
		if err := c.prepareWorkspace(run, job); err != nil {
			return runResult{run: run, err: err}
		}
		run.State, run.Started = storage.RunRunning, c.now()
		run.Container, run.Image, run.LogPath = job.ContainerID, job.Image, job.LogPath
		details := map[string]string{"image": job.Image, "container": job.ContainerID}
		if again != "" {
			details["again"] = again
		}
		if err := c.putRun(ctx, run, "run.started", details); err != nil {
			return runResult{run: run, err: err}
		}
		crashpoint.Hit("train.after-run-persisted")
		if tr, err = c.deps.Runtime.StartTraining(ctx, job); err != nil {
			return runResult{run: run, err: fmt.Errorf("start training container: %w", err)}
		}
		crashpoint.Hit("train.after-container-start")
	}
	if !f.setTraining(tr) {
		_ = tr.Cancel(context.WithoutCancel(ctx))
		return runResult{run: run, err: errors.New("cancelled")}
	}
	res, err := tr.Wait(ctx)
	if err != nil {
		return runResult{run: run, err: err}
	}
	if why := failure(res); why != "" {
		return runResult{run: run, err: errors.New(why)}
	}
	if err := checkModelSize(res.ModelDir, spec.Train.MaxModelSize); err != nil {
		return runResult{run: run, err: err}
	}
	model, err := c.collectModel(ctx, run, res)
	crashpoint.Hit("train.after-model-blobs")
	return runResult{run: run, model: model, err: err}
}

func failure(res TrainResult) string {
	switch {
	case res.TimedOut:
		return "training timed out (train.timeout)"
	case res.OOM:
		return "training was killed for running out of memory (train.resources.memory)"
	case res.ExitCode != 0 && res.Failure != "":
		return fmt.Sprintf("trainer exited %d: %s", res.ExitCode, firstLine(res.Failure))
	case res.ExitCode != 0:
		return fmt.Sprintf("trainer exited %d", res.ExitCode)
	}
	return ""
}

// trainJob resolves what the container needs; it is the same for a start
// and a re-attach, so the names agree across restarts.
func (c *controller) trainJob(ctx context.Context, spec *config.Pipeline, run storage.Run) (TrainJob, error) {
	image := run.Image
	if image == "" {
		var err error
		if image, err = c.deps.Runtime.Resolve(ctx, spec.Train.Image); err != nil {
			return TrainJob{}, fmt.Errorf("training image %s: %w", spec.Train.Image, err)
		}
	}
	ws := c.runDir(run.ID)
	hp := maps.Clone(spec.Train.Hyperparameters)
	if hp == nil {
		hp = map[string]string{}
	}
	if _, ok := hp["label"]; !ok && spec.Data.Label != "" {
		hp["label"] = spec.Data.Label // the example trainer's contract
	}
	channels := map[string]string{}
	for _, ch := range spec.Train.Channels {
		channels[ch] = filepath.Join(ws, "channels", ch)
	}
	digest := RunDigest(run)
	ctr := c.containerID(runtime.KindTrain, run.ID, digest)
	return TrainJob{
		ContainerID:     ctr,
		Installation:    c.installation(),
		Digest:          digest,
		Pipeline:        c.name,
		Run:             run.ID,
		Image:           image,
		Workspace:       ws,
		Channels:        channels,
		ContentType:     channelContentType(spec.Data.Format),
		Hyperparameters: hp,
		Env:             map[string]string{"TRAINING_JOB_NAME": ctr, "KILN_RUN_ID": run.ID, "KILN_DATASET": strings.Join(run.Datasets, ",")},
		Resources:       resources(spec.Train.Resources),
		Timeout:         spec.Train.Timeout.Duration,
		LogPath:         filepath.Join(ws, "train.log"),
	}, nil
}

func resources(r config.Resources) Resources {
	return Resources{Memory: int64(r.Memory), CPUs: r.CPUs, Pids: int64(r.PIDs)}
}

// waitForGPUs leases the GPUs the spec asks for, waiting (queued, with the
// reason on the run) while none fit. It returns their CDI names and records
// their UUIDs on the run (lineage names the GPU, not its index, which a
// reboot or a swapped card can give another GPU).
func (c *controller) waitForGPUs(ctx context.Context, spec *config.Pipeline, run *storage.Run) ([]string, error) {
	lastReason := ""
	for {
		leased, err := c.deps.GPUs.Lease(ctx, c.name, run.ID, spec.Train.GPUs.Count, int64(spec.Train.GPUs.MinFree))
		if err == nil {
			names := make([]string, len(leased))
			uuids := make([]string, len(leased))
			for i, g := range leased {
				names[i], uuids[i] = g.CDIName, g.UUID
			}
			run.GPU = strings.Join(uuids, ",")
			return names, nil
		}
		if why := err.Error(); why != lastReason {
			lastReason = why
			run.Reason = "waiting for a GPU: " + why
			if err := c.putRun(ctx, *run, "run.waiting", map[string]string{"reason": why}); err != nil {
				return nil, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// collectModel stores /opt/ml/model as blobs and records the candidate.
func (c *controller) collectModel(ctx context.Context, run storage.Run, res TrainResult) (*storage.Model, error) {
	var files []storage.FileRef
	err := filepath.WalkDir(res.ModelDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path) //nolint:gosec // G122: the run's own workspace, and the trainer that wrote it has exited: nothing left to swap in a symlink
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // opened read-only
		ref, err := c.deps.Store.PutBlob(ctx, f)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(res.ModelDir, path)
		files = append(files, storage.FileRef{Path: filepath.ToSlash(rel), Blob: ref})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("collect /opt/ml/model: %w", err)
	}
	if len(files) == 0 {
		return nil, errors.New("the trainer exited 0 but wrote no model to /opt/ml/model")
	}
	return &storage.Model{Pipeline: c.name, Run: run.ID, State: storage.ModelCandidate, Files: files,
		Trainer: trainerMetrics(filepath.Join(res.OutputDir, "metrics.json"))}, nil
}

// trainerMetrics reads the numbers of /opt/ml/output/metrics.json; a
// missing or odd file is not a failure, the trainer's metrics are advisory.
func trainerMetrics(path string) map[string]float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var raw map[string]any
	if json.Unmarshal(b, &raw) != nil {
		return nil
	}
	out := map[string]float64{}
	for k, v := range raw {
		switch v := v.(type) {
		case float64:
			out[k] = v
		case string:
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				out[k] = f
			}
		}
	}
	return out
}

func (c *controller) putRun(ctx context.Context, run storage.Run, kind string, details map[string]string) error {
	return c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutRun(run); err != nil {
			return err
		}
		if run.State == storage.RunRunning && run.GPU != "" {
			// Lineage names the GPUs a run trained on (gpu:<uuid>
			// -ran_on-> run); the lease comes after the run is created.
			for _, u := range strings.Split(run.GPU, ",") {
				if err := tx.Link("gpu:"+u, run.ID, storage.EdgeRanOn); err != nil {
					return err
				}
			}
		}
		_, err := tx.Append(storage.Event{Actor: actorKilnd, Kind: kind, Pipeline: c.name, Refs: []string{run.ID}, Details: details})
		return err
	})
}

// runDone records how a run ended and moves its candidate to evaluation.
func (c *controller) runDone(ctx context.Context, r runResult) {
	if ctx.Err() != nil {
		return // kilnd stopping: the run stays as recorded and is re-adopted
	}
	if err := c.deps.GPUs.Release(ctx, r.run.ID); err != nil {
		c.log.Warn("release gpu lease", "run", r.run.ID, "err", err)
	}
	run := r.run
	if cur, err := c.runRecord(run.ID); err == nil {
		run = cur // the worker's copy may predate the running state
	}
	if run.State == storage.RunCancelled || c.busy != r.flight {
		// Cancelled: cancelRun recorded it and freed the pipeline already.
		return
	}
	run.Finished = c.now()
	if r.err != nil {
		run.State, run.Reason = storage.RunFailed, r.err.Error()
		if err := c.putRun(ctx, run, "run.failed", map[string]string{"reason": run.Reason}); err != nil {
			c.log.Error("record failed run", "run", run.ID, "err", err)
		}
		c.log.Debug("run failed", // the run.failed event is the journal's line
			"run", run.ID, "reason", run.Reason)
		c.busy = nil
		if r.attempt < c.currentSpec().Train.Retries {
			c.log.Info("retrying run", "attempt", r.attempt+1)
			c.retry(ctx, run, r.attempt+1)
			return
		}
		c.finishFlight(ctx)
		return
	}
	run.State, run.Reason = storage.RunSucceeded, ""
	// The model records the serving image's digest now, so it always
	// serves with what it was evaluated with, and image GC keeps it.
	if digest, err := c.deps.Runtime.Resolve(ctx, c.currentSpec().Serve.Image); err == nil {
		r.model.ServeImage = digest
	}
	var model storage.Model
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutRun(run); err != nil {
			return err
		}
		var err error
		if model, err = tx.CreateModel(*r.model); err != nil {
			return err
		}
		_, err = tx.Append(storage.Event{Actor: actorKilnd, Kind: "model.candidate", Pipeline: c.name,
			Refs: []string{run.ID, model.ID}, Details: metricDetails(model.Trainer)})
		return err
	})
	if err != nil {
		c.log.Error("record candidate", "run", run.ID, "err", err)
		c.finishFlight(ctx)
		return
	}
	crashpoint.Hit("train.after-candidate")
	c.log.Info("run succeeded; evaluating its model", "run", run.ID, "model", model.ID)
	c.busy.model = model.ID
	c.startEval(ctx, c.busy, model.ID)
}

// retry queues a new run over the same window after a failure.
func (c *controller) retry(ctx context.Context, failed storage.Run, attempt int) {
	var run storage.Run
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		var err error
		labels := maps.Clone(failed.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels["trigger"], labels["retry_of"] = TriggerRetry, failed.ID
		run, err = tx.CreateRun(storage.Run{Pipeline: c.name, State: storage.RunQueued, Datasets: failed.Datasets, Labels: labels})
		if err != nil {
			return err
		}
		_, err = tx.Append(storage.Event{Actor: actorKilnd, Kind: "run.queued", Pipeline: c.name, Refs: []string{run.ID, failed.ID},
			Details: map[string]string{"trigger": TriggerRetry, "attempt": strconv.Itoa(attempt)}})
		return err
	})
	if err != nil {
		c.log.Error("queue retry", "err", err)
		c.finishFlight(ctx)
		return
	}
	c.launch(ctx, run, false, attempt)
}

func (c *controller) runRecord(id string) (r storage.Run, err error) {
	err = c.deps.Store.View(func(tx *storage.Tx) error { r, err = tx.Run(id); return err })
	return r, err
}

// finishFlight frees the pipeline and starts what waited: the queued run,
// else a new-data trigger that arrived meanwhile.
func (c *controller) finishFlight(ctx context.Context) {
	if c.busy != nil && c.busy.cancel != nil {
		c.busy.cancel()
	}
	c.busy = nil
	if q := c.queued; q != nil {
		c.queued = nil
		run, err := c.runRecord(q.run)
		if err != nil {
			c.log.Error("read the queued run", "run", q.run, "err", err)
		} else if run.State == storage.RunQueued {
			c.log.Info("starting the queued run", "run", run.ID, "trigger", q.req.Trigger)
			c.launch(ctx, run, false, 0)
			return
		}
	}
	if c.pending {
		c.pending = false
		c.maybeTrain(ctx)
	}
}

// cancelRun stops a run of this pipeline, running or queued. why, when
// given, says why kilnd cancels it (else the request's reason).
func (c *controller) cancelRun(ctx context.Context, id string, req Request, why string) error {
	if pipelineOf(id) != c.name {
		return fmt.Errorf("%w: run %s is not of pipeline %s", ErrConflict, id, c.name)
	}
	run, err := c.runRecord(id)
	if err != nil {
		return err
	}
	if run.State != storage.RunQueued && run.State != storage.RunRunning {
		return fmt.Errorf("%w: run %s is %s", ErrConflict, id, run.State)
	}
	if c.busy != nil && c.busy.run == id {
		if tr := c.busy.markCancelled(); tr != nil {
			if err := tr.Cancel(ctx); err != nil {
				return fmt.Errorf("stop the training container of %s: %w", id, err)
			}
		}
	}
	if why == "" {
		why = req.Reason
	}
	run.State, run.Reason, run.Finished = storage.RunCancelled, "cancelled by "+req.Actor, c.now()
	var extra map[string]string
	if why != "" {
		run.Reason += ": " + why
		extra = map[string]string{"reason": why}
	}
	err = c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutRun(run); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: req.Actor, Kind: "run.cancelled", Pipeline: c.name, Refs: []string{id}, Details: req.details(extra)})
		return err
	})
	if err != nil {
		return err
	}
	if c.queued != nil && c.queued.run == id {
		c.queued = nil
	}
	if c.busy != nil && c.busy.run == id {
		if err := c.deps.GPUs.Release(ctx, id); err != nil {
			c.log.Warn("release gpu lease", "run", id, "err", err)
		}
		c.finishFlight(ctx)
	}
	return nil
}

func metricDetails(m map[string]float64) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = strconv.FormatFloat(v, 'g', 6, 64)
	}
	return out
}
