package ingest

import (
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/storage"
)

// TestImageLateLabels: late labels dropped into feedback/<p>/ of an images pipeline, as a
// loose CSV, a loose JSONL file or a batch folder of them, are labels feedback (the
// monitor joins them to logged predictions), held to validate.labels, with the format of
// the file they came in; not loose images. A loose CSV with another header is quarantined
// saying what an images pipeline's feedback may be.
func TestImageLateLabels(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\nvalidate: {labels: [cat, dog]}\n"))
	renameIn(t, e.feedback("p"), "late.csv", "request_id,label\nr1,cat\nr2,dog\nr3,cow\n")
	f := e.nth("p", 1)
	if f.State != storage.DatasetAccepted || f.Kind != storage.KindFeedback || f.Feedback != storage.FeedbackLabels ||
		f.Format != "csv" || f.Rows != 2 || f.Train != nil || f.Holdout != nil {
		t.Fatalf("labels version = %+v; want accepted feedback labels, format csv, 2 rows", f)
	}
	fb, err := ReadFeedback(e.store, f, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fb.IDs, []string{"r1", "r2"}) || !slices.Equal(fb.Labels, []string{"cat", "dog"}) {
		t.Errorf("ReadFeedback = %+v; want r1 cat, r2 dog (cow is not a class)", fb)
	}
	if c := e.meta(f).Report.Feedback; c == nil || c.BadLabels != 1 || c.Usable != 2 {
		t.Errorf("counts %+v; want 2 usable, 1 bad label", c)
	}
	wantKind(t, e.eventFor("dataset.accepted", f.ID), "feedback", storage.FeedbackLabels)

	renameIn(t, e.feedback("p"), "late.jsonl", `{"id":"r4","label":"dog"}`+"\n")
	j := e.nth("p", 2)
	if j.State != storage.DatasetAccepted || j.Feedback != storage.FeedbackLabels || j.Format != "jsonl" || j.Rows != 1 {
		t.Fatalf("JSONL labels version = %+v", j)
	}

	dropBatch(t, e.feedback("p"), "day2", map[string][]byte{
		"a.csv": []byte("request_id,label\nr5,cat\n"), "more/b.csv": []byte("request_id,label\nr6,dog\n"),
	})
	b := e.nth("p", 3)
	if b.State != storage.DatasetAccepted || b.Feedback != storage.FeedbackLabels || b.Rows != 2 {
		t.Fatalf("batch of labels = %+v", b)
	}

	renameIn(t, e.feedback("p"), "rows.csv", "path,label\ncat/1.png,cat\n")
	q := e.nth("p", 4)
	r := e.reason(q)
	if q.State != storage.DatasetQuarantined || r.Rule != RuleFeedbackColumns || r.File != "rows.csv" ||
		!strings.Contains(r.Allowed, "request_id,label") || !strings.Contains(r.Allowed, "batch folder") {
		t.Errorf("other header: %+v, reason %+v; want feedback_columns naming rows.csv, late labels and image batches", q, r)
	}
	if len(e.datasets("p")) != 4 {
		t.Errorf("%d versions, want 4", len(e.datasets("p")))
	}
}
