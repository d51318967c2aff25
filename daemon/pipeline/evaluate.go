package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// Backend is one model's serving container, as the evaluator and the
// endpoint reach it.
type Backend interface {
	Model() string
	DialContext(ctx context.Context) (net.Conn, error)
}

// predict sends inputs (rows or images) through b in the serving
// contract's format (package contract) and returns one prediction per input,
// in order; errors name the model as well as the inputs.
func predict(ctx context.Context, b Backend, protocol, pipeline string, in contract.Inputs) ([]string, error) {
	preds, err := contract.PredictInputs(ctx, b.DialContext, protocol, pipeline, in)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", b.Model(), err)
	}
	return preds, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// startEval evaluates model in a worker, as part of flight f, against the
// model live now; f remembers which, so a switch of the live model while
// the worker runs can invalidate its result (see invalidateEval).
func (c *controller) startEval(ctx context.Context, f *flight, model string) {
	f.model = model
	wctx, cancel := context.WithCancel(ctx)
	prevCancel := f.cancel
	f.cancel = func() {
		cancel()
		if prevCancel != nil {
			prevCancel()
		}
	}
	f.evalCancel = cancel
	f.evaluating = true
	f.against = ""
	var liveSrv Serving
	if c.live != nil && c.live.model != model {
		liveSrv = c.live.srv
		f.against = c.live.model
	}
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		res := c.execEval(wctx, model, liveSrv)
		res.flight = f
		select {
		case c.results <- res:
		case <-ctx.Done():
		}
	}()
}

// execEval starts the candidate's serving container and scores it and the
// live model on the same rows: the holdout, and (for a run whose window held
// labelled feedback) the feedback's holdout rows, which the trainer never saw.
func (c *controller) execEval(ctx context.Context, model string, live Serving) evalResult {
	res := evalResult{model: model}
	spec := c.currentSpec()
	m, err := c.modelRecord(model)
	if err != nil {
		res.err = err
		return res
	}
	if m.State == storage.ModelCandidate {
		m.State = storage.ModelEvaluating
		if err := c.putModel(ctx, m, actorKilnd, "model.evaluating", nil); err != nil {
			res.err = err
			return res
		}
		crashpoint.Hit("eval.after-evaluating")
	}
	sets, err := c.evalSets(spec, m)
	if err != nil {
		res.err = err
		return res
	}
	srv, err := c.ensureServing(ctx, spec, m)
	if err != nil {
		res.err = fmt.Errorf("serve the candidate: %w", err)
		return res
	}
	res.cand = srv
	crashpoint.Hit("eval.after-serving-start")
	metric := spec.Evaluate.Metric
	var reasons []string
	var verdicts []contract.Verdict
	for _, set := range sets {
		s := setScore{name: set.name, rows: set.rows.Len()}
		preds, err := predict(ctx, srv, spec.Serve.Protocol, c.name, set.rows.Inputs(spec.Data.Format))
		if err != nil {
			res.err = fmt.Errorf("score the candidate on the %s rows: %w", set.name, err)
			return res
		}
		if s.score, err = contract.Score(metric, set.rows.Labels, preds); err != nil {
			res.err = err
			return res
		}
		if contract.LowerIsBetter(metric) {
			s.absErrP90 = absErrQuantile(set.rows.Labels, preds, 0.9)
		}
		if live != nil {
			lp, err := predict(ctx, live, spec.Serve.Protocol, c.name, set.rows.Inputs(spec.Data.Format))
			if err != nil {
				// The live model failing to answer is no reason to keep a good
				// candidate out; say so and gate on the floor alone.
				c.log.Warn("live model did not answer; gating on the floor alone", "rows", set.name, "live", live.Model(), "err", err)
			} else if s.liveScore, err = contract.Score(metric, set.rows.Labels, lp); err == nil {
				s.hasLive = true
			}
		}
		var v contract.Verdict
		v, s.reason = contract.Gate(metric, s.score, gateFloor(spec.Evaluate), spec.Evaluate.Gate.MinImprovement, s.liveScore, s.hasLive)
		s.pass = v == contract.GatePass
		verdicts = append(verdicts, v)
		res.sets = append(res.sets, s)
		if len(sets) > 1 {
			reasons = append(reasons, fmt.Sprintf("%s (%d rows): %s", s.name, s.rows, s.reason))
		} else {
			reasons = append(reasons, s.reason)
		}
	}
	// Equal is not better: the candidate must beat live on some set and
	// lose on none (contract.Promotes).
	res.pass = contract.Promotes(verdicts...)
	res.reason = strings.Join(reasons, "; ")
	return res
}

func gateFloor(e config.Evaluate) *float64 {
	if contract.LowerIsBetter(e.Metric) {
		return e.Gate.Max
	}
	return e.Gate.Min
}

// evalSet is one set of labelled rows a candidate is gated on.
type evalSet struct {
	name string
	rows *contract.Labelled
}

// evalSets gathers the rows a model is scored on: the spec's holdout file,
// else the holdout parts of the data versions its run trained on; and,
// apart, the holdout parts of the feedback versions in its window (an
// explicit window: Manager.Retrain), so the gate also asks "better than the
// live model on recent labelled rows?".
func (c *controller) evalSets(spec *config.Pipeline, m storage.Model) ([]evalSet, error) {
	hold, fb := &contract.Labelled{}, &contract.Labelled{}
	if f := spec.Evaluate.Holdout.File; f != "" {
		if err := addHoldoutFile(hold, spec, f); err != nil {
			return nil, err
		}
	}
	run, err := c.runRecord(m.Run)
	if err != nil {
		return nil, err
	}
	for _, id := range run.Datasets {
		d, err := c.dataset(id)
		if err != nil {
			return nil, err
		}
		into := hold
		switch {
		case d.Kind == storage.KindFeedback:
			into = fb
		case spec.Evaluate.Holdout.File != "":
			continue
		}
		if err := c.addHoldout(into, spec, d); err != nil {
			return nil, err
		}
	}
	var sets []evalSet
	if hold.Len() > 0 {
		sets = append(sets, evalSet{"holdout", hold})
	}
	if fb.Len() > 0 {
		sets = append(sets, evalSet{"feedback", fb})
	}
	if len(sets) == 0 {
		return nil, fmt.Errorf("no holdout rows in %v (evaluate.holdout.fraction is too small for so little data?)", run.Datasets)
	}
	return sets, nil
}

// addHoldoutFile reads the spec's holdout file (csv or jsonl).
func addHoldoutFile(into *contract.Labelled, spec *config.Pipeline, name string) error {
	fh, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("evaluate.holdout.file: %w", err)
	}
	defer fh.Close() //nolint:errcheck // opened read-only
	switch spec.Data.Format {
	case config.FormatCSV:
		return into.AddCSV(fh, spec.Data.Label, name)
	case config.FormatJSONL:
		return into.AddJSONL(fh, spec.Data.Label, name)
	}
	return fmt.Errorf("evaluate.holdout.file: a %s pipeline is scored on its holdout part", spec.Data.Format)
}

// maxEvalImage bounds one holdout image read into memory; ingest's size
// rules keep real ones far smaller.
const maxEvalImage = 64 << 20

// addHoldout appends d's holdout part: its rows (csv, jsonl, in the
// version's own format) or its labelled holdout images.
func (c *controller) addHoldout(into *contract.Labelled, spec *config.Pipeline, d storage.Dataset) error {
	format := cmp.Or(d.Format, spec.Data.Format)
	switch format {
	case storage.FormatImages:
		for _, f := range d.Files {
			if f.Label == "" || !f.Holdout {
				continue
			}
			if f.Blob.Size > maxEvalImage {
				return fmt.Errorf("%s %s: %d bytes is over the evaluator's %d", d.ID, f.Path, f.Blob.Size, maxEvalImage)
			}
			r, err := c.deps.Store.OpenBlob(f.Blob)
			if err != nil {
				return err
			}
			data, err := io.ReadAll(r)
			_ = r.Close() // blob opened read-only
			if err != nil {
				return fmt.Errorf("%s %s: %w", d.ID, f.Path, err)
			}
			into.AddImage(f.Label, data)
		}
		return nil
	case config.FormatCSV, config.FormatJSONL:
	default:
		return fmt.Errorf("kilnd evaluates csv, jsonl and images pipelines; %s is %s", d.ID, format)
	}
	if d.Holdout == nil {
		return nil
	}
	f, err := c.deps.Store.OpenBlob(*d.Holdout)
	if err != nil {
		return err
	}
	defer f.Close() //nolint:errcheck // blob opened read-only
	if format == config.FormatJSONL {
		return into.AddJSONL(f, spec.Data.Label, d.ID)
	}
	return into.AddCSV(f, spec.Data.Label, d.ID)
}

// evalMetrics are the numbers an evaluation records on the model: metric,
// holdout_rows and live_<metric> for the holdout; feedback_<metric>,
// feedback_rows and live_feedback_<metric> for labelled feedback rows.
func evalMetrics(metric string, sets []setScore) map[string]float64 {
	out := map[string]float64{}
	for _, s := range sets {
		key, rows := metric, "holdout_rows"
		if s.name == "feedback" {
			key, rows = "feedback_"+metric, "feedback_rows"
		}
		out[key], out[rows] = s.score, float64(s.rows)
		if s.name != "feedback" && contract.LowerIsBetter(metric) {
			out[AbsErrorP90] = s.absErrP90
		}
		if s.hasLive {
			out["live_"+key] = s.liveScore
		}
	}
	return out
}

// evalDone promotes a candidate that passed the gate, or rejects it; an
// evaluation the world changed under is re-run (stale) or rejected (void).
func (c *controller) evalDone(ctx context.Context, r evalResult) {
	if ctx.Err() != nil {
		return // kilnd stopping: the model stays evaluating and is re-evaluated
	}
	f := c.busy
	if f != r.flight {
		c.log.Warn("evaluation result of a flight no longer current; ignored", "model", r.model)
		return
	}
	f.evaluating = false
	if f.void == "" && f.stale != "" {
		why := f.stale
		f.stale = ""
		c.event(ctx, actorKilnd, "model.reevaluating", []string{r.model}, map[string]string{"reason": why})
		c.log.Info("evaluating again", "model", r.model, "reason", why)
		c.startEval(ctx, f, r.model)
		return
	}
	reply := func(err error) {
		if f.reply != nil {
			f.reply <- err
			f.reply = nil
		}
	}
	m, err := c.modelRecord(r.model)
	if err != nil {
		c.log.Error("read evaluated model", "model", r.model, "err", err)
		reply(err)
		c.finishFlight(ctx)
		return
	}
	metric := c.currentSpec().Evaluate.Metric
	if r.err == nil {
		m.Metrics = evalMetrics(metric, r.sets)
	}
	switch {
	case f.void != "":
		r.pass, r.reason = false, f.void
	case r.err != nil:
		r.reason = "evaluation failed: " + r.err.Error()
	case c.pinned != "":
		r.pass, r.reason = false, fmt.Sprintf("pipeline is pinned to %s; %s", c.pinned, r.reason)
	}
	if !r.pass {
		m.State, m.Reason = storage.ModelRejected, r.reason
		if err := c.putModel(ctx, m, actorKilnd, "model.rejected", f.req.details(map[string]string{"gate": r.reason, "reason": r.reason})); err != nil {
			c.log.Error("record rejection", "model", m.ID, "err", err)
		}
		crashpoint.Hit("eval.after-rejected")
		c.log.Debug("candidate rejected", // the model.rejected event is the journal's line
			"model", m.ID, "reason", r.reason)
		if r.cand != nil && (c.live == nil || c.live.model != m.ID) && (c.standby == nil || c.standby.model != m.ID) {
			if err := r.cand.Stop(ctx); err != nil {
				c.log.Warn("stop rejected candidate", "model", m.ID, "err", err)
			}
		}
		reply(fmt.Errorf("%w: %s not promoted: %s", ErrConflict, m.ID, r.reason))
		c.finishFlight(ctx)
		return
	}
	m.Reason = r.reason
	req := f.req
	extra := map[string]string{"gate": r.reason}
	if req.Reason == "" {
		extra["reason"] = r.reason
	}
	err = c.promote(ctx, m, r.cand, switchOp{req: req, details: extra})
	reply(err)
	c.finishFlight(ctx)
}

// AbsErrorP90 is the model metric holding the 90th-percentile |error| on
// the holdout (mae and rmse pipelines): the monitor's detector watches the
// rate of live errors above it, a correctness stream like a classifier's.
const AbsErrorP90 = "abs_error_p90"

// absErrQuantile is the q-quantile of |truth - prediction| over the rows
// that parse as numbers (Score has already refused any that do not).
func absErrQuantile(truth, pred []string, q float64) float64 {
	errs := make([]float64, 0, len(truth))
	for i := range truth {
		if _, e, err := contract.RowOutcome(contract.MetricMAE, truth[i], pred[i]); err == nil {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		return 0
	}
	slices.Sort(errs)
	return errs[min(len(errs)-1, int(math.Ceil(q*float64(len(errs))))-1)]
}
