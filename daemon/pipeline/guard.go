package pipeline

import (
	"fmt"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// guardOp is the kind of command the guard is asked about.
type guardOp int

const (
	opPromote guardOp = iota
	opRollback
	opTrain
)

// guard is the one place that says whether a command may act now. The rules:
//
//   - A pin turns automation off: every automatic command (actor kilnd) is
//     refused with ErrPinned; people's promotions and rollbacks too (they
//     unpin first); people may still train (the candidate is then rejected).
//   - Cooldown: within monitor.cooldown after any switch of the live model
//     (a promotion, a rollback, a pin that changed it), automatic commands
//     are refused with ErrCooldown; people are not held by it. The time of
//     the last switch is the newest deployment's Created in the store, so
//     it survives restarts.
//   - Busy: a promotion is refused with ErrBusy while a run or an evaluation
//     is in flight (for people as before, and for automation). Training
//     queues instead (see startRun); a rollback goes ahead and invalidates
//     the evaluation measured against the model it replaces.
//
// Triggers kilnd serves by itself (new data, the schedule, a candidate
// passing the gate) are not commands and do not pass the guard; they keep
// their own rules (a pinned pipeline still trains; its candidates are
// rejected).
func (c *controller) guard(req Request, op guardOp) error {
	if c.pinned != "" && (req.Automatic() || op != opTrain) {
		if req.Automatic() {
			return fmt.Errorf("%w: %s is pinned to %s, so automation is off until a person runs kiln unpin %s", ErrPinned, c.name, c.pinned, c.name)
		}
		return fmt.Errorf("%w: %s is pinned to %s; kiln unpin %s first", ErrPinned, c.name, c.pinned, c.name)
	}
	if req.Automatic() {
		last, err := c.lastSwitch()
		if err != nil {
			return err
		}
		cool := c.currentSpec().Monitor.Cooldown.Duration
		if until := last.Created.Add(cool); !last.Created.IsZero() && c.now().Before(until) {
			return fmt.Errorf("%w: %s switched its live model to %s at %s (%s); automatic actions wait for monitor.cooldown %s, until %s; a person may act now",
				ErrCooldown, c.name, last.Model, last.Created.UTC().Format(time.RFC3339), last.ID, cool, until.UTC().Format(time.RFC3339))
		}
	}
	if op == opPromote && c.busy != nil {
		return fmt.Errorf("%w: %s is busy with %s; try again when it is done", ErrBusy, c.name, c.busy.describe())
	}
	return nil
}

// lastSwitch is the pipeline's newest deployment: every switch of the live
// model (promotion, rollback, pin) creates one.
func (c *controller) lastSwitch() (last storage.Deployment, err error) {
	err = c.deps.Store.View(func(tx *storage.Tx) error {
		deps, err := tx.Deployments(c.name)
		for _, d := range deps {
			if d.Created.After(last.Created) {
				last = d
			}
		}
		return err
	})
	if err != nil {
		return last, fmt.Errorf("read %s's deployments for monitor.cooldown: %w", c.name, err)
	}
	return last, nil
}
