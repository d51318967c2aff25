package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// ruleServer is a SageMaker-contract model server on a real unix socket:
// it answers "yes" for rows whose first value is at least cut, else "no".
type ruleServer struct {
	model string
	sock  string
	mu    sync.Mutex
	rows  int
}

func startRule(t *testing.T, model string, cut float64) *ruleServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "km")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &ruleServer{model: model, sock: filepath.Join(dir, "s.sock")}
	l, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var out strings.Builder
		for _, line := range strings.Split(strings.TrimRight(string(body), "\n"), "\n") {
			var x float64
			_, _ = fmt.Sscanf(strings.Split(line, ",")[0], "%g", &x)
			if x >= cut {
				out.WriteString("yes\n")
			} else {
				out.WriteString("no\n")
			}
			s.mu.Lock()
			s.rows++
			s.mu.Unlock()
		}
		_, _ = io.WriteString(w, out.String())
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *ruleServer) Model() string { return s.model }
func (s *ruleServer) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", s.sock)
}

// memFeedback hands out feedback contents by dataset ID and records joins.
type memFeedback struct {
	store  *storage.Store
	byID   map[string]*Feedback
	mu     sync.Mutex
	joined map[string]storage.Dataset
	joins  int
}

func (f *memFeedback) ReadFeedback(d storage.Dataset, _ string) (*Feedback, error) {
	fb := f.byID[d.ID]
	if fb == nil {
		return nil, fmt.Errorf("no feedback %s", d.ID)
	}
	return fb, nil
}

func (f *memFeedback) CommitJoined(ctx context.Context, pipeline, source string, cols []string, rows [][]string, labels []string) (storage.Dataset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joins++
	if d, ok := f.joined[source]; ok {
		return d, nil
	}
	var d storage.Dataset
	err := f.store.Update(ctx, func(tx *storage.Tx) (err error) {
		d, err = tx.CreateDataset(storage.Dataset{Pipeline: pipeline, Kind: storage.KindFeedback, State: storage.DatasetAccepted,
			Feedback: storage.FeedbackJoined, Source: source, Rows: int64(len(rows))})
		return err
	})
	f.joined[source] = d
	return d, err
}

// memLog is a prediction log held in memory. ScanFrom reads it as an
// append-only log: records enter its order when a ScanFrom first sees
// them (ids sorted), and a cursor is a place in that order, valid while
// rewrites (a purge, in the real log) stays what it was. visited counts
// the records ScanFrom read.
type memLog struct {
	recs     map[string]Logged
	order    []string
	rewrites uint64
	visited  int
}

func (l *memLog) Flush(context.Context, string) error { return nil }
func (l *memLog) Lookup(_, id string) (Logged, error) {
	r, ok := l.recs[id]
	if !ok {
		return Logged{}, fmt.Errorf("request %s: %w", id, ErrNotLogged)
	}
	return r, nil
}
func (l *memLog) Scan(_ string, since time.Time, fn func(Logged) error) error {
	for _, r := range l.recs {
		if !r.Time.Before(since) {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *memLog) ScanFrom(_ string, since time.Time, cur LogCursor, fn func(Logged) error) (LogCursor, error) {
	if cur != (LogCursor{}) && cur.Inode != l.rewrites+1 {
		return cur, fmt.Errorf("memLog at %d: %w", cur.Offset, ErrLogCursorStale)
	}
	seen := make(map[string]bool, len(l.order))
	for _, id := range l.order {
		seen[id] = true
	}
	var fresh []string
	for id := range l.recs {
		if !seen[id] {
			fresh = append(fresh, id)
		}
	}
	slices.Sort(fresh)
	l.order = append(l.order, fresh...)
	for i := cur.Offset; i < int64(len(l.order)); i++ {
		r, ok := l.recs[l.order[i]]
		l.visited++
		if !ok || r.Time.Before(since) {
			continue
		}
		if err := fn(r); err != nil {
			return LogCursor{Inode: l.rewrites + 1, Offset: i}, err
		}
	}
	return LogCursor{Inode: l.rewrites + 1, Offset: int64(len(l.order))}, nil
}

// purge deletes the record id, rewriting the log: cursors into it go stale.
func (l *memLog) purge(id string) {
	delete(l.recs, id)
	l.order = slices.DeleteFunc(l.order, func(x string) bool { return x == id })
	l.rewrites++
}

type fixture struct {
	store         *storage.Store
	fb            *memFeedback
	log           *memLog
	live, standby *ruleServer
	spec          *config.Pipeline
}

// newFixture stores a data version (its train part holds the row "9,9"),
// a run on it and two models: live (cut 5) and standby (cut 3).
func newFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	st := storagetest.OpenAt(t, dir, storage.Options{})
	ref, err := st.PutBlob(t.Context(), strings.NewReader("x,y,label\n9,9,yes\n1,1,no\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(t.Context(), func(tx *storage.Tx) error {
		if _, err := tx.Dataset("p/d1"); err == nil {
			return nil // reopened
		}
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "p", Kind: storage.KindData, State: storage.DatasetAccepted, Train: &ref, Rows: 2})
		if err != nil {
			return err
		}
		r, err := tx.CreateRun(storage.Run{Pipeline: "p", State: storage.RunSucceeded, Datasets: []string{d.ID}})
		if err != nil {
			return err
		}
		for _, state := range []storage.ModelState{storage.ModelLive, storage.ModelStandby} {
			if _, err := tx.CreateModel(storage.Model{Pipeline: "p", Run: r.ID, State: state}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	spec := &config.Pipeline{Name: "p", Data: config.Data{Format: "csv", Label: "label"},
		Serve: config.Serve{Protocol: "sagemaker", Standby: config.StandbyKeepWarm}, Evaluate: config.Evaluate{Metric: "accuracy"}}
	return &fixture{store: st, fb: &memFeedback{store: st, byID: map[string]*Feedback{}, joined: map[string]storage.Dataset{}},
		log: &memLog{recs: map[string]Logged{}}, live: startRule(t, "p/m1", 5), standby: startRule(t, "p/m2", 3), spec: spec}
}

func (f *fixture) monitor(t *testing.T) (*Monitor, context.CancelFunc) {
	m := New(Deps{Store: f.store, Feedback: f.fb, Log: f.log,
		Serving: func(context.Context, string) (Backend, Backend, error) { return f.live, f.standby, nil }})
	ctx, cancel := context.WithCancel(t.Context())
	m.Start(ctx, map[string]*config.Pipeline{"p": f.spec})
	t.Cleanup(func() { cancel(); m.Wait() })
	return m, cancel
}

func (f *fixture) addFeedback(t *testing.T, kind string, fb *Feedback) string {
	t.Helper()
	var id string
	err := f.store.Update(t.Context(), func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "p", Kind: storage.KindFeedback, State: storage.DatasetAccepted, Feedback: kind})
		if err != nil {
			return err
		}
		id = d.ID
		f.fb.byID[id] = fb
		_, err = tx.Append(storage.Event{Actor: "kilnd", Kind: "dataset.accepted", Pipeline: "p", Refs: []string{id},
			Details: map[string]string{"kind": "feedback", "feedback": kind}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitScoring(t *testing.T, st *storage.Store, id string) storage.Scoring {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var sc storage.Scoring
		err := st.View(func(tx *storage.Tx) (err error) { sc, err = tx.Scoring(id); return err })
		if err == nil {
			return sc
		}
		if !errors.Is(err, storage.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("scoring of %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLabelledRowsScoredOnSameRows: labelled rows go through live and
// standby; the row the models trained on is left out and counted; the
// numbers are the ones worked out by hand.
func TestLabelledRowsScoredOnSameRows(t *testing.T) {
	f := newFixture(t, t.TempDir())
	f.monitor(t)
	// x:      9 (trained on)  6     4     2     4
	// label:  yes             yes   yes   no    no
	// live (>=5):             yes   no    no    no   -> right 3 of 4
	// standby (>=3):          yes   yes   no    yes  -> right 3 of 4
	id := f.addFeedback(t, storage.FeedbackRows, &Feedback{Type: storage.FeedbackRows, Columns: []string{"x", "y"},
		Rows:   [][]string{{"9", "9"}, {"6", "0"}, {"4", "0"}, {"2", "0"}, {"4", "1"}},
		Labels: []string{"yes", "yes", "yes", "no", "no"}})
	sc := waitScoring(t, f.store, id)
	if len(sc.Models) != 2 {
		t.Fatalf("models scored = %+v, want live and standby", sc.Models)
	}
	for i, want := range []storage.ModelScore{
		{Model: "p/m1", Role: "live", Rows: 4, Excluded: 1, Right: 3, Value: 0.75},
		{Model: "p/m2", Role: "standby", Rows: 4, Excluded: 1, Right: 3, Value: 0.75},
	} {
		got := sc.Models[i]
		got.Confusion = nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("model %d = %+v, want %+v", i, got, want)
		}
	}
	want := storage.Paired{Rows: 4, Both: 2, LiveOnly: 1, StandbyOnly: 1}
	if sc.Paired == nil || *sc.Paired != want {
		t.Errorf("paired = %+v, want %+v", sc.Paired, want)
	}
	if len(sc.Outcomes) != 4 {
		t.Errorf("outcomes = %v, want 4 rows", sc.Outcomes)
	}
	// The scored edge is lineage.
	var kids []storage.Node
	_ = f.store.View(func(tx *storage.Tx) (err error) { kids, err = tx.Descendants(id, 1); return err })
	if len(kids) != 2 {
		t.Errorf("feedback's descendants = %+v, want both models (scored)", kids)
	}
}

// TestLateLabelsJoinedAndReplayed: the logged answer scores the model that
// gave it, the logged input is replayed through the standby, and every label
// is accounted for: matched, unmatched, duplicate, failed, without input.
func TestLateLabelsJoinedAndReplayed(t *testing.T) {
	f := newFixture(t, t.TempDir())
	at := time.Now().Add(-time.Minute)
	f.log.recs["r1"] = Logged{Model: "p/m1", Protocol: "sagemaker", ContentType: "text/csv", Time: at, Status: 200,
		Rows: 2, Input: []byte("6,0\n4,0\n"), Output: []byte("yes\nno\n")}
	f.log.recs["r2"] = Logged{Model: "p/m1", Protocol: "sagemaker", ContentType: "text/csv", Time: at, Status: 200,
		Rows: 1, Output: []byte("no\n")} // input not kept
	f.log.recs["r3"] = Logged{Model: "p/m1", Protocol: "sagemaker", ContentType: "text/csv", Time: at, Status: 502, Rows: 1}
	f.monitor(t)
	id := f.addFeedback(t, storage.FeedbackLabels, &Feedback{Type: storage.FeedbackLabels,
		IDs:    []string{"r1:0", "r1:1", "r1:1", "r2", "r3", "nope", "r1:7"},
		Labels: []string{"yes", "yes", "yes", "no", "no", "no", "no"}})
	sc := waitScoring(t, f.store, id)
	wantJoin := storage.JoinReport{Labels: 7, Matched: 3, Unmatched: 2, Duplicates: 1, Failed: 1, NoInput: 1}
	gotJoin := *sc.Join
	joined := gotJoin.Joined
	gotJoin.Joined = ""
	if gotJoin != wantJoin {
		t.Errorf("join = %+v, want %+v", gotJoin, wantJoin)
	}
	// live from the log: r1:0 yes (right), r1:1 no (wrong), r2 no (right) -> 2/3.
	// standby replay (>=3) on the rows with inputs: 6 yes (right), 4 yes (right).
	if sc.Models[0].Model != "p/m1" || sc.Models[0].Rows != 3 || sc.Models[0].Right != 2 {
		t.Errorf("live score = %+v, want p/m1 2 right of 3", sc.Models[0])
	}
	if len(sc.Models) < 2 || sc.Models[1].Model != "p/m2" || sc.Models[1].Rows != 2 || sc.Models[1].Right != 2 {
		t.Errorf("standby score = %+v, want p/m2 2 right of 2 (replayed)", sc.Models)
	}
	if f.live.rows != 0 {
		t.Errorf("the live model answered %d rows again; its answers come from the log", f.live.rows)
	}
	if joined == "" || f.fb.joined[id].Rows != 2 {
		t.Errorf("joined version = %q (%+v), want one of 2 rows", joined, f.fb.joined[id])
	}
	if sc.Delay == nil || sc.Delay.N != 3 || sc.Delay.P50 < 30 {
		t.Errorf("delay = %+v, want 3 delays of about a minute", sc.Delay)
	}
}

// TestRestartScoresEachVersionOnce: versions accepted while no monitor ran
// are scored at the next start, and a version already scored is not scored
// again by a new monitor on the same store.
func TestRestartScoresEachVersionOnce(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	fb := &Feedback{Type: storage.FeedbackRows, Columns: []string{"x", "y"}, Rows: [][]string{{"6", "0"}}, Labels: []string{"yes"}}
	first := f.addFeedback(t, storage.FeedbackRows, fb)
	_, cancel := f.monitor(t)
	waitScoring(t, f.store, first)
	cancel()
	second := f.addFeedback(t, storage.FeedbackRows, fb) // arrives while "down"
	before := f.live.rows
	f.monitor(t)
	waitScoring(t, f.store, second)
	time.Sleep(200 * time.Millisecond) // a wrong rescoring of first would happen now
	if got := f.live.rows - before; got != 1 {
		t.Errorf("live model answered %d rows after the restart, want 1 (only the new version)", got)
	}
	sc, err := f.store.Scorings("p")
	if err != nil || len(sc) != 2 {
		t.Fatalf("scorings = %d (%v), want 2", len(sc), err)
	}
}
