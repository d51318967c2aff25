package pipeline

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// switchOp describes one switch of the live model.
type switchOp struct {
	req Request
	// rollback: the replaced live model becomes rolled_back (not standby).
	rollback bool
	// details are added to the event's (after the request's).
	details map[string]string
	// inTx runs in the switch's transaction once the new deployment exists
	// (a rollback flags suspect data there, so both land or neither).
	inTx func(tx *storage.Tx, dep storage.Deployment) error
}

// promote makes m (served by srv) live: records first, then the flip. The
// previous live model becomes standby (kept warm unless serve.standby is
// stop), or rolled_back for a rollback; the previous standby retires.
// Afterwards an evaluation in flight that scored against the replaced
// model is invalidated (it runs again against m).
func (c *controller) promote(ctx context.Context, m storage.Model, srv Serving, op switchOp) error {
	spec := c.currentSpec()
	oldLive, oldStandby := c.live, c.standby
	var dep storage.Deployment
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		nd := storage.Deployment{Pipeline: c.name, Model: m.ID, State: storage.DeployLive, Rollback: op.rollback}
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
			if err := endDeployment(tx, oldStandby, storage.ModelRetired, ""); err != nil {
				return err
			}
		}
		refs := []string{m.ID, dep.ID}
		if oldLive != nil && oldLive.model != m.ID {
			next, modelState, why := storage.DeployStandby, storage.ModelStandby, ""
			if op.rollback {
				next, modelState = storage.DeployEnded, storage.ModelRolledBack
				why = fmt.Sprintf("rolled back to %s by %s (%s)", m.ID, op.req.Actor, op.req.Trigger)
				if op.req.Reason != "" {
					why += ": " + op.req.Reason
				}
				refs = append(refs, oldLive.model)
			}
			// A standby kept for rollback stays a standby deployment even
			// when serve.standby: stop leaves it without a container.
			if err := setDeployment(tx, oldLive, next, modelState, why); err != nil {
				return err
			}
		}
		if op.inTx != nil {
			if err := op.inTx(tx, dep); err != nil {
				return err
			}
		}
		kind := "model.promoted"
		if op.rollback {
			kind = "model.rolled_back_to"
		}
		details := op.req.details(map[string]string{"deployment": dep.ID})
		if _, ok := details["reason"]; !ok && m.Reason != "" {
			details["reason"] = m.Reason
		}
		if oldLive != nil {
			details["from"] = oldLive.model
		}
		maps.Copy(details, metricDetails(m.Metrics))
		maps.Copy(details, op.details)
		_, err = tx.Append(storage.Event{Actor: op.req.Actor, Kind: kind, Pipeline: c.name, Refs: refs, Details: details})
		return err
	})
	if err != nil {
		return fmt.Errorf("record promotion of %s: %w", m.ID, err)
	}
	crashpoint.Hit(op.point("after-persist"))
	c.endpoint.Flip(srv)
	c.setLive(&deployed{deployment: dep.ID, model: m.ID, srv: srv})
	crashpoint.Hit(op.point("after-flip"))
	c.log.Debug("model live", // the model.promoted event is the journal's line
		"model", m.ID, "deployment", dep.ID, "reason", m.Reason, "actor", op.req.Actor, "trigger", op.req.Trigger)

	var stop []*deployed
	c.standby = nil
	if oldLive != nil && oldLive.model != m.ID {
		switch {
		case op.rollback:
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
	// have, off the controller's loop. The loop has the last word (stopDone):
	// a model serving again by then (a pin, a rollback to it) keeps it.
	ep := c.endpoint
	for _, d := range stop {
		if d.srv == nil {
			continue
		}
		c.workers.Add(1)
		go func() {
			defer c.workers.Done()
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainGrace)
			if err := ep.WaitIdle(wctx, d.model); err != nil {
				c.log.Warn("requests still in flight on the replaced model; stopping it anyway", "model", d.model, "err", err)
			}
			cancel()
			select {
			case c.results <- stopReplaced{d}:
			case <-ctx.Done():
			}
		}()
	}
	c.invalidateEval(m.ID)
	return nil
}

// point names a crash point of this switch: promote.X or rollback.X.
func (op switchOp) point(x string) string {
	if op.rollback {
		return "rollback." + x
	}
	return "promote." + x
}

// stopReplaced asks the loop to stop a replaced model's container once
// its requests are done.
type stopReplaced struct{ d *deployed }

func (c *controller) stopDone(ctx context.Context, r stopReplaced) {
	warm := (c.live != nil && c.live.model == r.d.model) || (c.standby != nil && c.standby.model == r.d.model && c.standby.srv != nil)
	if warm || (c.busy != nil && c.busy.model == r.d.model) || (c.starting != nil && c.starting.model == r.d.model) {
		return // serving (or being evaluated) again: keep it
	}
	crashpoint.Hit("promote.before-stop-replaced")
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		if err := r.d.srv.Stop(context.WithoutCancel(ctx)); err != nil {
			c.log.Warn("stop replaced serving container", "model", r.d.model, "err", err)
		}
	}()
}

// invalidateEval marks an evaluation in flight stale when it scores its
// candidate against a model that is no longer live: its verdict would
// compare the candidate with the wrong model (after a rollback, with the
// very model rolled back). The worker is stopped and evalDone runs the
// evaluation again against the new live model.
func (c *controller) invalidateEval(live string) {
	f := c.busy
	if f == nil || !f.evaluating || f.against == live || f.model == live {
		return
	}
	from := f.against
	if from == "" {
		from = "none"
	}
	f.stale = fmt.Sprintf("the live model changed from %s to %s during the evaluation of %s", from, live, f.model)
	if f.evalCancel != nil {
		f.evalCancel()
	}
}

// drainGrace bounds how long a replaced container keeps running after a
// flip for requests already sent to it.
const drainGrace = time.Minute

// setDeployment sets d's record and its model's state (and, when why is
// given, the model's reason).
func setDeployment(tx *storage.Tx, d *deployed, state storage.DeployState, model storage.ModelState, why string) error {
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
	if why != "" {
		m.Reason = why
	}
	return tx.PutModel(m)
}

// endDeployment ends d's record and sets its model's state.
func endDeployment(tx *storage.Tx, d *deployed, model storage.ModelState, why string) error {
	return setDeployment(tx, d, storage.DeployEnded, model, why)
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

// promoteCmd is `kiln promote MODEL` (or automation's promotion): with
// force, serve it and flip at once; else evaluate it like a candidate and
// let the gate decide. A rolled_back model is never promoted automatically
// and never evaluated again; only a person's --force brings it back.
func (c *controller) promoteCmd(ctx context.Context, cmd command) error {
	if err := c.guard(cmd.req, opPromote); err != nil {
		return err
	}
	if pipelineOf(cmd.model) != c.name {
		return fmt.Errorf("%w: model %s is not of pipeline %s", ErrConflict, cmd.model, c.name)
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
	if m.State == storage.ModelRolledBack && (cmd.req.Automatic() || !cmd.force) {
		if cmd.req.Automatic() {
			return fmt.Errorf("%w: %s was rolled back (%s); kilnd never promotes it again, a person may with kiln promote --force", ErrConflict, m.ID, m.Reason)
		}
		return fmt.Errorf("%w: %s was rolled back (%s); it is not evaluated again: kiln promote --force %s to serve it anyway", ErrConflict, m.ID, m.Reason, m.ID)
	}
	if cmd.force {
		srv, err := c.ensureServing(ctx, c.currentSpec(), m)
		if err != nil {
			return err
		}
		m.Reason = "promoted by " + cmd.req.Actor + " with --force"
		return c.promote(ctx, m, srv, switchOp{req: cmd.req, details: map[string]string{"force": "true"}})
	}
	f := &flight{model: m.ID, req: cmd.req, cancel: func() {}, reply: cmd.reply}
	c.busy = f
	c.event(ctx, cmd.req.Actor, "model.promote_requested", []string{m.ID}, cmd.req.details(nil))
	if m.State != storage.ModelCandidate {
		m.State = storage.ModelCandidate // evaluate again, the same way
		if err := c.putModel(ctx, m, cmd.req.Actor, "model.reevaluating", cmd.req.details(nil)); err != nil {
			c.busy = nil
			return err
		}
	}
	c.startEval(ctx, f, m.ID)
	return nil
}
