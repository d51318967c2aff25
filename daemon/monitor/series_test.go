package monitor

import (
	"math"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// TestSeriesByModelAcrossRoles: a model keeps one series when its role
// changes, and the cumulative value is computed from counts, not by
// averaging per-version values.
func TestSeriesByModelAcrossRoles(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	sc := []storage.Scoring{
		{Feedback: "p/d5", Arrived: t0.Add(time.Hour), Models: []storage.ModelScore{
			{Model: "p/m2", Role: "standby", Rows: 1, Right: 0}, {Model: "p/m3", Role: "live", Rows: 1, Right: 1}}},
		{Feedback: "p/d4", Arrived: t0, Models: []storage.ModelScore{
			{Model: "p/m2", Role: "live", Rows: 3, Right: 3}}},
	}
	s := Series(sc, "accuracy")
	m2 := s["p/m2"]
	if len(m2) != 2 || m2[0].Role != "live" || m2[1].Role != "standby" {
		t.Fatalf("m2 series = %+v, want live then standby points", m2)
	}
	if m2[1].Labels != 4 || m2[1].Cumulative != 0.75 || m2[1].Value != 0 {
		t.Errorf("m2 after d5 = %+v, want 4 labels, cumulative 3/4, this version 0", m2[1])
	}
	st := StandingOf(sc, "p/m2", "accuracy", t0.Add(time.Minute))
	if st.Labels != 1 || st.Value != 0 {
		t.Errorf("m2 standing since 08:01 = %+v, want 1 label at 0", st)
	}
	if v := StandingOf(sc, "p/m9", "accuracy", time.Time{}).Value; !math.IsNaN(v) {
		t.Errorf("unscored model's value = %v, want NaN", v)
	}
}

func TestTallyMetrics(t *testing.T) {
	var tl Tally
	tl.Add(storage.ModelScore{Rows: 4, SumAbsErr: 4, SumSqErr: 16,
		Confusion: map[string]map[string]int64{"a": {"a": 2, "b": 1}, "b": {"b": 1}}})
	if got := tl.Value("mae"); got != 1 {
		t.Errorf("mae = %v, want 1", got)
	}
	if got := tl.Value("rmse"); got != 2 {
		t.Errorf("rmse = %v, want 2", got)
	}
	// a: tp 2, fn 1, fp 0 -> p 1, r 2/3, f1 0.8; b: tp 1, fp 1 -> p 0.5, r 1, f1 2/3.
	if got, want := tl.Value("macro_f1"), (0.8+2.0/3)/2; math.Abs(got-want) > 1e-12 {
		t.Errorf("macro_f1 = %v, want %v", got, want)
	}
}
