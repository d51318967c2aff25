package monitor

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/kiln-edge/kiln/storage"
)

// signalsLog appends requests to a memLog in id order, which is its
// append order.
type signalsLog struct {
	log *memLog
	n   int
}

// add appends n 2xx answers spread over [from, to): x like the training
// data (answered yes below 50), or far outside it when shifted (answered no).
func (l *signalsLog) add(from, to time.Time, n int, shifted bool) {
	for i := range n {
		x := (l.n * 37) % 100
		if shifted {
			x = 1000 + l.n
		}
		l.append(from.Add(time.Duration(i)*to.Sub(from)/time.Duration(n)), 200, x)
	}
}

func (l *signalsLog) append(at time.Time, status, x int) string {
	out := "no\n"
	if x < 50 {
		out = "yes\n"
	}
	id := fmt.Sprintf("r%06d", l.n)
	l.n++
	l.log.recs[id] = Logged{Model: "p/m1", Protocol: "sagemaker", ContentType: "text/csv", Time: at, Status: status,
		Rows: 1, Input: fmt.Appendf(nil, "%d\n", x), Output: []byte(out)}
	return id
}

// driftEvents are the monitor.drift events in st, without what differs
// between two stores (sequence, time, hash).
func driftEvents(t *testing.T, st *storage.Store) []storage.Event {
	t.Helper()
	evs, err := st.Events(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.Event
	for _, e := range evs {
		if e.Kind == "monitor.drift" {
			out = append(out, storage.Event{Kind: e.Kind, Pipeline: e.Pipeline, Refs: e.Refs, Details: e.Details})
		}
	}
	return out
}

func storedSignals(t *testing.T, st *storage.Store) []storage.Signal {
	t.Helper()
	var sigs []storage.Signal
	if err := st.View(func(tx *storage.Tx) (err error) { sigs, err = tx.Signals("p", time.Time{}); return err }); err != nil {
		t.Fatal(err)
	}
	return sigs
}

// TestSignalsReadOnlyNewRecords: after its first pass, a monitor reads only
// the records appended since its last one, and at each step the signals
// and drift events it has recorded are those of a monitor that reads the
// log afresh at every pass (as the passes did before), in a store of its
// own: the sample of an hour read in pieces is the one read whole, the
// ended hour raises its event once, an answer logged late counts in its
// hour while the hour is open and in none once it was recorded ended. A purge under the cursor and a changed spec read afresh.
func TestSignalsReadOnlyNewRecords(t *testing.T) {
	incr, full := signalsStore(t), signalsStore(t)
	l := &signalsLog{log: &memLog{recs: map[string]Logged{}}}
	var now time.Time
	clock := func() time.Time { return now }
	m := New(Deps{Store: incr, Log: l.log, Now: clock})
	m.Apply(signalsSpecs())
	at := func(h, min int) time.Time { return time.Date(2026, 11, 30, h, min, 0, 0, time.UTC) }
	var purged string
	for _, step := range []struct {
		name   string
		now    time.Time
		add    func()
		visits int // -1: the whole log, afresh
	}{
		{"first pass reads the log once", at(10, 20), func() { l.add(at(10, 0), at(10, 20), 800, false) }, 800},
		{"the hour's sample goes past its first 1,000", at(10, 40), func() { l.add(at(10, 20), at(10, 40), 800, false) }, 800},
		{"the hour ends; a late answer of it, a failed request", at(11, 5), func() {
			l.add(at(10, 40), at(11, 0), 600, false)
			l.add(at(11, 0), at(11, 5), 300, true)
			l.append(at(10, 59).Add(30*time.Second), 200, 7) // answered after 11:00
			l.append(at(11, 4), 503, 7)
		}, 902},
		{"nothing new", at(11, 30), func() {}, 0},
		{"the shifted hour ends", at(12, 10), func() {
			l.add(at(11, 5), at(12, 0), 1500, true)
			l.add(at(12, 0), at(12, 10), 200, false)
		}, 1700},
		{"an answer of the ended hour logged after its end was recorded", at(12, 20), func() {
			l.append(at(11, 59).Add(50*time.Second), 200, 1007)
		}, 1},
		{"a purge under the cursor", at(12, 30), func() {
			l.add(at(12, 10), at(12, 30), 100, false)
			purged = fmt.Sprintf("r%06d", l.n-3)
			l.log.purge(purged)
		}, -1},
		{"after the purge", at(12, 40), func() { l.add(at(12, 30), at(12, 40), 100, false) }, 100},
	} {
		now = step.now
		step.add()
		before := l.log.visited
		if err := m.Signals(t.Context(), "p"); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		want := step.visits
		if want < 0 {
			want = len(l.log.order)
		}
		if got := l.log.visited - before; got != want {
			t.Errorf("%s: the pass read %d records, want %d", step.name, got, want)
		}

		fresh := New(Deps{Store: full, Log: &memLog{recs: l.log.recs}, Now: clock})
		fresh.Apply(signalsSpecs())
		if err := fresh.Signals(t.Context(), "p"); err != nil {
			t.Fatalf("%s: full read: %v", step.name, err)
		}
		if diff := cmp.Diff(storedSignals(t, full), storedSignals(t, incr)); diff != "" {
			t.Errorf("%s: signals, full read (-) and incremental (+):\n%s", step.name, diff)
		}
		if diff := cmp.Diff(driftEvents(t, full), driftEvents(t, incr)); diff != "" {
			t.Errorf("%s: drift events, full read (-) and incremental (+):\n%s", step.name, diff)
		}
	}
	sigs := storedSignals(t, incr)
	if len(sigs) != 3 || sigs[0].Requests != 2201 || sigs[1].Requests != 1800 || sigs[2].Requests != 399 {
		t.Errorf("signals %+v; want hours 10, 11 and 12 with 2201, 1800 and 399 answers", sigs)
	}
	if ev := driftEvents(t, incr); len(ev) != 1 || ev[0].Details["hour"] != "2026-11-30T11:00:00Z" {
		t.Errorf("drift events %+v; want one, for 11:00", ev)
	}

	// A changed spec reads afresh.
	specs := signalsSpecs()
	specs["p"].Evaluate.Metric = "f1"
	m.Apply(specs)
	before := l.log.visited
	if err := m.Signals(t.Context(), "p"); err != nil || l.log.visited-before != len(l.log.order) {
		t.Errorf("after a spec change: read %d records (%v), want the whole log, %d", l.log.visited-before, err, len(l.log.order))
	}
}

// TestSignalsFirstPassAfterStart: a started monitor's first pass waits for
// the open hour to end when no ended hour is owed, and catches up a minute
// after the start otherwise; the catch-up reads the ended hours, not the
// open one, and the pass at the open hour's end reads the rest of the log
// once and records what a full read records then.
func TestSignalsFirstPassAfterStart(t *testing.T) {
	now := time.Date(2026, 11, 30, 14, 25, 0, 0, time.UTC)
	at := func(h, min int) time.Time { return time.Date(2026, 11, 30, h, min, 0, 0, time.UTC) }
	soon, hourEnd := now.Add(time.Minute), at(15, 0).Add(signalSettle)
	for _, tc := range []struct {
		name    string
		signals []storage.Signal // of p, hour and created
		due     time.Time
		catchUp bool
	}{
		{"no signal yet", nil, soon, true},
		{"the open hour's, partial", []storage.Signal{{Hour: at(13, 0), Created: at(14, 5)}, {Hour: at(14, 0), Created: at(14, 20)}}, hourEnd, false},
		{"the last hour's, taken after it ended", []storage.Signal{{Hour: at(13, 0), Created: at(14, 5)}}, hourEnd, false},
		{"the last hour's, taken before it ended", []storage.Signal{{Hour: at(13, 0), Created: at(13, 55)}}, soon, true},
		{"ended hours since the last", []storage.Signal{{Hour: at(11, 0), Created: at(12, 5)}}, soon, true},
		{"older than the lookback", []storage.Signal{{Hour: at(13, 0).Add(-48 * time.Hour), Created: at(14, 5).Add(-48 * time.Hour)}}, soon, true},
	} {
		st := signalsStore(t)
		putSignals(t, st, tc.signals)
		m := New(Deps{Store: st, Log: &memLog{recs: map[string]Logged{}}})
		due, catchUp := m.firstSignals("p", now)
		if !due.Equal(tc.due) || catchUp != tc.catchUp {
			t.Errorf("%s: first pass at %s (catch-up %v), want %s (%v)", tc.name, due.Format(time.TimeOnly), catchUp,
				tc.due.Format(time.TimeOnly), tc.catchUp)
		}
	}

	// Hour 13 is owed: its last signal was taken at 13:55.
	owed := []storage.Signal{{Hour: at(13, 0), Requests: 5, Created: at(13, 55)}}
	incr, full := signalsStore(t), signalsStore(t)
	putSignals(t, incr, owed)
	putSignals(t, full, owed)
	l := &signalsLog{log: &memLog{recs: map[string]Logged{}}}
	l.add(at(12, 30), at(13, 0), 50, false)
	l.add(at(13, 0), at(14, 0), 600, true)
	l.add(at(14, 0), at(14, 1), 20, false) // still read into the open hour
	l.add(at(14, 1), at(14, 26), 500, false)
	clock := now.Add(time.Minute)
	m := New(Deps{Store: incr, Log: l.log, Now: func() time.Time { return clock }})
	m.Apply(signalsSpecs())
	if err := m.signalsPass(t.Context(), specOf(signalsSpecs()["p"]), true); err != nil {
		t.Fatal(err)
	}
	// The hour before 13:00 and 13:00's are read, then 14:00's first
	// minute and the record that stops the read.
	if l.log.visited != 50+600+20+1 {
		t.Errorf("the catch-up read %d records, want %d", l.log.visited, 50+600+20+1)
	}
	sigs := storedSignals(t, incr)
	if len(sigs) != 1 || sigs[0].Requests != 600 || !sigs[0].Created.Equal(clock) {
		t.Errorf("after the catch-up: signals %+v, want 13:00's alone, all 600 answers, taken at %s", sigs, clock)
	}
	if ev := driftEvents(t, incr); len(ev) != 1 || ev[0].Details["hour"] != "2026-11-30T13:00:00Z" {
		t.Errorf("after the catch-up: drift events %+v, want 13:00's", ev)
	}

	l.add(at(14, 26), at(15, 1), 700, false)
	clock = hourEnd
	before := l.log.visited
	if err := m.Signals(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	if got, want := l.log.visited-before, len(l.log.order)-(50+600+20); got != want {
		t.Errorf("the pass at the hour's end read %d records, want the %d after the catch-up's", got, want)
	}
	fresh := New(Deps{Store: full, Log: &memLog{recs: l.log.recs}, Now: func() time.Time { return clock }})
	fresh.Apply(signalsSpecs())
	if err := fresh.Signals(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	// 13:00's was taken at the catch-up in one store, at 15:01 in the other.
	noCreated := cmpopts.IgnoreFields(storage.Signal{}, "Created")
	if diff := cmp.Diff(storedSignals(t, full), storedSignals(t, incr), noCreated); diff != "" {
		t.Errorf("signals, full read (-) and catch-up then incremental (+):\n%s", diff)
	}
	if diff := cmp.Diff(driftEvents(t, full), driftEvents(t, incr)); diff != "" {
		t.Errorf("drift events, full read (-) and catch-up then incremental (+):\n%s", diff)
	}
}

func putSignals(t *testing.T, st *storage.Store, sigs []storage.Signal) {
	t.Helper()
	err := st.Update(t.Context(), func(tx *storage.Tx) error {
		for _, s := range sigs {
			s.Pipeline = "p"
			if err := tx.PutSignal(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
