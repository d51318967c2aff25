package monitor

import (
	"math"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/monitor/detect"
	"github.com/kiln-edge/kiln/storage"
)

func TestWatchOf(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	sc := []storage.Scoring{
		{Arrived: now.Add(-48 * time.Hour), Models: []storage.ModelScore{{Rows: 600, Excluded: 100}}},
		{Arrived: now.Add(-time.Hour), Models: []storage.ModelScore{{Rows: 300}}, Delay: &storage.Delay{P50: 90}},
		{Arrived: now.Add(-30 * 24 * time.Hour), Models: []storage.ModelScore{{Rows: 9999}}}, // outside the 7 days
	}
	d, err := detect.New(detect.Config{TargetFalseAlarm: 0.01, Baseline: 0.92})
	if err != nil {
		t.Fatal(err)
	}
	state, err := d.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	w := WatchOf(sc, &storage.MonitorState{Detector: state}, 50, 0.01, now)
	if w.LabelsPerDay != 500 || w.DelayP50 != 90*time.Second {
		t.Errorf("labels/day %v, delay %v; want 500 (1,000 labels in 2 days) and 90s", w.LabelsPerDay, w.DelayP50)
	}
	if w.Phase != detect.PhaseArmed || w.Blind {
		t.Errorf("phase %q blind %v; want armed, not blind", w.Phase, w.Blind)
	}
	want := expectedDelay(w.Baseline, w.Baseline-0.05, detect.DefaultHorizon, detect.DetectorShare*0.01) / 500 * 24
	if got := w.Detect5.Hours(); math.Abs(got-want) > 0.01 || got <= 0 {
		t.Errorf("a 5-point drop seen in %.2fh; want %.2fh", got, want)
	}
	if w := WatchOf(sc, nil, 1000, 0.01, now); !w.Blind {
		t.Errorf("500 labels a day against min_label_rate 1000: not blind (%+v)", w)
	}
}
