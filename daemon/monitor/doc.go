// Package monitor owns kiln's watch over live models on labelled feedback:
// it scores every accepted feedback version through the live model and the
// standby on the same rows, joins late labels to the prediction log (the
// logged answer is the live model's; the logged input is replayed through
// the standby), records one storage.Scoring per feedback version, and keeps
// the hourly label-free signals (the mix of predicted classes, the PSI of
// logged inputs against the live model's training data).
//
// It measures; it does not act. Scores and series are keyed by model ID,
// never by role, so a model's record survives promotions and rollbacks.
package monitor
