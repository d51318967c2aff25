package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// TestFeedbackNeverWakesTraining: the events ingest writes for feedback (any type) and for
// a released feedback version never kick a controller; data's do, and so do data events
// written before ingest named the kind.
func TestFeedbackNeverWakesTraining(t *testing.T) {
	ev := func(kind string, details map[string]string) storage.Event {
		return storage.Event{Kind: kind, Pipeline: "p", Refs: []string{"p/d1"}, Details: details}
	}
	for _, tc := range []struct {
		name string
		e    storage.Event
		want bool
	}{
		{"data accepted", ev("dataset.accepted", map[string]string{"kind": "data"}), true},
		{"data released", ev("dataset.released", map[string]string{"kind": "data"}), true},
		{"data accepted, older event without kind", ev("dataset.accepted", map[string]string{"rows": "3"}), true},
		{"feedback rows accepted", ev("dataset.accepted", map[string]string{"kind": "feedback", "feedback": storage.FeedbackRows}), false},
		{"late labels accepted", ev("dataset.accepted", map[string]string{"kind": "feedback", "feedback": storage.FeedbackLabels}), false},
		{"joined accepted", ev("dataset.accepted", map[string]string{"kind": "feedback", "feedback": storage.FeedbackJoined}), false},
		{"feedback released", ev("dataset.released", map[string]string{"kind": "feedback"}), false},
		{"data quarantined", ev("dataset.quarantined", map[string]string{"kind": "data"}), false},
		{"data duplicate", ev("dataset.duplicate", map[string]string{"kind": "data"}), false},
		{"no pipeline", storage.Event{Kind: "dataset.accepted", Details: map[string]string{"kind": "data"}}, false},
	} {
		if got := isDataEvent(tc.e); got != tc.want {
			t.Errorf("%s: isDataEvent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWindow: the spec's window holds admitted data versions with a train part, never
// feedback, quarantined or suspect ones.
func TestWindow(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	part := &storage.BlobRef{Digest: "x"}
	ds := []storage.Dataset{
		{ID: "p/d1", Kind: storage.KindData, State: storage.DatasetAccepted, Train: part, Created: now.Add(-72 * time.Hour)},
		{ID: "p/d2", Kind: storage.KindData, State: storage.DatasetQuarantined, Train: part, Created: now.Add(-48 * time.Hour)},
		{ID: "p/d3", Kind: storage.KindFeedback, State: storage.DatasetAccepted, Train: part, Created: now.Add(-36 * time.Hour)},
		{ID: "p/d4", Kind: storage.KindData, State: storage.DatasetReleased, Train: part, Created: now.Add(-24 * time.Hour)},
		{ID: "p/d5", Kind: storage.KindData, State: storage.DatasetAccepted, Train: part, Created: now.Add(-time.Hour)},
		{ID: "p/d6", Kind: storage.KindData, State: storage.DatasetAccepted, Train: part, Created: now.Add(-time.Hour), Suspect: "p/m2"},
	}
	ids := func(ds []storage.Dataset) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.ID)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		w    config.Window
		want string
	}{
		{config.Window{Versions: "all"}, "p/d1,p/d4,p/d5"},
		{config.Window{Last: 2}, "p/d4,p/d5"},
		{config.Window{Days: 2}, "p/d4,p/d5"},
	} {
		if got := ids(window(ds, tc.w, now)); got != tc.want {
			t.Errorf("window(%+v) = %s; want %s", tc.w, got, tc.want)
		}
	}
}
