package contract

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The metrics a spec's evaluate.metric may name.
const (
	MetricAccuracy = "accuracy"
	MetricMacroF1  = "macro_f1"
	MetricMAE      = "mae"
	MetricRMSE     = "rmse"
)

// Score computes metric over predictions against the truth, row by row.
// Classification metrics compare labels as trimmed strings; regression
// metrics parse both as numbers.
func Score(metric string, truth, pred []string) (float64, error) {
	if len(truth) != len(pred) {
		return 0, fmt.Errorf("%d predictions for %d rows", len(pred), len(truth))
	}
	if len(truth) == 0 {
		return 0, errors.New("no labelled rows to score")
	}
	switch metric {
	case MetricAccuracy:
		right := 0
		for i := range truth {
			if strings.TrimSpace(truth[i]) == strings.TrimSpace(pred[i]) {
				right++
			}
		}
		return float64(right) / float64(len(truth)), nil
	case MetricMacroF1:
		return macroF1(truth, pred), nil
	case MetricMAE, MetricRMSE:
		var sumAbs, sumSq float64
		for i := range truth {
			d, err := absError(metric, truth[i], pred[i])
			if err != nil {
				return 0, fmt.Errorf("row %d: %w", i+1, err)
			}
			sumAbs += d
			sumSq += d * d
		}
		if metric == MetricMAE {
			return sumAbs / float64(len(truth)), nil
		}
		return math.Sqrt(sumSq / float64(len(truth))), nil
	}
	return 0, fmt.Errorf("unknown metric %q", metric)
}

// RowOutcome is one row's result under metric, for scores kept row by row
// (the monitor's paired outcomes of live and standby). For classification
// metrics correct is trimmed string equality and absErr 0; for regression
// metrics absErr is |truth - pred| and correct is false, a regression has
// no right answer to hit.
func RowOutcome(metric, truth, pred string) (correct bool, absErr float64, err error) {
	switch metric {
	case MetricAccuracy, MetricMacroF1:
		return strings.TrimSpace(truth) == strings.TrimSpace(pred), 0, nil
	case MetricMAE, MetricRMSE:
		d, err := absError(metric, truth, pred)
		return false, d, err
	}
	return false, 0, fmt.Errorf("unknown metric %q", metric)
}

func absError(metric, truth, pred string) (float64, error) {
	t, err1 := strconv.ParseFloat(strings.TrimSpace(truth), 64)
	p, err2 := strconv.ParseFloat(strings.TrimSpace(pred), 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s needs numbers, got truth %q and prediction %q", metric, truth, pred)
	}
	return math.Abs(t - p), nil
}

// macroF1 is the unweighted mean of per-class F1 over every class seen in
// the truth or the predictions.
func macroF1(truth, pred []string) float64 {
	conf := map[string]map[string]int64{}
	for i := range truth {
		t, p := strings.TrimSpace(truth[i]), strings.TrimSpace(pred[i])
		if conf[t] == nil {
			conf[t] = map[string]int64{}
		}
		conf[t][p]++
	}
	return MacroF1(conf)
}

// MacroF1 is the unweighted mean of per-class F1 over every class seen in
// a confusion table (truth -> prediction -> rows), as truth or as
// prediction; NaN for an empty table. The monitor sums tables across
// feedback versions and scores them with it.
func MacroF1(conf map[string]map[string]int64) float64 {
	type counts struct{ tp, fp, fn int64 }
	per := map[string]*counts{}
	get := func(c string) *counts {
		if per[c] == nil {
			per[c] = &counts{}
		}
		return per[c]
	}
	for t, row := range conf {
		for p, n := range row {
			if n == 0 {
				continue
			}
			if t == p {
				get(t).tp += n
				continue
			}
			get(p).fp += n
			get(t).fn += n
		}
	}
	if len(per) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, c := range per {
		if c.tp == 0 {
			continue // F1 of this class is 0
		}
		precision := float64(c.tp) / float64(c.tp+c.fp)
		recall := float64(c.tp) / float64(c.tp+c.fn)
		sum += 2 * precision * recall / (precision + recall)
	}
	return sum / float64(len(per))
}

// LowerIsBetter reports whether a smaller value of metric is a better model.
func LowerIsBetter(metric string) bool { return metric == MetricMAE || metric == MetricRMSE }

// Verdict is the gate's answer on one set of rows.
type Verdict int

const (
	// GateFail: below the floor, or worse than the live model.
	GateFail Verdict = iota
	// GateEven: not worse than the live model, and not better by the
	// margin either. Equal is not better: a candidate that only ties live
	// would cost a flip and a warm slot and gain nothing.
	GateEven
	// GatePass: better than the live model by the margin (strictly better
	// when the margin is 0), or above the floor with no live model.
	GatePass
)

// Gate judges a candidate scoring cand against a live model scoring live on
// the same rows (hasLive false when there is none). floor is the absolute
// bound (min for higher-is-better metrics, max for lower-is-better; nil for
// none) and minImprovement the margin the candidate must beat live by. The
// reason says why either way, for the event and `kiln models show`.
func Gate(metric string, cand float64, floor *float64, minImprovement float64, live float64, hasLive bool) (Verdict, string) {
	lower := LowerIsBetter(metric)
	if floor != nil {
		if lower && cand > *floor {
			return GateFail, fmt.Sprintf("%s %.4f is above the gate's max %.4f", metric, cand, *floor)
		}
		if !lower && cand < *floor {
			return GateFail, fmt.Sprintf("%s %.4f is below the gate's min %.4f", metric, cand, *floor)
		}
	}
	if !hasLive {
		return GatePass, fmt.Sprintf("%s %.4f passes the gate; no live model to beat", metric, cand)
	}
	gain := cand - live
	if lower {
		gain = live - cand
	}
	switch {
	case gain < 0:
		return GateFail, fmt.Sprintf("%s %.4f is worse than the live model's %.4f on the same rows", metric, cand, live)
	case gain == 0:
		return GateEven, fmt.Sprintf("%s %.4f only ties the live model's %.4f on the same rows (equal is not better)", metric, cand, live)
	case gain < minImprovement:
		return GateEven, fmt.Sprintf("%s %.4f beats the live model's %.4f by %.4f on the same rows, less than min_improvement %.4f", metric, cand, live, gain, minImprovement)
	}
	return GatePass, fmt.Sprintf("%s %.4f beats the live model's %.4f (by %.4f) on the same rows", metric, cand, live, gain)
}

// Promotes combines the verdicts on every set of rows a candidate was scored
// on (the holdout, and labelled feedback): it replaces live only when it
// fails on none and passes on at least one, so a candidate that merely ties
// everywhere is kept out, while one that ties a perfect live model on the
// holdout and beats it on recent feedback gets in.
func Promotes(verdicts ...Verdict) bool {
	pass := false
	for _, v := range verdicts {
		switch v {
		case GateFail:
			return false
		case GatePass:
			pass = true
		}
	}
	return pass
}
