package pipeline

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
		{"mae", []string{"1", "2", "3"}, []string{"2", "2", "1"}, 1},
		{"rmse", []string{"1", "2", "3"}, []string{"2", "2", "1"}, math.Sqrt(5.0 / 3)},
	}
	for _, tc := range tests {
		got, err := Score(tc.metric, tc.truth, tc.pred)
		if err != nil || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Score(%s, %v, %v) = %v, %v; want %v", tc.metric, tc.truth, tc.pred, got, err, tc.want)
		}
	}
	if _, err := Score("accuracy", []string{"a"}, nil); err == nil {
		t.Error("mismatched lengths scored")
	}
	if _, err := Score("mae", []string{"x"}, []string{"1"}); err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Errorf("non-numeric mae = %v; want an error naming the row", err)
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
		want           bool
	}{
		{"first model above floor", "accuracy", 0.8, f(0.7), 0, 0, false, true},
		{"first model below floor", "accuracy", 0.6, f(0.7), 0, 0, false, false},
		{"beats live", "accuracy", 0.9, f(0.7), 0.01, 0.85, true, true},
		{"ties live without margin", "accuracy", 0.85, nil, 0, 0.85, true, true},
		{"worse than live", "accuracy", 0.84, nil, 0, 0.85, true, false},
		{"not by the margin", "accuracy", 0.855, nil, 0.01, 0.85, true, false},
		{"mae lower wins", "mae", 0.4, f(1), 0.05, 0.5, true, true},
		{"mae above max", "mae", 1.2, f(1), 0, 0, false, false},
		{"mae worse", "mae", 0.6, nil, 0, 0.5, true, false},
	}
	for _, tc := range tests {
		got, why := Gate(tc.metric, tc.cand, tc.floor, tc.minImprovement, tc.live, tc.hasLive)
		if got != tc.want || why == "" {
			t.Errorf("%s: Gate = %v (%s); want %v", tc.name, got, why, tc.want)
		}
	}
}
