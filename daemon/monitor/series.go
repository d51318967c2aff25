package monitor

import (
	"math"
	"slices"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/storage"
)

// Tally adds up one model's scores across feedback versions, so any metric
// the spec allows can be recomputed over any span of them.
type Tally struct {
	Rows      int64
	Excluded  int64
	Right     int64
	SumAbsErr float64
	SumSqErr  float64
	Confusion map[string]map[string]int64
}

// Add counts one version's score.
func (t *Tally) Add(s storage.ModelScore) {
	t.Rows += s.Rows
	t.Excluded += s.Excluded
	t.Right += s.Right
	t.SumAbsErr += s.SumAbsErr
	t.SumSqErr += s.SumSqErr
	for truth, row := range s.Confusion {
		if t.Confusion == nil {
			t.Confusion = map[string]map[string]int64{}
		}
		if t.Confusion[truth] == nil {
			t.Confusion[truth] = map[string]int64{}
		}
		for pred, n := range row {
			t.Confusion[truth][pred] += n
		}
	}
}

// Value is metric over everything added; NaN with no rows.
func (t *Tally) Value(metric string) float64 {
	if t.Rows == 0 {
		return math.NaN()
	}
	n := float64(t.Rows)
	switch metric {
	case "mae":
		return t.SumAbsErr / n
	case "rmse":
		return math.Sqrt(t.SumSqErr / n)
	case "macro_f1":
		return contract.MacroF1(t.Confusion)
	default:
		return float64(t.Right) / n
	}
}

// Point is one model's standing after one feedback version.
type Point struct {
	Time     time.Time // the feedback version's arrival (label time)
	Feedback string
	Model    string
	Role     string // live or standby when scored
	// Rows is this version's scored rows and Value the metric on them alone.
	Rows  int64
	Value float64
	// Labels and Cumulative are the model's running totals over every version so far.
	Labels     int64
	Cumulative float64
}

// Series turns a pipeline's scorings (in any order) into each model's points
// in label-arrival order. Scorings are keyed by model ID, never by role: a
// model keeps its series across promotions and rollbacks.
func Series(scorings []storage.Scoring, metric string) map[string][]Point {
	sorted := slices.Clone(scorings)
	slices.SortStableFunc(sorted, func(a, b storage.Scoring) int { return a.Arrived.Compare(b.Arrived) })
	tallies := map[string]*Tally{}
	out := map[string][]Point{}
	for _, sc := range sorted {
		for _, ms := range sc.Models {
			if ms.Rows == 0 {
				continue
			}
			t := tallies[ms.Model]
			if t == nil {
				t = &Tally{}
				tallies[ms.Model] = t
			}
			t.Add(ms)
			one := Tally{}
			one.Add(ms)
			out[ms.Model] = append(out[ms.Model], Point{
				Time: sc.Arrived, Feedback: sc.Feedback, Model: ms.Model, Role: ms.Role,
				Rows: ms.Rows, Value: one.Value(metric), Labels: t.Rows, Cumulative: t.Value(metric),
			})
		}
	}
	return out
}

// Standing is a model's monitored result: its metric over every label scored
// through it since from (zero: all), and the paired outcomes of the versions
// it was scored in as the live model.
type Standing struct {
	Model  string
	Metric string
	Value  float64 // NaN without labels
	Labels int64
	// Excluded rows were in the model's training data and left out.
	Excluded int64
	Paired   storage.Paired
	Versions int
	Last     time.Time
}

// StandingOf sums model's scores from from on.
func StandingOf(scorings []storage.Scoring, model, metric string, from time.Time) Standing {
	st := Standing{Model: model, Metric: metric}
	var t Tally
	for _, sc := range scorings {
		if sc.Arrived.Before(from) {
			continue
		}
		for i, ms := range sc.Models {
			if ms.Model != model {
				continue
			}
			t.Add(ms)
			st.Versions++
			if sc.Arrived.After(st.Last) {
				st.Last = sc.Arrived
			}
			if i == 0 && sc.Paired != nil {
				st.Paired.Rows += sc.Paired.Rows
				st.Paired.Both += sc.Paired.Both
				st.Paired.LiveOnly += sc.Paired.LiveOnly
				st.Paired.StandbyOnly += sc.Paired.StandbyOnly
				st.Paired.Neither += sc.Paired.Neither
			}
		}
	}
	st.Value, st.Labels, st.Excluded = t.Value(metric), t.Rows, t.Excluded
	return st
}
