package storage_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// TestScoringOncePerFeedback: a feedback version is scored at most once, and
// the scorings come back in version order across a reopen.
func TestScoringOncePerFeedback(t *testing.T) {
	dir := t.TempDir()
	s := storagetest.OpenAt(t, dir, storage.Options{Now: fixedClock()})
	first := storage.Scoring{Feedback: "iris/d10", Pipeline: "iris", Type: storage.FeedbackRows, Metric: "accuracy",
		Models: []storage.ModelScore{{Model: "iris/m2", Role: "live", Rows: 4, Right: 3, Value: 0.75,
			Confusion: map[string]map[string]int64{"a": {"a": 3, "b": 1}}}},
		Outcomes: []byte{1, 1, 1, storage.OutcomeLiveOnly}, Arrived: time.Unix(100, 0).UTC()}
	second := storage.Scoring{Feedback: "iris/d9", Pipeline: "iris", Type: storage.FeedbackLabels, Metric: "accuracy",
		Join: &storage.JoinReport{Labels: 3, Matched: 2, Unmatched: 1}, Arrived: time.Unix(90, 0).UTC()}
	mustUpdate(t, s, func(tx *storage.Tx) error { return tx.PutScoring(first) })
	mustUpdate(t, s, func(tx *storage.Tx) error { return tx.PutScoring(second) })
	err := s.Update(t.Context(), func(tx *storage.Tx) error { return tx.PutScoring(first) })
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second PutScoring of iris/d10 = %v, want ErrExists", err)
	}
	err = s.Update(t.Context(), func(tx *storage.Tx) error {
		return tx.PutScoring(storage.Scoring{Feedback: "iris/m1", Pipeline: "iris"})
	})
	if !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("PutScoring keyed by a model = %v, want ErrInvalid", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = storagetest.OpenAt(t, dir, storage.Options{Now: fixedClock()})
	got, err := s.Scorings("iris")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Feedback != "iris/d9" || got[1].Feedback != "iris/d10" {
		t.Fatalf("scorings = %+v, want d9 then d10", got)
	}
	got[1].Created = time.Time{}
	if diff := cmp.Diff(first, got[1]); diff != "" {
		t.Errorf("d10 read back (-want +got):\n%s", diff)
	}
	if other, _ := s.Scorings("iri"); len(other) != 0 {
		t.Errorf("scorings of pipeline iri = %v, want none (prefix must not leak)", other)
	}
}

func TestSignalsSince(t *testing.T) {
	s := storagetest.OpenAt(t, t.TempDir(), storage.Options{Now: fixedClock()})
	h := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for i := range 3 {
		sig := storage.Signal{Pipeline: "iris", Hour: h.Add(time.Duration(i) * time.Hour), Model: "iris/m1", Requests: int64(i + 1),
			Classes: map[string]int64{"a": 1}}
		mustUpdate(t, s, func(tx *storage.Tx) error { return tx.PutSignal(sig) })
	}
	// Replacing an hour keeps one record for it.
	mustUpdate(t, s, func(tx *storage.Tx) error {
		return tx.PutSignal(storage.Signal{Pipeline: "iris", Hour: h.Add(time.Hour), Model: "iris/m1", Requests: 9})
	})
	var got []storage.Signal
	err := s.View(func(tx *storage.Tx) (err error) { got, err = tx.Signals("iris", h.Add(time.Hour)); return err })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Requests != 9 || got[1].Requests != 3 {
		t.Fatalf("signals since 09:00 = %+v, want hours 09 (9 requests) and 10 (3)", got)
	}
}

func TestMonitorStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := storagetest.OpenAt(t, dir, storage.Options{Now: fixedClock()})
	var ok bool
	_ = s.View(func(tx *storage.Tx) (err error) { _, ok, err = tx.MonitorState("iris"); return err })
	if ok {
		t.Fatal("monitor state of a new pipeline exists")
	}
	want := storage.MonitorState{Pipeline: "iris", Model: "iris/m3", Labels: 120, Detector: []byte(`{"s":[1.5,0]}`),
		Alarm: &storage.Alarm{By: "cusum", Labels: 100, LiveOnly: 3, StbyOnly: 9}}
	mustUpdate(t, s, func(tx *storage.Tx) error { return tx.PutMonitorState(want) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = storagetest.OpenAt(t, dir, storage.Options{Now: fixedClock()})
	var got storage.MonitorState
	_ = s.View(func(tx *storage.Tx) (err error) { got, ok, err = tx.MonitorState("iris"); return err })
	got.Updated = time.Time{}
	if !ok || got.Model != want.Model || string(got.Detector) != string(want.Detector) || got.Alarm == nil || !cmp.Equal(*got.Alarm, *want.Alarm) {
		t.Errorf("monitor state read back = %+v (ok %v), want %+v", got, ok, want)
	}
}
