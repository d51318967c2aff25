// Package pipeline is kiln's per-pipeline state machine: it turns accepted
// data into training runs, runs into candidate models, candidates into
// measured and gated models, and the winner into the live model behind the
// pipeline's endpoint. Every transition is persisted (record, lineage, event)
// before the action it describes, so a kilnd restart at any point resumes
// from the store: runs in flight are re-attached, serving containers
// re-adopted, and an interrupted evaluation starts again.
//
// One controller goroutine owns each pipeline and serialises its decisions;
// the slow steps (a training container, an evaluation) run in their own
// goroutines and report back to it. One run is in flight per pipeline; a
// trigger that arrives meanwhile is remembered and served after.
//
// Runs:
//
//	trigger (new data after debounce with >= min_rows new rows | schedule | manual)
//	   |
//	   v
//	queued --(GPU lease, when the spec asks for GPUs; else at once)--> running
//	   |                                                                  |
//	   | cancel                        exit 0 and /opt/ml/model not empty |  non-zero exit, OOM,
//	   v                                                                  v  timeout, no model
//	cancelled                                                      succeeded      failed (reason kept)
//
// Models (created by a succeeded run):
//
//	candidate --> evaluating --(gate passes)--> live --(a newer model promoted)--> standby --> retired
//	                  |                          ^  \                                 |
//	                  +--(gate fails)--> rejected |   +--(rollback)--> rolled_back    |
//	                                              +--------(rollback to standby)------+
//
// Evaluation is done by kilnd for every candidate the same way: the
// candidate's serving container is started, the holdout rows of the run's
// data window (or the spec's holdout file) are sent through it in the
// container contract's format, and the live model is scored on the same
// rows in the same step, so the gate compares like with like. Failures at
// any step record the reason and never disturb the live model.
//
// Promotion is blue/green: the candidate is ready and scored before the
// endpoint flips; the previous live model stays warm as standby (or is
// stopped, when the spec says standby: stop), and the one before it retires.
// A pin turns automation off: the pinned model is live and stays so.
package pipeline
