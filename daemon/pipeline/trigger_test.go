package pipeline

import (
	"testing"

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
