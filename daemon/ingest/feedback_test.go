package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

const fbData = "format: csv\nlabel: label\nsettle: 0s\nvalidate: {labels: [a, b]}\n"
const fbEval = "evaluate: {holdout: {fraction: 0.3, seed: 7}}"

// dataIn drops a data file and waits until ingest is done with it (the drop folder empty,
// which is after the index knows its schema), so feedback dropped next is held to it.
func (e *env) dataIn(p, name, content string) storage.Dataset {
	e.t.Helper()
	n := len(e.datasets(p))
	renameIn(e.t, e.drop(p), name, content)
	d := e.nth(p, n+1)
	e.waitFor("drop folder emptied", 5*time.Second, func() bool { return len(entries(e.t, e.drop(p))) == 0 })
	return d
}

// one waits for the n-th dataset of p (1-based) and returns it.
func (e *env) nth(p string, n int) storage.Dataset {
	e.t.Helper()
	return e.waitDatasets(p, n, 5*time.Second)[n-1]
}

// reason reads the REASON.json of a quarantined dataset.
func (e *env) reason(d storage.Dataset) Reason {
	e.t.Helper()
	var r Reason
	path := filepath.Join(e.quarantine(d.Pipeline), strings.TrimPrefix(d.ID, d.Pipeline+"/"), "REASON.json")
	e.waitFor("REASON.json of "+d.ID, 5*time.Second, func() bool { _, err := os.Stat(path); return err == nil })
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatalf("%s: %v", path, err)
	}
	return r
}

// eventFor is the one event of kind that refers to id.
func (e *env) eventFor(kind, id string) storage.Event {
	e.t.Helper()
	for _, ev := range e.events(kind) {
		if slices.Contains(ev.Refs, id) {
			return ev
		}
	}
	e.t.Fatalf("no %s event for %s in %+v", kind, id, e.events(""))
	return storage.Event{}
}

func wantKind(t *testing.T, ev storage.Event, kind, feedback string) {
	t.Helper()
	if ev.Details["kind"] != kind || ev.Details["feedback"] != feedback {
		t.Errorf("%s %v: details kind=%q feedback=%q, want %q %q", ev.Kind, ev.Refs, ev.Details["kind"], ev.Details["feedback"], kind, feedback)
	}
}

// TestFeedbackRowsSplitLikeData: labelled feedback in the data's columns is accepted as
// rows, split by the data's hash and seed (a row held out of the data is held out of the
// feedback), and rows with a label outside the set are left out and counted, not quarantined.
func TestFeedbackRowsSplitLikeData(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	data := csvRows(300, 0)
	d := e.dataIn("p", "a.csv", data)
	wantKind(t, e.eventFor("dataset.accepted", d.ID), "data", "")
	dataTrain, dataHold := partRows(e.blob(d.Train)), partRows(e.blob(d.Holdout))

	// The data's rows again, CRLF, with a bad label and a missing one among them.
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	fb := strings.Join(lines[:101], "\r\n") + "\r\n7,0.5,c\r\n8,1.5,\r\n" + strings.Join(lines[101:201], "\r\n") + "\r\n"
	renameIn(t, e.feedback("p"), "fb.csv", fb)
	f := e.nth("p", 2)
	if f.Kind != storage.KindFeedback || f.Feedback != storage.FeedbackRows || f.State != storage.DatasetAccepted {
		t.Fatalf("feedback = %+v", f)
	}
	if f.Rows != 200 || f.Train == nil || f.Holdout == nil {
		t.Fatalf("feedback rows %d train %v holdout %v, want 200 rows in both parts", f.Rows, f.Train, f.Holdout)
	}
	fbTrain, fbHold := partRows(e.blob(f.Train)), partRows(e.blob(f.Holdout))
	for r := range fbHold {
		if !dataHold[r] {
			t.Errorf("row %q is holdout in feedback, train in data", r)
		}
	}
	for r := range fbTrain {
		if !dataTrain[r] {
			t.Errorf("row %q is train in feedback, holdout in data", r)
		}
	}
	if len(fbHold)+len(fbTrain) != 200 || len(fbHold) == 0 {
		t.Errorf("feedback parts: %d train, %d holdout", len(fbTrain), len(fbHold))
	}
	m := e.meta(f)
	c := m.Report.Feedback
	if c == nil || c.Type != storage.FeedbackRows || c.Read != 202 || c.Usable != 200 || c.BadLabels != 1 || c.MissingLabels != 1 {
		t.Errorf("report counts = %+v, want 202 read, 200 usable, 1 bad label, 1 missing", c)
	}
	var bad *Violation
	for i := range m.Report.LeftOut {
		if m.Report.LeftOut[i].Rule == "labels" {
			bad = &m.Report.LeftOut[i]
		}
	}
	if bad == nil || bad.File != "fb.csv" || bad.Line != 102 || bad.Column != "label" || bad.Observed != `"c"` {
		t.Errorf("left out = %+v, want labels in fb.csv line 102 column label", m.Report.LeftOut)
	}
	if m.Manifest.Split == nil || m.Manifest.Split.Seed != 7 || m.Manifest.Feedback != storage.FeedbackRows {
		t.Errorf("manifest split %+v feedback %q", m.Manifest.Split, m.Manifest.Feedback)
	}
	wantKind(t, e.eventFor("dataset.accepted", f.ID), "feedback", storage.FeedbackRows)

	// Read back: the rows of both parts, feature columns without the label; and the keys of
	// what the data trained on match the same rows in feedback.
	got, err := ReadFeedback(e.store, f, "label")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Columns, []string{"x", "y"}) || len(got.Rows) != 200 || len(got.Labels) != 200 {
		t.Fatalf("ReadFeedback: columns %v, %d rows, %d labels", got.Columns, len(got.Rows), len(got.Labels))
	}
	trained, err := TrainRowKeys(e.store, []storage.Dataset{d}, "label")
	if err != nil {
		t.Fatal(err)
	}
	if len(trained) != len(dataTrain) {
		t.Errorf("TrainRowKeys: %d keys, want %d (the data's train rows)", len(trained), len(dataTrain))
	}
	in := 0
	for i, r := range got.Rows {
		line := strings.Join(r, ",") + "," + got.Labels[i]
		_, ok := trained[RowKey(r)]
		if ok != dataTrain[line] {
			t.Errorf("row %q: trained on = %v, data train has it = %v", line, ok, dataTrain[line])
		}
		if ok {
			in++
		}
	}
	if in != len(fbTrain) {
		t.Errorf("%d feedback rows keyed as trained on, want the %d in its train part", in, len(fbTrain))
	}
}

// TestFeedbackRowsBeforeData: labelled rows cannot be checked before the data defines the
// columns; they are quarantined saying data must come first.
func TestFeedbackRowsBeforeData(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	renameIn(t, e.feedback("p"), "fb.csv", csvRows(20, 0))
	f := e.nth("p", 1)
	if f.State != storage.DatasetQuarantined || f.Kind != storage.KindFeedback {
		t.Fatalf("feedback = %+v", f)
	}
	r := e.reason(f)
	if r.Rule != RuleFeedbackNoData || r.File != "fb.csv" || r.Line != 1 || !strings.Contains(r.Allowed, "data version first") {
		t.Errorf("REASON.json = %+v", r)
	}
	wantKind(t, e.eventFor("dataset.quarantined", f.ID), "feedback", storage.FeedbackRows)
	// A person may still admit it: it is rows, and says so.
	rel, err := e.m.Release(t.Context(), f.ID, "uid:0")
	if err != nil || rel.Feedback != storage.FeedbackRows {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	wantKind(t, e.eventFor("dataset.released", f.ID), "feedback", storage.FeedbackRows)
}

// TestFeedbackWrongColumns: a header that is neither the data's nor request_id,label is
// quarantined naming the file, line 1, the first differing column and both headers.
func TestFeedbackWrongColumns(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	e.dataIn("p", "a.csv", csvRows(30, 0))
	for i, tc := range []struct{ header, column string }{
		{"x,z,label", "z"},
		{"y,x,label", "y"}, // order matters
		{"x,y", "label"},   // the label missing
		{"request_id,lab", "request_id"},
	} {
		name := fmt.Sprintf("bad%d.csv", i)
		renameIn(t, e.feedback("p"), name, tc.header+"\n1,2,a\n")
		f := e.nth("p", 2+i)
		if f.State != storage.DatasetQuarantined {
			t.Fatalf("%s: %+v", tc.header, f)
		}
		r := e.reason(f)
		if r.Rule != RuleFeedbackColumns || r.File != name || r.Line != 1 || r.Column != tc.column ||
			!strings.Contains(r.Allowed, "x,y,label") || !strings.Contains(r.Allowed, "request_id,label") {
			t.Errorf("%s: REASON.json = %+v", tc.header, r)
		}
		if _, err := e.m.Release(t.Context(), f.ID, "uid:0"); !errors.Is(err, ErrUntyped) {
			t.Errorf("%s: release of feedback of no type: %v", tc.header, err)
		}
	}
}

// TestLateLabels: request_id,label files are accepted as labels (no data needed), stored as
// one normalised part, with bad rows counted in the report; a wholly bad file is
// quarantined; a second drop of the same file is a duplicate carrying the kind.
func TestLateLabels(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	in := strings.Join([]string{
		"request_id,label",
		"r1,a",
		" r2:0 , b ", // trimmed
		"r3,c",       // outside the set
		",a",         // empty id
		"r1,b",       // duplicate: the first label stays
		"r4,",        // no label
		"r5,a,extra", // malformed
		`"r,6",b`,    // quoted id
	}, "\n") + "\n"
	renameIn(t, e.feedback("p"), "late.csv", in)
	f := e.nth("p", 1)
	if f.State != storage.DatasetAccepted || f.Feedback != storage.FeedbackLabels || f.Train != nil || f.Holdout != nil || f.Rows != 3 {
		t.Fatalf("labels version = %+v", f)
	}
	if n := len(DataFiles(f)); n != 1 {
		t.Errorf("DataFiles = %d, want the dropped file alone", n)
	}
	var labelsRef *storage.BlobRef
	for _, x := range f.Files {
		if x.Path == LabelsName {
			labelsRef = &x.Blob
		}
	}
	if got, want := e.blob(labelsRef), "request_id,label\nr1,a\nr2:0,b\n\"r,6\",b\n"; got != want {
		t.Errorf("labels part = %q, want %q", got, want)
	}
	m := e.meta(f)
	want := FeedbackCounts{Type: storage.FeedbackLabels, Read: 8, Usable: 3, EmptyIDs: 1, DuplicateIDs: 1, BadLabels: 1, MissingLabels: 1, Malformed: 1}
	if m.Report.Feedback == nil || *m.Report.Feedback != want {
		t.Errorf("counts = %+v, want %+v", m.Report.Feedback, want)
	}
	if !m.Report.OK || len(m.Report.Violations) != 0 || len(m.Report.LeftOut) != 5 {
		t.Errorf("report: ok %v, violations %+v, left out %+v", m.Report.OK, m.Report.Violations, m.Report.LeftOut)
	}
	for _, v := range m.Report.LeftOut {
		if v.Rule == RuleDuplicateID && (v.Line != 6 || v.File != "late.csv" || v.Observed != `"r1"`) {
			t.Errorf("duplicate left out = %+v, want late.csv line 6", v)
		}
	}
	if len(m.Manifest.Parts) != 1 || m.Manifest.Parts[0].Name != "labels" || m.Manifest.Parts[0].Rows != 3 || m.Manifest.Split != nil {
		t.Errorf("manifest parts %+v split %+v", m.Manifest.Parts, m.Manifest.Split)
	}
	wantKind(t, e.eventFor("dataset.accepted", f.ID), "feedback", storage.FeedbackLabels)
	fb, err := ReadFeedback(e.store, f, "label")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fb.IDs, []string{"r1", "r2:0", "r,6"}) || !slices.Equal(fb.Labels, []string{"a", "b", "b"}) || fb.Rows != nil {
		t.Errorf("ReadFeedback = %+v", fb)
	}

	// The same bytes again: a duplicate, with its kind.
	renameIn(t, e.feedback("p"), "late-again.csv", in)
	e.waitFor("duplicate event", 5*time.Second, func() bool { return len(e.events("dataset.duplicate")) == 1 })
	wantKind(t, e.events("dataset.duplicate")[0], "feedback", storage.FeedbackLabels)

	// Nothing usable: quarantined, saying why each row went.
	renameIn(t, e.feedback("p"), "bad.csv", "request_id,label\nr1,zz\n,a\nr2,\n")
	q := e.nth("p", 2)
	if q.State != storage.DatasetQuarantined || q.Feedback != storage.FeedbackLabels {
		t.Fatalf("wholly bad labels = %+v", q)
	}
	r := e.reason(q)
	if r.Rule != RuleNoUsableRows || r.File != "bad.csv" || !strings.Contains(r.Observed, "1 labels") || !strings.Contains(r.Observed, "1 empty_id") {
		t.Errorf("REASON.json = %+v", r)
	}
	wantKind(t, e.eventFor("dataset.quarantined", q.ID), "feedback", storage.FeedbackLabels)
	if _, err := ReadFeedback(e.store, q, ""); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("ReadFeedback of a quarantined version: %v", err)
	}
}

// TestFeedbackEmptyAndHugeRejected: an empty feedback file and a sparse 2 GB one (over
// max_file_size 1Gi) are quarantined before anything is read.
func TestFeedbackEmptyAndHugeRejected(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData+"max_file_size: 1Gi\n", fbEval))
	if err := os.WriteFile(filepath.Join(e.feedback("p"), "empty.csv"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Made sparse under an ignored name, then renamed in whole.
	staging := filepath.Join(e.feedback("p"), ".huge.csv.staging")
	if err := os.WriteFile(staging, []byte("request_id,label\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(staging, 2<<30); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staging, filepath.Join(e.feedback("p"), "huge.csv")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ds := e.waitDatasets("p", 2, 10*time.Second)
	rules := map[string]string{}
	for _, d := range ds {
		if d.State != storage.DatasetQuarantined || d.Kind != storage.KindFeedback || hasContent(d) {
			t.Errorf("%s = %+v, want quarantined unread feedback", d.ID, d)
		}
		r := e.reason(d)
		rules[r.File] = r.Rule
		if r.Read {
			t.Errorf("%s: REASON.json says read", d.ID)
		}
		ev := e.eventFor("dataset.quarantined", d.ID)
		if ev.Details["read"] != "no" || ev.Details["kind"] != "feedback" {
			t.Errorf("%s event details = %v", d.ID, ev.Details)
		}
	}
	if rules["empty.csv"] != RuleEmpty || rules["huge.csv"] != RuleMaxFileSize {
		t.Errorf("rules = %v", rules)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s: the 2 GB file was read", took)
	}
	if n := len(entries(t, e.feedback("p"))); n != 0 {
		t.Errorf("%d entries left in the feedback folder", n)
	}
}

// TestCommitJoined: joined rows become a feedback version split like data, linked from its
// labels version, announced with feedback=joined, and made once per source.
func TestCommitJoined(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	data := csvRows(100, 0)
	d := e.dataIn("p", "a.csv", data)
	renameIn(t, e.feedback("p"), "late.csv", "request_id,label\nq1:0,a\nq1:1,b\n")
	src := e.nth("p", 2)
	dataHold := partRows(e.blob(d.Holdout))

	// The data's first 40 rows, as the monitor would hand them: features and labels apart.
	var rows [][]string
	var labels []string
	for _, l := range strings.Split(strings.TrimSuffix(data, "\n"), "\n")[1:41] {
		f := strings.Split(l, ",")
		rows, labels = append(rows, f[:2]), append(labels, f[2])
	}
	rows, labels = append(rows, []string{"1", "2"}), append(labels, "nope") // left out
	j, err := e.m.CommitJoined(t.Context(), "p", src.ID, []string{"x", "y"}, rows, labels)
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != storage.KindFeedback || j.Feedback != storage.FeedbackJoined || j.Source != src.ID || j.State != storage.DatasetAccepted || j.Rows != 40 {
		t.Fatalf("joined = %+v", j)
	}
	hold := partRows(e.blob(j.Holdout))
	for r := range hold {
		if !dataHold[r] {
			t.Errorf("joined row %q is holdout, train in data", r)
		}
	}
	for r := range partRows(e.blob(j.Train)) {
		if dataHold[r] {
			t.Errorf("joined row %q is train, holdout in data", r)
		}
	}
	if len(hold) == 0 {
		t.Error("no joined row held out")
	}
	m := e.meta(j)
	if m.Report.Feedback == nil || m.Report.Feedback.BadLabels != 1 || m.Manifest.Source != src.ID {
		t.Errorf("joined report %+v manifest source %q", m.Report.Feedback, m.Manifest.Source)
	}
	down, err := e.store.Descendants(src.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(down) != 1 || down[0].ID != j.ID || down[0].Edge != storage.EdgeJoined {
		t.Errorf("descendants of %s = %+v, want %s by joined", src.ID, down, j.ID)
	}
	ev := e.eventFor("dataset.accepted", j.ID)
	wantKind(t, ev, "feedback", storage.FeedbackJoined)
	if ev.Details["source"] != src.ID {
		t.Errorf("event source = %q", ev.Details["source"])
	}
	fb, err := ReadFeedback(e.store, j, "")
	if err != nil || len(fb.Rows) != 40 || !slices.Equal(fb.Columns, []string{"x", "y"}) {
		t.Fatalf("ReadFeedback(joined) = %+v, %v", fb, err)
	}

	// Retried after a crash: the same version, no second one, no second event.
	again, err := e.m.CommitJoined(t.Context(), "p", src.ID, []string{"x", "y"}, rows[:3], labels[:3])
	if err != nil || again.ID != j.ID {
		t.Fatalf("second CommitJoined = %s, %v; want %s", again.ID, err, j.ID)
	}
	if n := len(e.datasets("p")); n != 3 {
		t.Errorf("%d datasets, want 3", n)
	}
	n := 0
	for _, ev := range e.events("dataset.accepted") {
		if ev.Details["feedback"] == storage.FeedbackJoined {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d joined events, want 1", n)
	}

	// Refused: a source that is not late labels, columns that are not the data's.
	if _, err := e.m.CommitJoined(t.Context(), "p", d.ID, []string{"x", "y"}, rows, labels); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("joined from data: %v", err)
	}
	renameIn(t, e.feedback("p"), "late2.csv", "request_id,label\nq2,a\n")
	src2 := e.nth("p", 4)
	if _, err := e.m.CommitJoined(t.Context(), "p", src2.ID, []string{"y", "x"}, rows, labels); !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), `column "y"`) {
		t.Errorf("joined with columns out of order: %v", err)
	}
}

// TestFeedbackJSONL: a JSONL pipeline takes labelled rows with keys in any order, late
// labels as {"id", "label"} objects, and the read-back helpers give the same keys as for
// the data.
func TestFeedbackJSONL(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: jsonl\nlabel: label\nsettle: 0s\nvalidate: {labels: [a, b]}\n", fbEval))
	var data strings.Builder
	for i := range 100 {
		fmt.Fprintf(&data, `{"x": %d, "s": "k%d", "label": %q}`+"\n", i, i%3, []string{"a", "b"}[i%2])
	}
	d := e.dataIn("p", "a.jsonl", data.String())
	var fb strings.Builder
	for i := range 50 {
		fmt.Fprintf(&fb, `{"label": %q, "s": "k%d", "x": %d.0}`+"\n", []string{"a", "b"}[i%2], i%3, i)
	}
	renameIn(t, e.feedback("p"), "fb.jsonl", fb.String())
	f := e.nth("p", 2)
	if f.State != storage.DatasetAccepted || f.Feedback != storage.FeedbackRows {
		t.Fatalf("jsonl feedback = %+v", f)
	}
	if s := e.meta(f).Manifest.Schema; len(s) != 3 || s[0].Name != "x" || s[1].Name != "s" {
		t.Errorf("feedback schema %+v, want the data's order x,s,label", s)
	}
	got, err := ReadFeedback(e.store, f, "label")
	if err != nil {
		t.Fatal(err)
	}
	trained, err := TrainRowKeys(e.store, []storage.Dataset{d}, "label")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Columns, []string{"x", "s"}) || len(got.Rows) != 50 {
		t.Fatalf("ReadFeedback = columns %v, %d rows", got.Columns, len(got.Rows))
	}
	matched := 0
	for _, r := range got.Rows {
		if _, ok := trained[RowKey(r)]; ok {
			matched++
		}
	}
	if matched == 0 || matched == 50 {
		t.Errorf("%d of 50 feedback rows keyed as trained on; want some (the train part's), not all", matched)
	}
	renameIn(t, e.feedback("p"), "late.jsonl", `{"id": "r1", "label": "a"}`+"\n"+`{"label": "b", "id": "r2:3"}`+"\n"+`{"id": null, "label": "a"}`+"\n")
	l := e.nth("p", 3)
	lf, err := ReadFeedback(e.store, l, "")
	if err != nil || l.Feedback != storage.FeedbackLabels || !slices.Equal(lf.IDs, []string{"r1", "r2:3"}) {
		t.Fatalf("jsonl labels = %+v, %+v, %v", l, lf, err)
	}
	if c := e.meta(l).Report.Feedback; c.EmptyIDs != 1 {
		t.Errorf("counts = %+v, want 1 empty id", c)
	}
}

func TestRowKey(t *testing.T) {
	same := [][2][]string{
		{{"1", "2.5"}, {" 1 ", "2.50"}},
		{{"1", "x"}, {"1.0", "x"}},
		{{"1e3", ""}, {"1000", "NaN"}},
		{{"", "a"}, {"null", "a"}},
	}
	for _, p := range same {
		if RowKey(p[0]) != RowKey(p[1]) {
			t.Errorf("RowKey(%q) != RowKey(%q)", p[0], p[1])
		}
	}
	differ := [][2][]string{
		{{"a,b"}, {"a", "b"}},
		{{"1", "2"}, {"2", "1"}},
		{{"", "1"}, {"1"}},
		{{"a"}, {"A"}},
	}
	for _, p := range differ {
		if RowKey(p[0]) == RowKey(p[1]) {
			t.Errorf("RowKey(%q) == RowKey(%q)", p[0], p[1])
		}
	}
}
