package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// rollback flips the endpoint back to the standby model (or, for a person's
// --to, to an earlier model). from, when given, is the live model the caller
// acted on: if another model is live by now the command is void (ErrStale).
//
// In one transaction with the switch: the replaced model becomes
// rolled_back (never promoted again automatically), and the data versions
// in its training window but not in the restored model's are flagged
// suspect (Dataset.Suspect, a lineage edge bad model -> dataset of type
// quarantined, a dataset.suspect event each); they leave every training
// window until a person releases them. After it: a run whose window holds a
// newly suspect version is cancelled, a candidate trained on one is
// rejected, and an evaluation scored against the replaced model runs again
// against the restored one.
func (c *controller) rollback(ctx context.Context, req Request, from, to string) error {
	if c.live == nil {
		return fmt.Errorf("%w: %s has no live model", ErrConflict, c.name)
	}
	if from != "" && c.live.model != from {
		return fmt.Errorf("%w: the rollback from %s is void: %s's live model is %s now", ErrStale, from, c.name, c.live.model)
	}
	if err := c.guard(req, opRollback); err != nil {
		return err
	}
	target := c.standby
	if to != "" && (target == nil || target.model != to) {
		if pipelineOf(to) != c.name {
			return fmt.Errorf("%w: model %s is not of pipeline %s", ErrConflict, to, c.name)
		}
		if to == c.live.model {
			return fmt.Errorf("%w: %s is already live", ErrConflict, to)
		}
		m, err := c.modelRecord(to)
		if err != nil {
			return err
		}
		if m.Pruned {
			return fmt.Errorf("%w: %s was pruned by retention; its files are gone", ErrConflict, m.ID)
		}
		if req.Automatic() && m.State == storage.ModelRolledBack {
			return fmt.Errorf("%w: %s was rolled back (%s); kilnd never serves it again, a person may with kiln promote --force", ErrConflict, m.ID, m.Reason)
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
		// serve.standby: stop. EnsureStandby may be starting it already;
		// wait for that container rather than race it with a second start.
		if s := c.starting; s != nil && s.deployment == target.deployment {
			select {
			case <-s.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if s.err == nil {
				target.srv = s.srv
			}
		}
	}
	m, err := c.modelRecord(target.model)
	if err != nil {
		return err
	}
	if req.Automatic() && m.State == storage.ModelRolledBack {
		return fmt.Errorf("%w: the standby %s was rolled back before (%s); kilnd never serves it again", ErrConflict, m.ID, m.Reason)
	}
	if target.srv == nil {
		if target.srv, err = c.ensureServing(ctx, c.currentSpec(), m); err != nil {
			return err
		}
	}
	bad := c.live.model
	suspects, err := c.newlySuspect(bad, m.ID)
	if err != nil {
		return err
	}
	standby := c.standby
	m.Reason = fmt.Sprintf("rollback from %s by %s (%s)", bad, req.Actor, req.Trigger)
	if req.Reason != "" {
		m.Reason += ": " + req.Reason
	}
	op := switchOp{req: req, rollback: true, details: map[string]string{}}
	if len(suspects) > 0 {
		op.details["suspect"] = strings.Join(suspects, ",")
	}
	op.inTx = func(tx *storage.Tx, dep storage.Deployment) error {
		if standby != nil && standby.model == m.ID {
			// The standby's own deployment ends; the rollback deployment replaces it.
			if err := endStandby(tx, standby); err != nil {
				return err
			}
		}
		for _, id := range suspects {
			d, err := tx.Dataset(id)
			if err != nil {
				return err
			}
			d.Suspect = bad
			if err := tx.PutDataset(d); err != nil {
				return err
			}
			if err := tx.Link(bad, id, storage.EdgeQuarantined); err != nil {
				return err
			}
			_, err = tx.Append(storage.Event{Actor: req.Actor, Kind: "dataset.suspect", Pipeline: c.name, Refs: []string{id, bad, dep.ID},
				Details: req.details(map[string]string{"suspect": bad, "restored": m.ID, "kind": string(d.Kind)})})
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := c.promote(ctx, m, target.srv, op); err != nil {
		return err
	}
	crashpoint.Hit("rollback.before-drop-suspect-work")
	c.log.Warn("rolled back", "from", bad, "to", m.ID, "actor", req.Actor, "trigger", req.Trigger, "reason", req.Reason, "suspect", suspects)
	c.dropSuspectWork(ctx, req, bad, suspects)
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

// newlySuspect lists the versions in bad's training window that are not in
// good's and not suspect already, in window order.
func (c *controller) newlySuspect(bad, good string) (ids []string, err error) {
	err = c.deps.Store.View(func(tx *storage.Tx) error {
		window := func(model string) ([]string, error) {
			m, err := tx.Model(model)
			if err != nil {
				return nil, err
			}
			r, err := tx.Run(m.Run)
			if err != nil {
				return nil, fmt.Errorf("model %s's run: %w", model, err)
			}
			return r.Datasets, nil
		}
		badWin, err := window(bad)
		if err != nil {
			return err
		}
		goodWin, err := window(good)
		if err != nil {
			return err
		}
		for _, id := range badWin {
			if slices.Contains(goodWin, id) {
				continue
			}
			d, err := tx.Dataset(id)
			if err != nil {
				return err
			}
			if d.Suspect == "" {
				ids = append(ids, id)
			}
		}
		return nil
	})
	return ids, err
}

// dropSuspectWork cancels the queued and running runs whose window holds a
// newly suspect version and rejects (at the end of its evaluation) a
// candidate trained on one.
func (c *controller) dropSuspectWork(ctx context.Context, req Request, bad string, suspects []string) {
	if len(suspects) == 0 {
		return
	}
	holds := func(runID string) string {
		r, err := c.runRecord(runID)
		if err != nil {
			c.log.Warn("read run to check for suspect data", "run", runID, "err", err)
			return ""
		}
		for _, id := range r.Datasets {
			if slices.Contains(suspects, id) {
				return fmt.Sprintf("its window holds %s, suspect since %s was rolled back", id, bad)
			}
		}
		return ""
	}
	if q := c.queued; q != nil {
		if why := holds(q.run); why != "" {
			if err := c.cancelRun(ctx, q.run, req, why); err != nil {
				c.log.Error("cancel a queued run on suspect data", "run", q.run, "err", err)
			}
		}
	}
	f := c.busy
	if f == nil {
		return
	}
	if f.model == "" && f.run != "" { // still training
		if why := holds(f.run); why != "" {
			if err := c.cancelRun(ctx, f.run, req, why); err != nil {
				c.log.Error("cancel a run on suspect data", "run", f.run, "err", err)
			}
		}
		return
	}
	run := f.run
	if run == "" {
		m, err := c.modelRecord(f.model)
		if err != nil {
			return
		}
		run = m.Run
	}
	if why := holds(run); why != "" && f.evaluating {
		f.void = "trained on suspect data: " + why
		if f.evalCancel != nil {
			f.evalCancel()
		}
	}
}
