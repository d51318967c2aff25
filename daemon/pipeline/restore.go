package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// restore rebuilds the pipeline's live state from the store after a kilnd
// start: the endpoint serves the live model again (its container re-adopted
// or, when gone, started from the model's blobs), the standby is warm again,
// a run in flight is re-attached (or recorded lost), a queued run starts,
// and a candidate whose evaluation was cut off is evaluated again.
func (c *controller) restore(ctx context.Context) error {
	spec := c.currentSpec()
	ep, err := c.deps.Endpoints.Open(spec)
	if err != nil {
		return fmt.Errorf("open endpoint: %w", err)
	}
	c.endpoint = ep

	var deps []storage.Deployment
	var runs []storage.Run
	var models []storage.Model
	var pin storage.Pin
	var pinned bool
	err = c.deps.Store.View(func(tx *storage.Tx) error {
		var err error
		if deps, err = tx.Deployments(c.name); err != nil {
			return err
		}
		if runs, err = tx.Runs(c.name); err != nil {
			return err
		}
		if models, err = tx.Models(c.name); err != nil {
			return err
		}
		pin, pinned, err = tx.Pin(c.name)
		return err
	})
	if err != nil {
		return err
	}
	if pinned {
		c.pinned = pin.Model
	}

	var errs []error
	for _, dep := range deps {
		if dep.State != storage.DeployLive && dep.State != storage.DeployStandby {
			continue
		}
		if dep.State == storage.DeployStandby && spec.Serve.Standby == config.StandbyStop {
			// Started on rollback or by EnsureStandby; re-adopted when one
			// was warm across the restart, so the next switch stops it.
			c.standby = &deployed{deployment: dep.ID, model: dep.Model}
			if m, err := c.modelRecord(dep.Model); err == nil {
				if job, err := c.serveJob(ctx, spec, m); err == nil {
					if srv, err := c.deps.Runtime.AttachServing(ctx, job); err == nil {
						c.standby.srv = srv
					}
				}
			}
			continue
		}
		m, err := c.modelRecord(dep.Model)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		srv, err := c.ensureServing(ctx, spec, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s deployment %s of %s: %w", dep.State, dep.ID, dep.Model, err))
			c.event(ctx, actorKilnd, "deployment.lost", []string{dep.ID, dep.Model}, map[string]string{"reason": err.Error()})
			continue
		}
		d := &deployed{deployment: dep.ID, model: dep.Model, srv: srv}
		if dep.State == storage.DeployLive {
			c.endpoint.Flip(srv)
			c.setLive(d)
			c.log.Info("serving again after start", "model", dep.Model, "deployment", dep.ID)
		} else {
			c.standby = d
		}
	}

	c.endpoint.Start()

	// At most one run is in flight per pipeline and one waits: a running
	// run is re-attached; queued runs start (the oldest) or wait (the next);
	// any more (from an older kilnd) are recorded lost rather than run twice.
	for _, r := range runs {
		if r.State != storage.RunRunning {
			continue
		}
		if c.busy != nil {
			r.State, r.Reason = storage.RunFailed, "superseded at restore by "+c.busy.run
			errs = append(errs, c.putRun(ctx, r, "run.failed", map[string]string{"reason": r.Reason}))
			continue
		}
		c.log.Info("resuming run after start", "run", r.ID)
		c.launch(ctx, r, true, 0)
	}
	for _, r := range runs {
		if r.State != storage.RunQueued {
			continue
		}
		switch {
		case c.busy == nil:
			c.log.Info("starting queued run after start", "run", r.ID)
			c.launch(ctx, r, false, 0)
		case c.queued == nil:
			req := kilndRequest(c.name, r.Labels["trigger"], r.Labels["reason"])
			if by := r.Labels["requested_by"]; by != "" {
				req.Actor = by // its rank in the queue
			}
			c.queued = &queuedRun{run: r.ID, req: req}
		default:
			r.State, r.Reason, r.Finished = storage.RunCancelled, "superseded at restore by "+c.queued.run, c.now()
			errs = append(errs, c.putRun(ctx, r, "run.cancelled", map[string]string{"reason": r.Reason}))
		}
	}
	if c.busy == nil {
		for i := len(models) - 1; i >= 0; i-- {
			m := models[i]
			if m.State != storage.ModelCandidate && m.State != storage.ModelEvaluating {
				continue
			}
			if c.busy == nil {
				c.log.Info("evaluating again after start", "model", m.ID)
				f := &flight{model: m.ID, req: kilndRequest(c.name, "restore", "evaluation cut off by a kilnd stop"), cancel: func() {}}
				c.busy = f
				c.startEval(ctx, f, m.ID)
				continue
			}
			// Older candidates lost their turn; the newest one decides.
			m.State, m.Reason = storage.ModelRejected, "superseded by "+c.busy.model+" across a restart"
			errs = append(errs, c.putModel(ctx, m, actorKilnd, "model.rejected", map[string]string{"reason": m.Reason}))
		}
	}
	c.removeStrays(ctx, spec, models)
	return errors.Join(errs...)
}

// removeStrays removes the serving containers of models whose records say
// they serve no more (retired, rejected, rolled back): a kilnd killed
// between a switch's record and the stop of the container it replaced
// leaves that container running, or stopped and not deleted, and nothing
// else would ever stop it. Adopting a gone container is one failed lookup,
// and adopting a stopped one deletes it.
func (c *controller) removeStrays(ctx context.Context, spec *config.Pipeline, models []storage.Model) {
	for _, m := range models {
		if m.State != storage.ModelRetired && m.State != storage.ModelRejected && m.State != storage.ModelRolledBack || c.serves(m.ID) {
			continue
		}
		job, err := c.serveJob(ctx, spec, m)
		if err != nil {
			continue
		}
		srv, err := c.deps.Runtime.AttachServing(ctx, job)
		if err != nil {
			continue // gone, or deleted just now
		}
		c.log.Info("stopping the serving container of a model that serves no more", "model", m.ID, "state", m.State)
		if err := srv.Stop(context.WithoutCancel(ctx)); err != nil {
			c.log.Warn("stop a stray serving container", "model", m.ID, "err", err)
		}
	}
}
