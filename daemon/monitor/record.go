package monitor

import (
	"context"
	"errors"
	"strconv"

	"github.com/kiln-edge/kiln/storage"
)

// record commits a scoring with its lineage (feedback -> each model scored)
// and a feedback.scored event. A scoring already there (another worker, or
// a retry after a commit whose answer was lost) is not an error: the labels
// were counted once.
func (m *Monitor) record(ctx context.Context, spec pipelineSpec, sc storage.Scoring, obs []observation) error {
	sc.Created = m.deps.Now().UTC()
	details := map[string]string{"type": sc.Type, "metric": sc.Metric}
	refs := []string{sc.Feedback}
	for _, ms := range sc.Models {
		refs = append(refs, ms.Model)
		details[ms.Role+"_model"] = ms.Model
		details[ms.Role+"_rows"] = strconv.FormatInt(ms.Rows, 10)
		if ms.Rows > 0 {
			details[ms.Role+"_"+sc.Metric] = strconv.FormatFloat(ms.Value, 'f', 4, 64)
		}
		if ms.Excluded > 0 {
			details[ms.Role+"_excluded"] = strconv.FormatInt(ms.Excluded, 10)
		}
	}
	if p := sc.Paired; p != nil {
		details["paired"] = strconv.FormatInt(p.Rows, 10)
		details["both_right"] = strconv.FormatInt(p.Both, 10)
		details["live_only"] = strconv.FormatInt(p.LiveOnly, 10)
		details["standby_only"] = strconv.FormatInt(p.StandbyOnly, 10)
		details["both_wrong"] = strconv.FormatInt(p.Neither, 10)
	}
	if j := sc.Join; j != nil {
		details["labels"] = strconv.FormatInt(j.Labels, 10)
		details["matched"] = strconv.FormatInt(j.Matched, 10)
		details["unmatched"] = strconv.FormatInt(j.Unmatched, 10)
		details["duplicates"] = strconv.FormatInt(j.Duplicates, 10)
		if j.Failed > 0 {
			details["failed_requests"] = strconv.FormatInt(j.Failed, 10)
		}
		if j.NoInput > 0 {
			details["no_input"] = strconv.FormatInt(j.NoInput, 10)
		}
		if j.Joined != "" {
			details["joined"] = j.Joined
			refs = append(refs, j.Joined)
		}
	}
	if dl := sc.Delay; dl != nil {
		details["delay_p50_s"] = strconv.FormatFloat(dl.P50, 'f', 1, 64)
		details["delay_p90_s"] = strconv.FormatFloat(dl.P90, 'f', 1, 64)
	}
	if sc.Note != "" {
		details["note"] = sc.Note
	}
	var st *storage.MonitorState
	err := m.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutScoring(sc); err != nil {
			return err
		}
		for _, ms := range sc.Models {
			if err := tx.Link(sc.Feedback, ms.Model, storage.EdgeScored); err != nil {
				return err
			}
		}
		if _, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "feedback.scored", Pipeline: sc.Pipeline, Refs: refs, Details: details}); err != nil {
			return err
		}
		var err error
		st, err = m.advance(tx, spec, sc, obs)
		return err
	})
	if errors.Is(err, storage.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	m.log.Info("feedback scored", "pipeline", sc.Pipeline, "dataset", sc.Feedback, "details", details)
	if st != nil && st.Alarm != nil && st.Alarm.Decided != "" && !st.Alarm.Acted {
		m.act(ctx, spec, *st)
	}
	if st != nil && st.Alarm != nil && st.Alarm.Decided == "" && spec.standbyStop && m.deps.Actions != nil {
		// The decision compares with the standby on post-alarm rows: with
		// standby: stop it must run again (until the next switch).
		if err := m.deps.Actions.EnsureStandby(ctx, spec.name); err != nil {
			m.log.Warn("start the standby for the decision", "pipeline", spec.name, "err", err)
		}
	}
	return nil
}
