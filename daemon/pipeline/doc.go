// Package pipeline is kiln's per-pipeline state machine: it turns accepted
// data into training runs, runs into candidate models, candidates into
// measured and gated models, and the winner into the live model behind the
// pipeline's endpoint; and it carries out the commands of people (the API)
// and of automation (the monitor) on the same terms. Every transition is
// persisted (record, lineage, event) before the action it describes, so a
// kilnd restart at any point resumes from the store: runs in flight are
// re-attached, the queued run waits again, serving containers re-adopted,
// and an interrupted evaluation starts again.
//
// One controller goroutine owns each pipeline and serialises its decisions;
// the slow steps (a training container, an evaluation, starting a stopped
// standby) run in their own goroutines and report back to it.
//
// Commands. Each carries a Request: actor ("uid:N" or kilnd), trigger
// (manual, new_data, schedule, monitor, probation, retry, ...), reason and
// the caller's details; the events it writes record them. One guard
// (guard.go) decides whether a command may act: a pin refuses every
// automatic command and people's promotions and rollbacks (ErrPinned);
// monitor.cooldown after any switch of the live model refuses automatic
// commands (ErrCooldown; the switch time is the newest deployment's, so it
// survives restarts); a promotion waits for no flight (ErrBusy). kilnd's own
// triggers (new data, the schedule, a candidate passing the gate) are not
// commands: a pinned pipeline still trains, and rejects the candidate.
//
// Runs (one in flight per pipeline, one queued):
//
//	trigger: new_data (debounce, >= min_rows new rows) | schedule | Train (a person, the monitor)
//	         | Retrain (an explicit window: data and labelled feedback versions)
//	   |
//	   |  busy? ---> queued (a record; the one slot: a newer request of the same
//	   |               |      trigger or a higher rank replaces it, the old one is
//	   |               |      cancelled; a lower rank is refused with ErrBusy;
//	   |               |      new data meanwhile is counted again after)
//	   v               v (the flight ends)
//	queued --(GPU lease, when the spec asks for GPUs; else at once)--> running
//	   |                                                                  |
//	   | cancel: a person, or a rollback    exit 0 and /opt/ml/model  |  non-zero exit, OOM,
//	   | that made its window suspect       not empty                  v  timeout, no model
//	   v                                                           succeeded      failed (reason kept;
//	cancelled (reason kept)                                            |           train.retries)
//	                                                                   v
//	                                                               candidate
//
// Models:
//
//	candidate --> evaluating --(gate passes on every set)--> live --(newer model live)--> standby --> retired
//	                 |   ^                                    |  ^                           |
//	                 |   | stale: the live model changed      |  +-(rollback to the standby)-+
//	                 |   +---- (re-evaluate against it)        |
//	                 +--(gate fails, pinned, void: trained     +--(rollback)--> rolled_back
//	                 |   on data a rollback made suspect)                        |
//	                 v                                                           | never evaluated or promoted
//	              rejected                                                       | again by kilnd; a person
//	                                                                             v may kiln promote --force it
//	                                                                            live
//
// Data versions (records owned by ingest; the suspect flag set here):
//
//	accepted | released --(a rollback from M: in M's window, not in the restored model's)--> suspect
//	   ^                    (Dataset.Suspect = M; lineage M -> dataset, edge "quarantined";   |
//	   |                     a dataset.suspect event; it leaves every training window)       |
//	   +------------------------------ kiln datasets release (clears Suspect) ----------------+
//
// Rollback (Manager.Rollback, from the monitor or a person) names the live
// model it is about; when another is live by now it is void (ErrStale). It
// flips the endpoint to the standby (started first, or taken from
// EnsureStandby, when serve.standby is stop), the replaced model becomes
// rolled_back, suspect data is flagged in the same transaction, and then
// runs on suspect data are cancelled, a candidate trained on it rejected,
// and an evaluation measured against the replaced model run again.
//
// Evaluation is done by kilnd for every candidate the same way: the
// candidate's serving container is started, the holdout rows of the run's
// data window (or the spec's holdout file) are sent through it in the
// container contract's format, and the live model is scored on the same
// rows in the same step, so the gate compares like with like. The holdout
// parts of feedback versions in the window are a second set, scored and
// gated apart (and never given to the trainer, not even as validation):
// the candidate must lose on neither and beat the live model on at least
// one (equal is not better: a tie costs a flip and a warm slot for nothing). Failures at any step record the reason
// and never disturb the live model.
//
// Promotion is blue/green: the candidate is ready and scored before the
// endpoint flips; the previous live model stays warm as standby (or is
// stopped, when the spec says standby: stop), and the one before it retires.
// A replaced container is stopped once its requests are done, unless it is
// serving again by then. A pin turns automation off: the pinned model is
// live and stays so.
package pipeline
