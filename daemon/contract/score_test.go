package contract

import (
	"math"
	"strings"
	"testing"
)

func TestScore(t *testing.T) {
	tests := []struct {
		metric      string
		truth, pred []string
		want        float64
	}{
		{"accuracy", []string{"a", "b", "a", "c"}, []string{"a", "b", "b", "c"}, 0.75},
		{"accuracy", []string{"a "}, []string{" a"}, 1},
		// a: tp1 fp0 fn1 -> f1 2/3; b: tp1 fp1 fn0 -> 2/3; c: tp1 -> 1
		{"macro_f1", []string{"a", "b", "a", "c"}, []string{"a", "b", "b", "c"}, (2.0/3 + 2.0/3 + 1) / 3},
		// a class only predicted, never right, counts as F1 0
		{"macro_f1", []string{"a", "a"}, []string{"a", "z"}, (2.0/3 + 0) / 2},
		{"mae", []string{"1", "2", "3"}, []string{"2", "2", "1"}, 1},
		{"mae", []string{" 1.5"}, []string{"1e0 "}, 0.5},
		{"rmse", []string{"1", "2", "3"}, []string{"2", "2", "1"}, math.Sqrt(5.0 / 3)},
	}
	for _, tc := range tests {
		got, err := Score(tc.metric, tc.truth, tc.pred)
		if err != nil || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Score(%s, %v, %v) = %v, %v; want %v", tc.metric, tc.truth, tc.pred, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name, metric string
		truth, pred  []string
		want         string
	}{
		{"mismatched lengths", "accuracy", []string{"a"}, nil, "0 predictions for 1 rows"},
		{"no rows", "accuracy", nil, nil, "no labelled rows"},
		{"non-numeric mae", "mae", []string{"1", "x"}, []string{"1", "1"}, `row 2: mae needs numbers, got truth "x"`},
		{"non-numeric rmse prediction", "rmse", []string{"1"}, []string{"failing"}, `row 1: rmse needs numbers`},
		{"unknown metric", "auc", []string{"1"}, []string{"1"}, `unknown metric "auc"`},
	} {
		if _, err := Score(tc.metric, tc.truth, tc.pred); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Score = %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestRowOutcome(t *testing.T) {
	tests := []struct {
		metric, truth, pred string
		correct             bool
		absErr              float64
		err                 string
	}{
		{"accuracy", "failing", "failing", true, 0, ""},
		{"accuracy", " failing", "failing\r", true, 0, ""},
		{"accuracy", "failing", "normal", false, 0, ""},
		{"accuracy", "1", "1.0", false, 0, ""}, // labels are strings, as Score compares them
		{"macro_f1", "a", "a", true, 0, ""},
		{"mae", "1.5", "2", false, 0.5, ""},
		{"rmse", "10", " 7 ", false, 3, ""},
		{"mae", "1", "one", false, 0, `mae needs numbers, got truth "1" and prediction "one"`},
		{"auc", "1", "1", false, 0, `unknown metric "auc"`},
	}
	for _, tt := range tests {
		correct, absErr, err := RowOutcome(tt.metric, tt.truth, tt.pred)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("RowOutcome(%s, %q, %q) error = %v, want %q", tt.metric, tt.truth, tt.pred, err, tt.err)
			}
			continue
		}
		if err != nil || correct != tt.correct || absErr != tt.absErr {
			t.Errorf("RowOutcome(%s, %q, %q) = %v, %v, %v; want %v, %v", tt.metric, tt.truth, tt.pred, correct, absErr, err, tt.correct, tt.absErr)
		}
	}
}

// TestRowOutcomeAgreesWithScore: per-row outcomes summed the monitor's way
// give Score's accuracy, MAE and RMSE.
func TestRowOutcomeAgreesWithScore(t *testing.T) {
	truth := []string{"1", "2", "3", "4", "5"}
	pred := []string{"1", "2.5", "2", "4", "7"}
	var right int
	var sumAbs, sumSq float64
	for i := range truth {
		c, d, err := RowOutcome("accuracy", truth[i], pred[i])
		if err != nil {
			t.Fatal(err)
		}
		if c {
			right++
		}
		if _, d, err = RowOutcome("rmse", truth[i], pred[i]); err != nil {
			t.Fatal(err)
		}
		sumAbs += d
		sumSq += d * d
	}
	n := float64(len(truth))
	for metric, want := range map[string]float64{"accuracy": float64(right) / n, "mae": sumAbs / n, "rmse": math.Sqrt(sumSq / n)} {
		got, err := Score(metric, truth, pred)
		if err != nil || math.Abs(got-want) > 1e-12 {
			t.Errorf("Score(%s) = %v, %v; rows summed give %v", metric, got, err, want)
		}
	}
}

func TestLowerIsBetter(t *testing.T) {
	for m, want := range map[string]bool{"accuracy": false, "macro_f1": false, "mae": true, "rmse": true} {
		if got := LowerIsBetter(m); got != want {
			t.Errorf("LowerIsBetter(%s) = %v, want %v", m, got, want)
		}
	}
}

func TestGate(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name           string
		metric         string
		cand           float64
		floor          *float64
		minImprovement float64
		live           float64
		hasLive        bool
		want           Verdict
	}{
		{"first model above floor", "accuracy", 0.8, f(0.7), 0, 0, false, GatePass},
		{"first model below floor", "accuracy", 0.6, f(0.7), 0, 0, false, GateFail},
		{"beats live", "accuracy", 0.9, f(0.7), 0.01, 0.85, true, GatePass},
		{"ties live without margin: equal is not better", "accuracy", 0.85, nil, 0, 0.85, true, GateEven},
		{"ties live with a margin", "accuracy", 0.85, nil, 0.01, 0.85, true, GateEven},
		{"beats live barely, no margin", "accuracy", 0.8501, nil, 0, 0.85, true, GatePass},
		{"beats live by the margin", "accuracy", 0.875, nil, 0.025, 0.85, true, GatePass},
		{"worse than live", "accuracy", 0.84, nil, 0, 0.85, true, GateFail},
		{"not by the margin", "accuracy", 0.855, nil, 0.01, 0.85, true, GateEven},
		{"mae lower wins", "mae", 0.4, f(1), 0.05, 0.5, true, GatePass},
		{"mae above max", "mae", 1.2, f(1), 0, 0, false, GateFail},
		{"mae worse", "mae", 0.6, nil, 0, 0.5, true, GateFail},
		{"mae ties", "mae", 0.5, nil, 0, 0.5, true, GateEven},
	}
	for _, tc := range tests {
		got, why := Gate(tc.metric, tc.cand, tc.floor, tc.minImprovement, tc.live, tc.hasLive)
		if got != tc.want || why == "" {
			t.Errorf("%s: Gate = %v (%s); want %v", tc.name, got, why, tc.want)
		}
		if got == GateEven && tc.minImprovement == 0 && !strings.Contains(why, "equal is not better") {
			t.Errorf("%s: a tie's reason %q does not say equal is not better", tc.name, why)
		}
	}
}

func TestPromotes(t *testing.T) {
	for _, tc := range []struct {
		vs   []Verdict
		want bool
	}{
		{[]Verdict{GatePass}, true},
		{[]Verdict{GateEven}, false},
		{[]Verdict{GateFail}, false},
		{[]Verdict{GateEven, GateEven}, false},
		{[]Verdict{GateEven, GatePass}, true}, // ties a perfect live model on the holdout, beats it on feedback
		{[]Verdict{GatePass, GateFail}, false},
		{nil, false},
	} {
		if got := Promotes(tc.vs...); got != tc.want {
			t.Errorf("Promotes(%v) = %v; want %v", tc.vs, got, tc.want)
		}
	}
}
