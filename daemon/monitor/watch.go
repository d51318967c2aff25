package monitor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// Watching the live model. Each scoring's rows, in label-arrival order, feed
// the live model's detector and, where the standby answered too, a paired
// sequential test that runs from the promotion on. Both are persisted in
// storage.MonitorState in the transaction that records the scoring, so a
// label reaches them exactly once.
//
//	watching --detector alarm--> alarmed --post-alarm paired rows--> decided
//	    ^                                                         |
//	    |   paired test rejects "live no worse" -> decided: rollback
//	    +-- drift: detector reset (a new warm-up), one retrain ---+
//	        rollback: the restored model is watched afresh
//
// The decision reads only labels that arrive after the alarm (the rows that
// raised it are biased against the live model). With no standby model at
// all, an alarm is drift at once: there is nothing to roll back to.

// Actions are what the monitor may ask of a pipeline; the daemon maps them
// onto the pipeline controller's commands, with kilnd as the actor.
type Actions interface {
	// Rollback flips to the standby unless the live model is no longer
	// from; trigger is "monitor" or "probation".
	Rollback(ctx context.Context, pipeline, from, trigger, reason string, details map[string]string) error
	// Retrain starts one run on the spec's window plus the labelled feedback.
	Retrain(ctx context.Context, pipeline, reason string, details map[string]string) (run string, err error)
	// EnsureStandby starts a stopped standby so the decision can compare.
	EnsureStandby(ctx context.Context, pipeline string) error
}

// Errors an Actions implementation returns that decide what the monitor
// does next: a refusal for now (cooldown) is retried; one for good (pinned,
// the live model changed) is recorded and the alarm closed.
var (
	ErrActLater = errors.New("refused for now")
	ErrActNever = errors.New("refused")
)

// liveOf reads which model p serves live and since when, and its standby.
func liveOf(tx *storage.Tx, p string) (live, standby string, since time.Time, err error) {
	deps, err := tx.Deployments(p)
	if err != nil {
		return "", "", time.Time{}, err
	}
	for _, d := range deps {
		switch d.State {
		case storage.DeployLive:
			live, since = d.Model, d.Created
		case storage.DeployStandby:
			standby = d.Model
		}
	}
	return live, standby, since, nil
}

// advance feeds a scoring's observations to the watch of the live model.
// It runs inside the store's update, so it only reads and writes through tx.
func (m *Monitor) advance(tx *storage.Tx, spec pipelineSpec, sc storage.Scoring, obs []observation) (*storage.MonitorState, error) {
	if len(sc.Models) == 0 || len(obs) == 0 || m.stats == nil {
		return nil, nil
	}
	live, standby, since, err := liveOf(tx, spec.name)
	if err != nil {
		return nil, err
	}
	if sc.Models[0].Model != live {
		// Labels for an earlier live model's answers: scored and kept in
		// its series, but they say nothing of the model serving now.
		return nil, nil
	}
	st, ok, err := tx.MonitorState(spec.name)
	if err != nil {
		return nil, err
	}
	if !ok || st.Model != live {
		// A new live model is watched afresh; the daily retrain count
		// belongs to the pipeline and stays.
		st = storage.MonitorState{Pipeline: spec.name, Model: live, Since: since, Retrains: st.Retrains}
	}
	det, err := m.stats.detector(spec, st.Detector)
	if err != nil {
		return nil, err
	}
	pt, err := m.stats.paired(spec, st.Paired)
	if err != nil {
		return nil, err
	}
	pairedWith := ""
	if len(sc.Models) > 1 {
		pairedWith = sc.Models[1].Model
	}
	var dec decider
	if st.Alarm != nil && st.Alarm.Decided == "" {
		if dec, err = m.stats.decider(spec, st.Alarm.Decider); err != nil {
			return nil, err
		}
	}
	for _, o := range obs {
		if o.unknown {
			continue
		}
		st.Labels++
		a := st.Alarm
		switch {
		case a == nil:
			fired, by, details, err := det.observe(o.live, o.class)
			if err != nil {
				return nil, err
			}
			if fired {
				st.Alarm = &storage.Alarm{At: sc.Arrived, Labels: st.Labels, By: by, Details: details, Standby: standby}
				if standby != "" {
					if dec, err = m.stats.decider(spec, nil); err != nil {
						return nil, err
					}
				}
				continue
			}
			if o.paired && pairedWith == standby {
				if reject, details := pt.observe(o.live, o.standby); reject {
					// The standby has been better since the promotion, at
					// any stopping time: that is the decision itself.
					st.Alarm = &storage.Alarm{At: sc.Arrived, Labels: st.Labels, By: "paired", Details: details,
						Standby: standby, Decided: "rollback"}
				}
			}
		case a.Decided == "" && dec != nil && o.paired && pairedWith == a.Standby:
			// Only rows after the alarm: those that raised it are biased.
			a.Rows++
			if o.live {
				a.LiveRight++
			}
			if o.standby {
				a.StbyRight++
			}
			switch {
			case o.live && !o.standby:
				a.LiveOnly++
			case o.standby && !o.live:
				a.StbyOnly++
			}
			if v := dec.observe(o.live, o.standby); v != "" {
				a.Decided = v
				for k, val := range dec.details() {
					a.Details = with(a.Details, k, val)
				}
			}
		}
	}
	if a := st.Alarm; a != nil && a.Decided == "" {
		if a.Standby == "" {
			a.Decided = "drift" // nothing to roll back to
		} else if dec != nil {
			if a.Decider, err = dec.state(); err != nil {
				return nil, err
			}
		}
	}
	if st.Detector, err = det.state(); err != nil {
		return nil, err
	}
	if st.Paired, err = pt.state(); err != nil {
		return nil, err
	}
	if err := tx.PutMonitorState(st); err != nil {
		return nil, err
	}
	if a := st.Alarm; a != nil && a.Labels > st.Labels-int64(len(obs)) {
		_, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "monitor.alarm", Pipeline: spec.name, Refs: []string{live, sc.Feedback},
			Details: with(with(a.Details, "by", a.By), "labels", strconv.FormatInt(a.Labels, 10))})
		if err != nil {
			return nil, err
		}
	}
	return &st, nil
}

func with(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// decisionDetails are the numbers a decision event and the action carry.
func decisionDetails(a *storage.Alarm, live string) map[string]string {
	d := map[string]string{"model": live, "standby": a.Standby, "alarm_by": a.By,
		"alarm_at_label": strconv.FormatInt(a.Labels, 10), "post_alarm_rows": strconv.FormatInt(a.Rows, 10),
		"live_only": strconv.FormatInt(a.LiveOnly, 10), "standby_only": strconv.FormatInt(a.StbyOnly, 10)}
	if a.Rows > 0 {
		d["live_accuracy_after_alarm"] = strconv.FormatFloat(float64(a.LiveRight)/float64(a.Rows), 'f', 4, 64)
		d["standby_accuracy_after_alarm"] = strconv.FormatFloat(float64(a.StbyRight)/float64(a.Rows), 'f', 4, 64)
	}
	for k, v := range a.Details {
		d[k] = v
	}
	return d
}

// act carries out a decided alarm: a rollback, or for drift an event and (by
// triggers.degradation) one retraining run within the daily cap. The alarm
// is closed once acted on, or refused for good.
func (m *Monitor) act(ctx context.Context, spec pipelineSpec, st storage.MonitorState) {
	a := st.Alarm
	details := decisionDetails(a, st.Model)
	log := m.log.With("pipeline", spec.name, "model", st.Model)
	var err error
	closeAlarm, retrained := true, false
	switch a.Decided {
	case "rollback":
		reason := fmt.Sprintf("the standby %s is better on the same rows since the alarm (%s)", a.Standby, a.By)
		err = m.deps.Actions.Rollback(ctx, spec.name, st.Model, "monitor", reason, details)
		if err == nil {
			log.Warn("rolled back on the monitor's decision", "to", a.Standby, "details", details)
		}
	case "drift":
		m.event(ctx, spec.name, "monitor.drift_detected", []string{st.Model}, with(details, "decision", decisionNote(a)))
		if spec.degradation == "retrain" {
			retrained, err = m.retrain(ctx, spec, st, details)
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrActNever):
		m.event(ctx, spec.name, "monitor.action_refused", []string{st.Model}, with(with(details, "decision", a.Decided), "error", err.Error()))
	default:
		// A refusal for now (cooldown, work in flight) or a failure
		// (containerd away): the alarm stays decided and is tried again.
		closeAlarm = false
		log.Info("automatic action deferred", "decision", a.Decided, "err", err)
	}
	if !closeAlarm {
		return
	}
	crashpoint.Hit("monitor.after-act")
	// Close the alarm; after drift the detector starts over (a new warm-up
	// on the world as it is now: hysteresis), after a rollback the new
	// live model is watched afresh anyway.
	uerr := m.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		cur, ok, err := tx.MonitorState(spec.name)
		if err != nil || !ok || cur.Model != st.Model || cur.Alarm == nil || cur.Alarm.Labels != a.Labels {
			return err
		}
		cur.Alarm, cur.Detector, cur.Paired = nil, nil, nil
		if retrained {
			cur.Retrains = append(cur.Retrains, m.deps.Now().UTC())
			cur.RetrainLabels = cur.Labels
		}
		return tx.PutMonitorState(cur)
	})
	if uerr != nil {
		log.Warn("close the alarm", "err", uerr)
	}
}

func decisionNote(a *storage.Alarm) string {
	if a.Standby == "" {
		return "no standby model to compare with"
	}
	return "standby not better"
}

// retrain starts one run for a drift alarm, within max_retrains_per_day.
func (m *Monitor) retrain(ctx context.Context, spec pipelineSpec, st storage.MonitorState, details map[string]string) (bool, error) {
	now := m.deps.Now()
	today := 0
	for _, t := range st.Retrains {
		if now.Sub(t) < 24*time.Hour {
			today++
		}
	}
	if today >= spec.maxRetrains {
		m.event(ctx, spec.name, "monitor.retrain_skipped", []string{st.Model},
			with(details, "why", fmt.Sprintf("%d automatic retrains in the last 24h (monitor.max_retrains_per_day %d)", today, spec.maxRetrains)))
		return false, nil
	}
	if len(st.Retrains) > 0 && st.Labels-st.RetrainLabels < int64(spec.minRows) {
		m.event(ctx, spec.name, "monitor.retrain_skipped", []string{st.Model},
			with(details, "why", fmt.Sprintf("%d labels since the last retrain; triggers.new_data.min_rows is %d", st.Labels-st.RetrainLabels, spec.minRows)))
		return false, nil
	}
	run, err := m.deps.Actions.Retrain(ctx, spec.name, "the live model degraded and the standby is not better: concept drift", details)
	if err != nil {
		return false, err
	}
	m.log.Info("retraining on drift", "pipeline", spec.name, "run", run)
	return true, nil
}

func (m *Monitor) event(ctx context.Context, p, kind string, refs []string, details map[string]string) {
	if err := m.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.Append(storage.Event{Actor: "kilnd", Kind: kind, Pipeline: p, Refs: refs, Details: details})
		return err
	}); err != nil {
		m.log.Warn("record event", "kind", kind, "err", err)
	}
}

// settle acts on an alarm that was decided but not acted on: the action
// was deferred (a cooldown), or kilnd stopped between the decision and the
// action. Rollback is void once the live model changed, so acting twice is
// harmless.
// It reports whether an alarm is still waiting to be acted on.
func (m *Monitor) settle(ctx context.Context, spec pipelineSpec) (pending bool) {
	if m.deps.Actions == nil {
		return false
	}
	read := func() (st storage.MonitorState, ok bool) {
		_ = m.deps.Store.View(func(tx *storage.Tx) (err error) { st, ok, err = tx.MonitorState(spec.name); return err })
		return st, ok && st.Alarm != nil && st.Alarm.Decided != "" && !st.Alarm.Acted
	}
	if st, ok := read(); ok {
		m.act(ctx, spec, st)
	}
	_, pending = read()
	return pending
}
