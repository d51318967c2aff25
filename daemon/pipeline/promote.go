package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/storage"
)

// readyTimeout bounds how long a serving container may take to answer its
// readiness probe before the model is rejected (or, at restore, retried).
const readyTimeout = 2 * time.Minute

// startEval evaluates model in a worker, as part of flight f.
func (c *controller) startEval(ctx context.Context, f *flight, model string) {
	f.model = model
	wctx, cancel := context.WithCancel(ctx)
	prevCancel := f.cancel
	f.cancel = func() { cancel(); prevCancel() }
	var liveSrv Serving
	if c.live != nil {
		liveSrv = c.live.srv
	}
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		res := c.execEval(wctx, model, liveSrv)
		res.flight = f
		select {
		case c.results <- res:
		case <-ctx.Done():
		}
	}()
}

// execEval starts the candidate's serving container and scores it and the
// live model on the same holdout rows.
func (c *controller) execEval(ctx context.Context, model string, live Serving) evalResult {
	res := evalResult{model: model}
	spec := c.currentSpec()
	m, err := c.modelRecord(model)
	if err != nil {
		res.err = err
		return res
	}
	if m.State == storage.ModelCandidate {
		m.State = storage.ModelEvaluating
		if err := c.putModel(ctx, m, actorKilnd, "model.evaluating", nil); err != nil {
			res.err = err
			return res
		}
	}
	holdout, err := c.holdout(spec, m)
	if err != nil {
		res.err = err
		return res
	}
	srv, err := c.ensureServing(ctx, spec, m)
	if err != nil {
		res.err = fmt.Errorf("serve the candidate: %w", err)
		return res
	}
	res.cand = srv
	metric := spec.Evaluate.Metric
	preds, err := predict(ctx, srv, spec.Serve.Protocol, c.name, holdout.Rows)
	if err != nil {
		res.err = fmt.Errorf("score the candidate: %w", err)
		return res
	}
	if res.score, err = contract.Score(metric, holdout.Labels, preds); err != nil {
		res.err = err
		return res
	}
	res.rows = holdout.Len()
	if live != nil && live.Model() != model {
		lp, err := predict(ctx, live, spec.Serve.Protocol, c.name, holdout.Rows)
		if err != nil {
			// The live model failing to answer is no reason to keep a good
			// candidate out; say so and gate on the floor alone.
			c.log.Warn("live model did not answer the holdout; gating on the floor alone", "live", live.Model(), "err", err)
		} else if res.liveScore, err = contract.Score(metric, holdout.Labels, lp); err == nil {
			res.hasLive = true
		}
	}
	res.pass, res.reason = contract.Gate(metric, res.score, gateFloor(spec.Evaluate), spec.Evaluate.Gate.MinImprovement, res.liveScore, res.hasLive)
	return res
}

func gateFloor(e config.Evaluate) *float64 {
	if contract.LowerIsBetter(e.Metric) {
		return e.Gate.Max
	}
	return e.Gate.Min
}

// holdout gathers the rows a model is scored on: the spec's holdout file,
// else the holdout parts of the datasets its run trained on.
func (c *controller) holdout(spec *config.Pipeline, m storage.Model) (*contract.Labelled, error) {
	h := &contract.Labelled{}
	if spec.Data.Format != config.FormatCSV {
		return nil, fmt.Errorf("kilnd evaluates csv pipelines; %s is %s", c.name, spec.Data.Format)
	}
	if f := spec.Evaluate.Holdout.File; f != "" {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("evaluate.holdout.file: %w", err)
		}
		defer func() { _ = fh.Close() }() // opened read-only
		return h, h.AddCSV(fh, spec.Data.Label, f)
	}
	run, err := c.runRecord(m.Run)
	if err != nil {
		return nil, err
	}
	for _, id := range run.Datasets {
		d, err := c.dataset(id)
		if err != nil {
			return nil, err
		}
		if d.Holdout == nil {
			continue
		}
		f, err := c.deps.Store.OpenBlob(*d.Holdout)
		if err != nil {
			return nil, err
		}
		err = h.AddCSV(f, spec.Data.Label, id)
		_ = f.Close() // blob opened read-only
		if err != nil {
			return nil, err
		}
	}
	if h.Len() == 0 {
		return nil, fmt.Errorf("no holdout rows in %v (evaluate.holdout.fraction is too small for so little data?)", run.Datasets)
	}
	return h, nil
}

// ensureServing re-adopts the model's serving container when it still runs,
// else lays out its read-only model folder and starts one, and waits until
// it is ready.
func (c *controller) ensureServing(ctx context.Context, spec *config.Pipeline, m storage.Model) (Serving, error) {
	job, err := c.serveJob(ctx, spec, m)
	if err != nil {
		return nil, err
	}
	srv, err := c.deps.Runtime.AttachServing(ctx, job)
	if err != nil {
		if err := c.materialize(m, job.ModelDir); err != nil {
			return nil, err
		}
		if srv, err = c.deps.Runtime.StartServing(ctx, job); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := srv.Ready(rctx); err != nil {
		if ctx.Err() == nil {
			_ = srv.Stop(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("model %s not ready: %w", m.ID, err)
	}
	return srv, nil
}

func (c *controller) serveJob(ctx context.Context, spec *config.Pipeline, m storage.Model) (ServeJob, error) {
	image := m.ServeImage
	if image == "" {
		var err error
		if image, err = c.deps.Runtime.Resolve(ctx, spec.Serve.Image); err != nil {
			return ServeJob{}, fmt.Errorf("serving image %s: %w", spec.Serve.Image, err)
		}
	}
	dir := c.modelDir(m.ID)
	return ServeJob{
		ContainerID: containerID("serve", m.ID),
		Pipeline:    c.name,
		Model:       m.ID,
		Image:       image,
		ModelDir:    dir,
		Protocol:    spec.Serve.Protocol,
		Port:        spec.Serve.Port,
		Resources:   resources(spec.Serve.Resources),
		LogPath:     dir + ".serve.log",
	}, nil
}

// materialize lays the model's blobs out as its read-only /opt/ml/model.
func (c *controller) materialize(m storage.Model, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil // made before a restart; blobs are immutable
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	for _, f := range m.Files {
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := c.deps.Store.LinkBlob(f.Blob, dst); err != nil {
			return fmt.Errorf("model %s file %s: %w", m.ID, f.Path, err)
		}
	}
	return os.Rename(tmp, dir)
}

// evalDone promotes a candidate that passed the gate, or rejects it.
func (c *controller) evalDone(ctx context.Context, r evalResult) {
	if ctx.Err() != nil {
		return // kilnd stopping: the model stays evaluating and is re-evaluated
	}
	f := c.busy
	if f != r.flight {
		c.log.Warn("evaluation result of a flight no longer current; ignored", "model", r.model)
		return
	}
	reply := func(err error) {
		if f != nil && f.reply != nil {
			f.reply <- err
			f.reply = nil
		}
	}
	m, err := c.modelRecord(r.model)
	if err != nil {
		c.log.Error("read evaluated model", "model", r.model, "err", err)
		reply(err)
		c.finishFlight(ctx)
		return
	}
	metric := c.currentSpec().Evaluate.Metric
	if r.err == nil {
		m.Metrics = map[string]float64{metric: r.score, "holdout_rows": float64(r.rows)}
		if r.hasLive {
			m.Metrics["live_"+metric] = r.liveScore
		}
	}
	switch {
	case r.err != nil:
		r.reason = "evaluation failed: " + r.err.Error()
	case c.pinned != "":
		r.pass, r.reason = false, fmt.Sprintf("pipeline is pinned to %s; %s", c.pinned, r.reason)
	}
	if !r.pass {
		m.State, m.Reason = storage.ModelRejected, r.reason
		if err := c.putModel(ctx, m, actorKilnd, "model.rejected", map[string]string{"reason": r.reason}); err != nil {
			c.log.Error("record rejection", "model", m.ID, "err", err)
		}
		c.log.Info("candidate rejected", "model", m.ID, "reason", r.reason)
		if r.cand != nil && (c.live == nil || c.live.model != m.ID) && (c.standby == nil || c.standby.model != m.ID) {
			if err := r.cand.Stop(ctx); err != nil {
				c.log.Warn("stop rejected candidate", "model", m.ID, "err", err)
			}
		}
		reply(fmt.Errorf("%w: %s not promoted: %s", ErrConflict, m.ID, r.reason))
		c.finishFlight(ctx)
		return
	}
	m.Reason = r.reason
	err = c.promote(ctx, m, r.cand, actorKilnd, false)
	reply(err)
	c.finishFlight(ctx)
}

// promote makes m (served by srv) live: records first, then the flip. The
// previous live model becomes standby (kept warm unless serve.standby is
// stop), the previous standby retires.
func (c *controller) promote(ctx context.Context, m storage.Model, srv Serving, actor string, rollback bool) error {
	spec := c.currentSpec()
	oldLive, oldStandby := c.live, c.standby
	var dep storage.Deployment
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		nd := storage.Deployment{Pipeline: c.name, Model: m.ID, State: storage.DeployLive, Rollback: rollback}
		if oldLive != nil {
			nd.Previous = oldLive.deployment
		}
		var err error
		if dep, err = tx.CreateDeployment(nd); err != nil {
			return err
		}
		m.State = storage.ModelLive
		if err := tx.PutModel(m); err != nil {
			return err
		}
		if oldStandby != nil && oldStandby.model != m.ID {
			if err := endDeployment(tx, oldStandby, storage.ModelRetired); err != nil {
				return err
			}
		}
		if oldLive != nil && oldLive.model != m.ID {
			next, modelState := storage.DeployStandby, storage.ModelStandby
			if rollback {
				next, modelState = storage.DeployEnded, storage.ModelRolledBack
			}
			// A standby kept for rollback stays a standby deployment even
			// when serve.standby: stop leaves it without a container.
			if err := setDeployment(tx, oldLive, next, modelState); err != nil {
				return err
			}
		}
		kind := "model.promoted"
		if rollback {
			kind = "model.rolled_back_to"
		}
		details := map[string]string{"reason": m.Reason, "deployment": dep.ID}
		for k, v := range metricDetails(m.Metrics) {
			details[k] = v
		}
		_, err = tx.Append(storage.Event{Actor: actor, Kind: kind, Pipeline: c.name, Refs: []string{m.ID, dep.ID}, Details: details})
		return err
	})
	if err != nil {
		return fmt.Errorf("record promotion of %s: %w", m.ID, err)
	}
	c.endpoint.Flip(srv)
	c.setLive(&deployed{deployment: dep.ID, model: m.ID, srv: srv})
	c.log.Info("model live", "model", m.ID, "deployment", dep.ID, "reason", m.Reason)

	var stop []*deployed
	c.standby = nil
	if oldLive != nil && oldLive.model != m.ID {
		switch {
		case rollback:
			stop = append(stop, oldLive)
		case spec.Serve.Standby == config.StandbyStop:
			// Still the standby for a rollback, started again when needed.
			stop = append(stop, oldLive)
			c.standby = &deployed{deployment: oldLive.deployment, model: oldLive.model}
		default:
			c.standby = oldLive
		}
	}
	if oldStandby != nil && oldStandby.model != m.ID {
		stop = append(stop, oldStandby)
	}
	// Requests in flight finish on the old container; stop it once they
	// have, off the controller's loop.
	ep := c.endpoint
	go func() {
		for _, d := range stop {
			if d.srv == nil {
				continue
			}
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainGrace)
			if err := ep.WaitIdle(wctx, d.model); err != nil {
				c.log.Warn("requests still in flight on the replaced model; stopping it anyway", "model", d.model, "err", err)
			}
			cancel()
			if err := d.srv.Stop(context.WithoutCancel(ctx)); err != nil {
				c.log.Warn("stop replaced serving container", "model", d.model, "err", err)
			}
		}
	}()
	return nil
}

// drainGrace bounds how long a replaced container keeps running after a
// flip for requests already sent to it.
const drainGrace = time.Minute

func setDeployment(tx *storage.Tx, d *deployed, state storage.DeployState, model storage.ModelState) error {
	dep, err := tx.Deployment(d.deployment)
	if err != nil {
		return err
	}
	dep.State = state
	if err := tx.PutDeployment(dep); err != nil {
		return err
	}
	m, err := tx.Model(d.model)
	if err != nil {
		return err
	}
	m.State = model
	return tx.PutModel(m)
}

// endDeployment ends d's record and sets its model's state.
func endDeployment(tx *storage.Tx, d *deployed, model storage.ModelState) error {
	return setDeployment(tx, d, storage.DeployEnded, model)
}

func (c *controller) modelRecord(id string) (m storage.Model, err error) {
	err = c.deps.Store.View(func(tx *storage.Tx) error { m, err = tx.Model(id); return err })
	return m, err
}

func (c *controller) putModel(ctx context.Context, m storage.Model, actor, kind string, details map[string]string) error {
	return c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutModel(m); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: actor, Kind: kind, Pipeline: c.name, Refs: []string{m.ID}, Details: details})
		return err
	})
}

// promoteCmd is `kiln promote MODEL`: with force, serve it and flip at
// once; else evaluate it like a candidate and let the gate decide.
func (c *controller) promoteCmd(ctx context.Context, cmd command) error {
	if c.pinned != "" {
		return fmt.Errorf("%w: %s is pinned to %s; kiln unpin %s first", ErrConflict, c.name, c.pinned, c.name)
	}
	if c.busy != nil {
		return fmt.Errorf("%w: %s is busy with %s; try again when it is done", ErrConflict, c.name, c.busy.describe())
	}
	m, err := c.modelRecord(cmd.model)
	if err != nil {
		return err
	}
	if m.Pruned {
		return fmt.Errorf("%w: %s was pruned by retention; its files are gone", ErrConflict, m.ID)
	}
	if c.live != nil && c.live.model == m.ID {
		return fmt.Errorf("%w: %s is already live", ErrConflict, m.ID)
	}
	if cmd.force {
		srv, err := c.ensureServing(ctx, c.currentSpec(), m)
		if err != nil {
			return err
		}
		m.Reason = "promoted by " + cmd.actor + " with --force"
		return c.promote(ctx, m, srv, cmd.actor, false)
	}
	f := &flight{model: m.ID, cancel: func() {}, reply: cmd.reply}
	c.busy = f
	c.event(ctx, cmd.actor, "model.promote_requested", []string{m.ID}, nil)
	if m.State != storage.ModelCandidate {
		m.State = storage.ModelCandidate // evaluate again, the same way
		if err := c.putModel(ctx, m, cmd.actor, "model.reevaluating", nil); err != nil {
			c.busy = nil
			return err
		}
	}
	c.startEval(ctx, f, m.ID)
	return nil
}

// rollback flips back to the standby model, or to model `to`.
func (c *controller) rollback(ctx context.Context, to, actor, why string) error {
	if c.live == nil {
		return fmt.Errorf("%w: %s has no live model", ErrConflict, c.name)
	}
	target := c.standby
	if to != "" && (target == nil || target.model != to) {
		m, err := c.modelRecord(to)
		if err != nil {
			return err
		}
		srv, err := c.ensureServing(ctx, c.currentSpec(), m)
		if err != nil {
			return err
		}
		target = &deployed{model: m.ID, srv: srv}
	}
	if target == nil {
		return fmt.Errorf("%w: %s has no standby model to roll back to; name one with --to", ErrConflict, c.name)
	}
	if target.srv == nil {
		m, err := c.modelRecord(target.model)
		if err != nil {
			return err
		}
		if target.srv, err = c.ensureServing(ctx, c.currentSpec(), m); err != nil {
			return err
		}
	}
	m, err := c.modelRecord(target.model)
	if err != nil {
		return err
	}
	if c.standby != nil && c.standby.model == target.model {
		// The standby's own deployment ends; the rollback deployment replaces it.
		if err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error { return endStandby(tx, c.standby) }); err != nil {
			return err
		}
		c.standby = nil
	}
	m.Reason = why + " by " + actor
	bad := c.live.model
	if err := c.promote(ctx, m, target.srv, actor, true); err != nil {
		return err
	}
	c.log.Warn("rolled back", "from", bad, "to", m.ID, "actor", actor)
	return nil
}

func endStandby(tx *storage.Tx, d *deployed) error {
	dep, err := tx.Deployment(d.deployment)
	if err != nil {
		return err
	}
	dep.State = storage.DeployEnded
	return tx.PutDeployment(dep)
}

// pin holds the pipeline on model, making it live first when it is not.
func (c *controller) pin(ctx context.Context, model, actor string) error {
	if pipelineOf(model) != c.name {
		return fmt.Errorf("%w: model %s is not of pipeline %s", ErrConflict, model, c.name)
	}
	if c.live == nil || c.live.model != model {
		m, err := c.modelRecord(model)
		if err != nil {
			return err
		}
		srv, err := c.ensureServing(ctx, c.currentSpec(), m)
		if err != nil {
			return err
		}
		m.Reason = "pinned by " + actor
		if err := c.promote(ctx, m, srv, actor, false); err != nil {
			return err
		}
	}
	if err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutPin(storage.Pin{Pipeline: c.name, Model: model, Actor: actor}); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: actor, Kind: "pipeline.pinned", Pipeline: c.name, Refs: []string{model}})
		return err
	}); err != nil {
		return err
	}
	c.pinned = model
	return nil
}

func (c *controller) unpin(ctx context.Context, actor string) error {
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.DeletePin(c.name); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: actor, Kind: "pipeline.unpinned", Pipeline: c.name, Refs: []string{c.pinned}})
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s is not pinned", ErrConflict, c.name)
	}
	if err != nil {
		return err
	}
	c.pinned = ""
	return nil
}
