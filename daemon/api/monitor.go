package api

import "time"

// Routes over the monitor's records, and the feedback upload.
const (
	// PathAccuracy is each model's metric on labelled feedback over time (read).
	PathAccuracy = "/v1/pipelines/{name}/accuracy"
	// PathFeedback takes a feedback file into feedback/<name>/ (write).
	PathFeedback = "/v1/pipelines/{name}/feedback"
)

// Metric values below are pointers: null where the metric is undefined (no
// labels yet), since JSON has no NaN.

// Accuracy answers GET /v1/pipelines/{name}/accuracy: every model's series
// of the metric on labelled feedback, in label-arrival order, and the
// pipeline's deployments so a chart can mark promotions and rollbacks.
// Series are keyed by model, never by role: a model keeps its series when it
// moves from live to standby.
type Accuracy struct {
	Pipeline string `json:"pipeline"`
	// Metric is the spec's evaluate.metric (the values are recomputed from
	// the recorded counts, so a changed metric applies to old feedback too).
	Metric string `json:"metric"`
	// Live and Standby are the models serving now ("" when none).
	Live    string `json:"live,omitempty"`
	Standby string `json:"standby,omitempty"`
	// Models are the series, ordered by model ID.
	Models      []ModelSeries    `json:"models"`
	Deployments []DeploymentMark `json:"deployments"`
}

// ModelSeries is one model's points.
type ModelSeries struct {
	Model  string        `json:"model"`
	Points []SeriesPoint `json:"points"`
}

// SeriesPoint is a model's standing after one feedback version.
type SeriesPoint struct {
	Time     time.Time `json:"time"` // the feedback version's arrival (label time)
	Feedback string    `json:"feedback"`
	Role     string    `json:"role"` // live or standby when scored
	// Rows this version scored through the model, and the metric on them alone.
	Rows  int64    `json:"rows"`
	Value *float64 `json:"value"`
	// Labels and Cumulative are the model's running totals over every version so far.
	Labels     int64    `json:"labels"`
	Cumulative *float64 `json:"cumulative"`
}

// DeploymentMark is one promotion or rollback: a model put live at a time.
type DeploymentMark struct {
	ID       string    `json:"id"`
	Model    string    `json:"model"`
	State    string    `json:"state"` // live | standby | ended
	Created  time.Time `json:"created"`
	Rollback bool      `json:"rollback,omitempty"`
}

// ModelMonitor is what the monitor measured of one model (kiln models show).
type ModelMonitor struct {
	Metric string `json:"metric"`
	// Holdout is the metric measured on the holdout before promotion.
	Holdout *float64 `json:"holdout,omitempty"`
	// Promoted is the model's first live deployment; zero when never live,
	// and then Value and Labels cover every label scored through it.
	Promoted time.Time `json:"promoted,omitzero"`
	// Value is the metric over the Labels scored through the model since Promoted.
	Value  *float64 `json:"value"`
	Labels int64    `json:"labels"`
	// Excluded rows were in the model's training data and left out of its score.
	Excluded int64     `json:"excluded,omitempty"`
	Versions int       `json:"versions"`
	Last     time.Time `json:"last,omitzero"`
	// Paired is how this model (as live) and its standby did on the same rows.
	Paired *Paired `json:"paired,omitempty"`
}

// Paired outcomes of the live model and the standby on the same rows.
type Paired struct {
	Rows        int64 `json:"rows"`
	Both        int64 `json:"both"`         // both right
	LiveOnly    int64 `json:"live_only"`    // only the live model right
	StandbyOnly int64 `json:"standby_only"` // only the standby right
	Neither     int64 `json:"neither"`      // both wrong
}

// PipelineMonitor is one pipeline's line of kiln status.
type PipelineMonitor struct {
	Pipeline string `json:"pipeline"`
	Live     string `json:"live,omitempty"`
	Standby  string `json:"standby,omitempty"`
	Metric   string `json:"metric"`
	// Value is the live model's metric over the Labels since its promotion.
	Value  *float64 `json:"value"`
	Labels int64    `json:"labels"`
	// StandbyStopped: serve.standby is stop, so only the live model is scored.
	StandbyStopped bool   `json:"standby_stopped,omitempty"`
	Watch          *Watch `json:"watch,omitempty"`
}

// Watch is how the monitor watches a pipeline's live model.
type Watch struct {
	// LabelsPerDay over the last 7 days (or since the first label);
	// LabelDelayP50S the median delay of the newest joined late labels.
	LabelsPerDay   float64 `json:"labels_per_day"`
	LabelDelayP50S float64 `json:"label_delay_p50_s,omitempty"`
	// Detector is the overall stream's phase: warmup, armed, blind, or
	// alarm while an alarm waits for its decision.
	Detector        string  `json:"detector,omitempty"`
	WarmupLabels    int     `json:"warmup_labels,omitempty"`
	WarmupMaxLabels int     `json:"warmup_max_labels,omitempty"`
	WarmupMisses    int     `json:"warmup_misses,omitempty"`
	WarmupMaxMisses int     `json:"warmup_max_misses,omitempty"`
	Baseline        float64 `json:"baseline,omitempty"`
	// Detect5PointS is the expected time to detect a 5-point accuracy
	// drop at this label rate, in seconds (0: unknown yet).
	Detect5PointS float64 `json:"detect_5point_s,omitempty"`
	Blind         bool    `json:"blind,omitempty"`
	BlindWhy      string  `json:"blind_why,omitempty"`
	Alarm         string  `json:"alarm,omitempty"`
}

// FeedbackResult answers POST /v1/pipelines/{name}/feedback: the file the
// body became in feedback/<name>/, which ingest validates like any dropped file.
type FeedbackResult struct {
	Pipeline string `json:"pipeline"`
	File     string `json:"file"`
	Bytes    int64  `json:"bytes"`
}
