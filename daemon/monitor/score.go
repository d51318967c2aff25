package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// scoreVersion scores one feedback version and records the result, its
// lineage and its event in one transaction. Everything before that commit is
// free of side effects (predictions) or idempotent (CommitJoined), so a crash
// anywhere before it only means the version is scored again at the next
// start, and a crash after it means it is not: each label counts once.
func (m *Monitor) scoreVersion(ctx context.Context, spec pipelineSpec, d storage.Dataset) error {
	fb, err := m.deps.Feedback.ReadFeedback(d, spec.label)
	if err != nil {
		return fmt.Errorf("read feedback %s: %w", d.ID, err)
	}
	live, standby, err := m.deps.Serving(ctx, spec.name)
	if err != nil {
		return fmt.Errorf("serving of %s: %w", spec.name, err)
	}
	sc := storage.Scoring{Feedback: d.ID, Pipeline: spec.name, Type: d.Feedback, Metric: spec.metric, Arrived: d.Created}
	var obs []observation
	switch d.Feedback {
	case storage.FeedbackRows:
		obs, err = m.scoreRows(ctx, spec, fb, live, standby, &sc)
	case storage.FeedbackLabels:
		obs, err = m.scoreLabels(ctx, spec, d, fb, live, standby, &sc)
	}
	if err != nil {
		return fmt.Errorf("score feedback %s: %w", d.ID, err)
	}
	crashpoint.Hit("feedback.after-predict")
	if err := m.record(ctx, spec, sc, obs); err != nil {
		return err
	}
	crashpoint.Hit("feedback.after-record")
	return nil
}

// scored is one labelled row as seen by up to two models.
type scored struct {
	label    string
	features []string // nil when unknown (a late label whose input the log did not keep)
	image    []byte   // images pipelines: the image (features is its digest)
	answer   [2]string
	has      [2]bool // has[1]: the second model scored it too
}

// pair are the (up to) two models a version is scored through: the one that
// answered (or is live) first, the other (the standby, or a replay target)
// second.
type pair [2]Backend

func (m *Monitor) scoreRows(ctx context.Context, spec pipelineSpec, fb *Feedback, live, standby Backend, sc *storage.Scoring) ([]observation, error) {
	if live == nil {
		sc.Note = "no live model when the feedback arrived; nothing scored"
		return nil, nil
	}
	models := pair{live, standby}
	cols := fb.Columns
	if spec.format == contract.FormatImages {
		cols = []string{imageColumn}
	}
	rows := make([]scored, len(fb.Labels))
	for i := range rows {
		if spec.format == contract.FormatImages {
			rows[i] = scored{label: fb.Labels[i], features: imageKey(fb.Images[i]), image: fb.Images[i]}
		} else {
			rows[i] = scored{label: fb.Labels[i], features: fb.Rows[i]}
		}
	}
	excluded := [2]int64{}
	for k, b := range models {
		if b == nil {
			continue
		}
		keep, n, err := m.unseen(b.Model(), spec, cols, rows)
		if err != nil {
			return nil, err
		}
		excluded[k] = n
		preds, err := contract.PredictInputs(ctx, b.DialContext, spec.protocol, spec.name, inputsOf(spec, cols, rows, keep))
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", b.Model(), err)
		}
		for j, i := range keep {
			rows[i].answer[k], rows[i].has[k] = preds[j], true
		}
	}
	return tally(spec, sc, models, m.errThresholds(spec, models), rows, excluded, func(r scored, k int) bool { return r.has[k] })
}

// unseen returns the indexes of rows that model did not train on, and how
// many it did.
func (m *Monitor) unseen(model string, spec pipelineSpec, cols []string, rows []scored) ([]int, int64, error) {
	ti, err := m.train.get(model, spec)
	if err != nil {
		return nil, 0, err
	}
	idx := ti.order(cols)
	var keep []int
	var n int64
	for i, r := range rows {
		if r.features != nil {
			if _, seen := ti.keys[m.train.key(r.features, idx)]; seen {
				n++
				continue
			}
		}
		keep = append(keep, i)
	}
	return keep, n, nil
}

// tally fills sc from rows: a ModelScore per model, the paired outcomes and
// the per-row outcome stream.
func tally(spec pipelineSpec, sc *storage.Scoring, models pair, thr [2]float64, rows []scored, excluded [2]int64, scoredBy func(scored, int) bool) ([]observation, error) {
	var obs []observation
	var within [2]bool // regression: |error| within the model's holdout p90
	var ms [2]storage.ModelScore
	var right [2][]bool
	classify := !contract.LowerIsBetter(spec.metric)
	paired := storage.Paired{}
	sc.Outcomes = make([]byte, 0, len(rows))
	for _, r := range rows {
		var ok [2]bool
		var in [2]bool
		for k := range models {
			if models[k] == nil || !scoredBy(r, k) {
				continue
			}
			in[k] = true
			correct, absErr, err := contract.RowOutcome(spec.metric, r.label, r.answer[k])
			if err != nil {
				return nil, fmt.Errorf("model %s: %w", models[k].Model(), err)
			}
			ok[k] = correct
			within[k] = absErr <= thr[k]
			s := &ms[k]
			s.Rows++
			if classify {
				if correct {
					s.Right++
				}
				t, p := strings.TrimSpace(r.label), strings.TrimSpace(r.answer[k])
				if s.Confusion == nil {
					s.Confusion = map[string]map[string]int64{}
				}
				if s.Confusion[t] == nil {
					s.Confusion[t] = map[string]int64{}
				}
				s.Confusion[t][p]++
			} else {
				s.SumAbsErr += absErr
				s.SumSqErr += absErr * absErr
			}
			right[k] = append(right[k], correct)
		}
		if !in[0] {
			continue
		}
		var o byte
		if ok[0] {
			o |= storage.OutcomeLiveRight
		}
		if in[1] {
			if ok[1] {
				o |= storage.OutcomeStandbyRight
			}
			if classify {
				paired.Rows++
				switch {
				case ok[0] && ok[1]:
					paired.Both++
				case ok[0]:
					paired.LiveOnly++
				case ok[1]:
					paired.StandbyOnly++
				default:
					paired.Neither++
				}
			}
		} else {
			o |= storage.OutcomeLiveOnly
		}
		sc.Outcomes = append(sc.Outcomes, o)
		o2 := observation{live: ok[0], standby: ok[1], paired: in[1], class: strings.TrimSpace(r.label)}
		if !classify {
			// mae/rmse: the stream is "the error stayed within the holdout's
			// 90th percentile", per model; unknown thresholds feed nothing.
			o2.live, o2.standby, o2.class = within[0], within[1], ""
			o2.unknown = math.IsNaN(thr[0])
			o2.paired = o2.paired && !math.IsNaN(thr[1])
		}
		obs = append(obs, o2)
	}
	roles := [2]string{"live", "standby"}
	for k, b := range models {
		if b == nil {
			continue
		}
		s := ms[k]
		s.Model, s.Role, s.Excluded = b.Model(), roles[k], excluded[k]
		var t Tally
		t.Add(s)
		s.Value = t.Value(spec.metric)
		if math.IsNaN(s.Value) {
			s.Value = 0 // JSON has no NaN; Rows 0 says there is no value
		}
		sc.Models = append(sc.Models, s)
	}
	if paired.Rows > 0 {
		sc.Paired = &paired
	}
	return obs, nil
}

// observation is one labelled row as the detector sees it: whether the live
// model was right, whether the standby was (when paired), and the true class.
type observation struct {
	live, standby, paired bool
	class                 string
	unknown               bool // nothing to say of the live model (no threshold)
}

// errThresholds are the models' holdout 90th-percentile |error| (mae and
// rmse pipelines; recorded at evaluation), NaN where unknown.
func (m *Monitor) errThresholds(spec pipelineSpec, models pair) [2]float64 {
	thr := [2]float64{math.NaN(), math.NaN()}
	if !contract.LowerIsBetter(spec.metric) {
		return thr
	}
	_ = m.deps.Store.View(func(tx *storage.Tx) error {
		for k, b := range models {
			if b == nil {
				continue
			}
			if rec, err := tx.Model(b.Model()); err == nil {
				if v, ok := rec.Metrics[absErrorP90]; ok {
					thr[k] = v
				}
			}
		}
		return nil
	})
	return thr
}

// absErrorP90 is the model metric package pipeline records for mae/rmse
// pipelines (pipeline.AbsErrorP90).
const absErrorP90 = "abs_error_p90"

// request is one logged request, decoded once however many labels name it.
type request struct {
	rec    Logged
	preds  []string
	inputs [][]string // per row its features (an image's: its digest)
	images [][]byte   // images pipelines: the logged images
	err    error      // why its rows cannot be joined
}

// scoreLabels joins late labels to the prediction log. The logged answer is
// what the model that answered said (it was live then); the logged input is
// replayed through the other model now serving (the standby, or the live
// model when the answering one has become the standby since), so both are
// scored on the same rows. Rows with their inputs become a joined feedback
// version, so retraining never needs the expiring log.
func (m *Monitor) scoreLabels(ctx context.Context, spec pipelineSpec, d storage.Dataset, fb *Feedback, live, standby Backend, sc *storage.Scoring) ([]observation, error) {
	if err := m.deps.Log.Flush(ctx, spec.name); err != nil {
		m.log.Warn("flush prediction log before a join", "pipeline", spec.name, "err", err)
	}
	join := &storage.JoinReport{Labels: int64(len(fb.IDs))}
	sc.Join = join
	reqs := map[string]*request{}
	seen := map[string]bool{}
	type hit struct {
		scored
		model string
		at    time.Time
	}
	var hits []hit
	for i, id := range fb.IDs {
		if seen[id] {
			join.Duplicates++
			continue
		}
		seen[id] = true
		reqID, row, err := contract.SplitRowID(id)
		if err != nil {
			join.Unmatched++ // an empty id, or a row without a request id
			continue
		}
		r := reqs[reqID]
		if r == nil {
			r = m.request(spec, reqID)
			reqs[reqID] = r
		}
		if errors.Is(r.err, ErrNotLogged) && reqID != id {
			// A client's own request id may hold a colon: "order:7" is
			// then row 0 of request "order:7", not row 7 of "order".
			whole := reqs[id]
			if whole == nil {
				whole = m.request(spec, id)
				reqs[id] = whole
			}
			if !errors.Is(whole.err, ErrNotLogged) {
				r, row = whole, 0
			}
		}
		switch {
		case errors.Is(r.err, ErrNotLogged):
			join.Unmatched++
			continue
		case r.err != nil && r.preds == nil:
			join.Failed++
			continue
		case row >= len(r.preds):
			join.Unmatched++
			continue
		}
		join.Matched++
		h := hit{scored: scored{label: fb.Labels[i], answer: [2]string{r.preds[row]}, has: [2]bool{true}}, model: r.rec.Model, at: r.rec.Time}
		if row < len(r.inputs) {
			h.features = r.inputs[row]
			if row < len(r.images) {
				h.image = r.images[row]
			}
		} else {
			join.NoInput++
		}
		hits = append(hits, h)
	}
	if len(hits) == 0 {
		sc.Note = "no label matched a logged prediction"
		return nil, nil
	}
	// The model that answered most of the matched rows is scored first;
	// rows another model answered (a flip between them) are its own.
	counts := map[string]int{}
	for _, h := range hits {
		counts[h.model]++
	}
	answered := hits[0].model
	for name, n := range counts {
		if n > counts[answered] || n == counts[answered] && name < answered {
			answered = name
		}
	}
	var first Backend = namedBackend(answered)
	var second Backend
	switch {
	case standby != nil && standby.Model() != answered:
		second = standby
	case live != nil && live.Model() != answered:
		second = live
	}
	models := pair{first, second}
	var rows []scored
	var delays []float64
	for _, h := range hits {
		if h.model != answered {
			continue
		}
		rows = append(rows, h.scored)
		delays = append(delays, d.Created.Sub(h.at).Seconds())
		if sc.PredictedFirst.IsZero() || h.at.Before(sc.PredictedFirst) {
			sc.PredictedFirst = h.at
		}
		if h.at.After(sc.PredictedLast) {
			sc.PredictedLast = h.at
		}
	}
	if other := len(hits) - len(rows); other > 0 {
		sc.Note = fmt.Sprintf("%d matched rows were answered by another model than %s and are not scored", other, answered)
	}
	sc.Delay = delayQuantiles(delays)
	var excluded [2]int64
	var cols []string
	for k, b := range models {
		if b == nil {
			continue
		}
		ti, err := m.train.get(b.Model(), spec)
		if err != nil {
			return nil, err
		}
		if cols == nil {
			cols = ti.columns
		}
		keep, n, err := m.unseen(b.Model(), spec, ti.columns, rows)
		if err != nil {
			return nil, err
		}
		excluded[k] = n
		if k == 0 {
			drop := make([]bool, len(rows))
			for i := range drop {
				drop[i] = true
			}
			for _, i := range keep {
				drop[i] = false
			}
			for i := range rows {
				if drop[i] {
					rows[i].has[0] = false
				}
			}
			continue
		}
		var at []int
		for _, i := range keep {
			if replayable(spec, rows[i]) {
				at = append(at, i)
			}
		}
		if len(at) == 0 {
			continue
		}
		preds, err := contract.PredictInputs(ctx, b.DialContext, spec.protocol, spec.name, inputsOf(spec, cols, rows, at))
		if err != nil {
			return nil, fmt.Errorf("replay through %s: %w", b.Model(), err)
		}
		for j, i := range at {
			rows[i].answer[1], rows[i].has[1] = preds[j], true
		}
	}
	obs, err := tally(spec, sc, models, m.errThresholds(spec, models), rows, excluded, func(r scored, k int) bool { return r.has[k] })
	if err != nil {
		return nil, err
	}
	if spec.format == contract.FormatImages {
		// An images pipeline's labelled images train when they come as an
		// image batch (feedback/<pipeline>/): the log's keys are digests,
		// not rows, so no joined version is made of them.
		return obs, nil
	}
	// The joined version: every matched row whose input the log kept.
	var jrows [][]string
	var jlabels []string
	for _, h := range hits {
		if h.features != nil {
			jrows = append(jrows, h.features)
			jlabels = append(jlabels, h.label)
		}
	}
	if len(jrows) > 0 && cols != nil {
		j, err := m.deps.Feedback.CommitJoined(ctx, spec.name, d.ID, cols, jrows, jlabels)
		if err != nil {
			return nil, fmt.Errorf("record joined rows: %w", err)
		}
		join.Joined = j.ID
	}
	return obs, nil
}

// request looks a request id up once and decodes its answer and inputs.
func (m *Monitor) request(spec pipelineSpec, reqID string) *request {
	rec, err := m.deps.Log.Lookup(spec.name, reqID)
	r := &request{rec: rec}
	if err != nil {
		r.err = err
		if !errors.Is(err, ErrNotLogged) {
			m.log.Warn("prediction log lookup failed", "pipeline", spec.name, "err", err)
		}
		return r
	}
	if rec.Status/100 != 2 {
		r.err = fmt.Errorf("the logged request failed with status %d", rec.Status)
		return r
	}
	if rec.Truncated {
		r.err = errors.New("the logged answer was cut at the log's output cap")
		return r
	}
	r.preds, r.err = contract.ParseAnswer(rec.Protocol, rec.Output)
	if r.err != nil {
		r.preds = nil
		return r
	}
	if rows, images, ok := m.decodeLogged(spec, rec.Model, rec); ok && len(rows) == len(r.preds) {
		r.inputs, r.images = rows, images
	}
	return r
}

// namedBackend stands for a model whose answers come from the log: it is
// never dialled.
type namedBackend string

func (n namedBackend) Model() string { return string(n) }
func (n namedBackend) DialContext(context.Context) (net.Conn, error) {
	return nil, fmt.Errorf("model %s is scored from the prediction log, not dialled", string(n))
}

func delayQuantiles(s []float64) *storage.Delay {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return &storage.Delay{N: int64(len(s)), P50: quantile(s, 0.5), P90: quantile(s, 0.9), P99: quantile(s, 0.99), Max: s[len(s)-1]}
}
