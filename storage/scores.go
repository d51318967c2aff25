package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Feedback types: what a feedback dataset version holds (Dataset.Feedback).
const (
	// FeedbackRows is labelled rows in the data's own columns, label included.
	FeedbackRows = "rows"
	// FeedbackLabels is late labels (request_id,label) to join to the prediction log.
	FeedbackLabels = "labels"
	// FeedbackJoined is late labels joined with their logged inputs: labelled rows
	// the monitor made from a labels version (Dataset.Source), so retraining never
	// reads the expiring prediction log. Never scored again.
	FeedbackJoined = "joined"
)

// Scoring is the monitor's measurement of one feedback version: the models it
// was scored through, on the same rows. Its key is the feedback dataset, so a
// version is scored at most once (PutScoring refuses a second), which is what
// makes a restart neither lose nor double-count labels.
type Scoring struct {
	Feedback string `json:"feedback"` // the feedback dataset ID, p/dN
	Pipeline string `json:"pipeline"`
	Type     string `json:"type"`   // FeedbackRows or FeedbackLabels
	Metric   string `json:"metric"` // the spec's evaluate.metric when scored
	// Models are the live model first, then the standby when it was scored.
	Models []ModelScore `json:"models"`
	// Paired counts the rows both models scored by who was right (classification
	// metrics only).
	Paired *Paired `json:"paired,omitempty"`
	// Outcomes is the per-row record in label-arrival order, two bits a row
	// (bit 0: live right, bit 1: standby right; 0b100 marks a row only live
	// scored), one byte a row: the stream the detector reads.
	Outcomes []byte `json:"outcomes,omitempty"`
	// Join reports a labels version's join to the prediction log.
	Join *JoinReport `json:"join,omitempty"`
	// Delay is label arrival minus prediction time, for joined labels.
	Delay *Delay `json:"delay,omitempty"`
	// Predicted spans the prediction times of the scored rows (joined labels);
	// zero for labelled rows, which were predicted when scored.
	PredictedFirst time.Time `json:"predicted_first,omitzero"`
	PredictedLast  time.Time `json:"predicted_last,omitzero"`
	// Arrived is when the feedback version was accepted (label arrival).
	Arrived time.Time `json:"arrived"`
	Created time.Time `json:"created"`
	// Note says why a version produced no scores (no live model, nothing joined).
	Note string `json:"note,omitempty"`
}

// Outcome bits of Scoring.Outcomes.
const (
	OutcomeLiveRight    byte = 1
	OutcomeStandbyRight byte = 2
	OutcomeLiveOnly     byte = 4 // no standby scored this row
)

// ModelScore is one model's result on a feedback version.
type ModelScore struct {
	Model string `json:"model"`
	Role  string `json:"role"` // live or standby when scored (informative; key by Model)
	// Rows scored, after Excluded rows that were in this model's training data.
	Rows     int64 `json:"rows"`
	Excluded int64 `json:"excluded,omitempty"`
	// Right counts correct rows (classification). SumAbsErr and SumSqErr are
	// the regression sums. Confusion is truth -> prediction -> rows
	// (classification), so macro F1 and per-class recall add up across versions.
	Right     int64                       `json:"right,omitempty"`
	SumAbsErr float64                     `json:"sum_abs_err,omitempty"`
	SumSqErr  float64                     `json:"sum_sq_err,omitempty"`
	Confusion map[string]map[string]int64 `json:"confusion,omitempty"`
	// Value is the metric over these rows.
	Value float64 `json:"value"`
}

// Paired is how two models did on the same rows.
type Paired struct {
	Rows        int64 `json:"rows"`
	Both        int64 `json:"both"`
	LiveOnly    int64 `json:"live_only"`
	StandbyOnly int64 `json:"standby_only"`
	Neither     int64 `json:"neither"`
}

// JoinReport accounts for every label of a labels version.
type JoinReport struct {
	Labels     int64  `json:"labels"`     // label rows in the file
	Matched    int64  `json:"matched"`    // joined to a logged prediction
	Unmatched  int64  `json:"unmatched"`  // no such request id (or row) in the log
	Expired    int64  `json:"expired"`    // the id's prediction left the log's retention
	Duplicates int64  `json:"duplicates"` // a second label for an id (this or an earlier version)
	NoInput    int64  `json:"no_input"`   // matched, but the log kept no input to replay
	Failed     int64  `json:"failed"`     // the logged request had failed (non-2xx)
	Joined     string `json:"joined,omitempty"`
}

// Delay quantiles in seconds.
type Delay struct {
	N   int64   `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// PutScoring records s; ErrExists when its feedback version was scored already.
func (tx *Tx) PutScoring(s Scoring) error {
	if err := tx.writable(); err != nil {
		return err
	}
	p, letter, n, err := ParseID(s.Feedback)
	if err != nil {
		return err
	}
	if letter != LetterDataset || p != s.Pipeline {
		return fmt.Errorf("scoring of %s: want a dataset of pipeline %s: %w", s.Feedback, s.Pipeline, ErrInvalid)
	}
	b := tx.btx.Bucket(bucketScores)
	key := recordKey(p, n)
	if b.Get(key) != nil {
		return fmt.Errorf("scoring of %s: %w", s.Feedback, ErrExists)
	}
	if s.Created.IsZero() {
		s.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(s)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// Scoring reads the scoring of one feedback version.
func (tx *Tx) Scoring(feedback string) (Scoring, error) {
	var s Scoring
	p, _, n, err := ParseID(feedback)
	if err != nil {
		return s, err
	}
	v := tx.btx.Bucket(bucketScores).Get(recordKey(p, n))
	if v == nil {
		return s, fmt.Errorf("scoring of %s: %w", feedback, ErrNotFound)
	}
	return s, decodeRecord(v, &s)
}

// Scorings lists a pipeline's scorings in feedback version order.
func (tx *Tx) Scorings(pipeline string) ([]Scoring, error) {
	var out []Scoring
	prefix := []byte(pipeline + "/")
	c := tx.btx.Bucket(bucketScores).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var s Scoring
		if err := decodeRecord(v, &s); err != nil {
			return nil, fmt.Errorf("scoring under %q: %w", k, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Scorings lists a pipeline's scorings in feedback version order.
func (s *Store) Scorings(pipeline string) (out []Scoring, err error) {
	err = s.View(func(tx *Tx) error { out, err = tx.Scorings(pipeline); return err })
	return out, err
}

// Signal is one hour of a pipeline's label-free monitoring: the mix of
// predicted classes and the PSI of logged inputs against the live model's
// training data. Alert-only.
type Signal struct {
	Pipeline string             `json:"pipeline"`
	Hour     time.Time          `json:"hour"` // start of the hour, UTC
	Model    string             `json:"model"`
	Requests int64              `json:"requests"`
	Rows     int64              `json:"rows"`
	Classes  map[string]int64   `json:"classes,omitempty"`
	PSI      map[string]float64 `json:"psi,omitempty"` // per feature; absent when too few values
	Created  time.Time          `json:"created"`
}

// PutSignal records (or replaces) one hour's signal.
func (tx *Tx) PutSignal(sig Signal) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if !ValidPipeline(sig.Pipeline) || sig.Hour.IsZero() {
		return fmt.Errorf("signal %s %s: %w", sig.Pipeline, sig.Hour, ErrInvalid)
	}
	if sig.Created.IsZero() {
		sig.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(sig)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketSignals).Put(recordKey(sig.Pipeline, uint64(sig.Hour.Unix())), v) //nolint:gosec // hours after 1970
}

// Signals lists a pipeline's hourly signals from since on, oldest first.
func (tx *Tx) Signals(pipeline string, since time.Time) ([]Signal, error) {
	var out []Signal
	prefix := []byte(pipeline + "/")
	start := prefix
	if !since.IsZero() && since.Unix() > 0 {
		start = recordKey(pipeline, uint64(since.Unix())) //nolint:gosec // checked positive
	}
	c := tx.btx.Bucket(bucketSignals).Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var s Signal
		if err := decodeRecord(v, &s); err != nil {
			return nil, fmt.Errorf("signal under %q: %w", k, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// MonitorState is the monitor's memory of one pipeline's live model: the
// detector's and the paired test's state, an alarm waiting for its decision,
// and the automatic retrains made. It is written in the same transaction as
// the scoring whose labels it has seen, so a restart neither loses labels
// nor feeds them twice.
type MonitorState struct {
	Pipeline string    `json:"pipeline"`
	Model    string    `json:"model"` // the live model it watches; a new live model starts afresh
	Since    time.Time `json:"since"` // when it started watching Model
	// Labels is how many of Model's labels it has seen.
	Labels   int64           `json:"labels"`
	Detector json.RawMessage `json:"detector,omitempty"`
	Paired   json.RawMessage `json:"paired,omitempty"`
	// Alarm is set from an alarm until its decision; the decision test reads
	// only labels that arrived after it.
	Alarm *Alarm `json:"alarm,omitempty"`
	// Retrains are the times of automatic retraining runs (the daily cap);
	// RetrainLabels is Labels when the last one started (one per alarm, another
	// only after min_rows new labels).
	Retrains      []time.Time `json:"retrains,omitempty"`
	RetrainLabels int64       `json:"retrain_labels,omitempty"`
	Updated       time.Time   `json:"updated"`
}

// Alarm is a detector alarm and what arrived after it.
type Alarm struct {
	At        time.Time         `json:"at"`
	Labels    int64             `json:"labels"` // MonitorState.Labels when it fired
	By        string            `json:"by"`     // which statistic fired
	Details   map[string]string `json:"details,omitempty"`
	Standby   string            `json:"standby,omitempty"` // the standby the decision compares with
	Rows      int64             `json:"rows"`              // post-alarm rows both models scored
	LiveRight int64             `json:"live_right"`
	StbyRight int64             `json:"standby_right"`
	LiveOnly  int64             `json:"live_only"`
	StbyOnly  int64             `json:"standby_only"`
	// Decider is the post-alarm decision's own state (package detect).
	Decider json.RawMessage `json:"decider,omitempty"`
	Decided string          `json:"decided,omitempty"` // rollback | drift, once decided
	Acted   bool            `json:"acted,omitempty"`   // the action was taken (or refused for good)
}

// PutMonitorState records a pipeline's monitor state.
func (tx *Tx) PutMonitorState(st MonitorState) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if !ValidPipeline(st.Pipeline) {
		return fmt.Errorf("monitor state of %q: %w", st.Pipeline, ErrInvalid)
	}
	st.Updated = tx.s.now().UTC().Round(0)
	v, err := encodeRecord(st)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketMonitor).Put([]byte(st.Pipeline), v)
}

// MonitorState reads a pipeline's monitor state; ok is false when there is none.
func (tx *Tx) MonitorState(pipeline string) (st MonitorState, ok bool, err error) {
	v := tx.btx.Bucket(bucketMonitor).Get([]byte(pipeline))
	if v == nil {
		return st, false, nil
	}
	return st, true, decodeRecord(v, &st)
}
