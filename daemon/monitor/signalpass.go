package monitor

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// How the signals passes read the log. A pass once read the log from the
// hour of the last signal on, every 10 minutes: the whole current hour
// each time, 1-2 s of CPU for a 1M-record hour, most of an idle kilnd's
// CPU. Now a pipeline's reading is kept in memory between passes (its
// LogCursor and the hours still open), and a pass reads only what was
// appended since the last one (PredictionLog.ScanFrom). What it records is
// what a reading from scratch would: the sample of an hour depends only on
// how many requests the hour counted before each one, and records of an
// hour recorded ended are not read into it, whichever way the log is read.
// A log rewritten under the cursor (a purge, retention), a failed read or
// write, and a changed spec drop the reading; the next pass reads afresh
// from the signals stored.
//
// After a start, the first pass reads only what is owed. If every hour
// that has ended since the last signal already has a signal taken after
// it ended, nothing is: the open hour's partial signal is for display and
// only an ended hour raises drift, so the first pass waits for the open
// hour to end and then reads it once. A restarted kilnd, or one in a crash
// loop, thus does not read an hour of log again at each start. If an ended
// hour is owed (its last signal was taken before it ended, or it has none),
// a catch-up pass a minute after the start reads the ended hours and stops
// at the open one (signalSettle into it, for answers still in flight at
// its start), which the pass at its end reads.

// signalSettle is how long after an hour's end its first read waits, so
// the answers in flight and buffered at its end are in the log.
const signalSettle = time.Minute

// signalState is one pipeline's reading of its log up to cur.
type signalState struct {
	mu    sync.Mutex // held for a whole pass
	valid bool       // false: read afresh from the signals stored
	spec  pipelineSpec
	since time.Time // the first read's start, passed to every ScanFrom
	cur   LogCursor
	// floor: records before it are read into no hour. It is the hour of
	// the last signal, or the hour after it once that signal was taken
	// after the hour ended, as a read from scratch would start.
	floor time.Time
	hours map[time.Time]*hourAgg // read and not yet recorded ended
}

// afresh starts st over from the signals stored.
func (st *signalState) afresh(m *Monitor, spec pipelineSpec, now time.Time) error {
	var last []storage.Signal
	lookback := now.Add(-signalLookback).Truncate(time.Hour)
	if err := m.deps.Store.View(func(tx *storage.Tx) (err error) {
		last, err = tx.Signals(spec.name, lookback)
		return err
	}); err != nil {
		return err
	}
	floor := lookback
	if n := len(last); n > 0 {
		floor = last[n-1].Hour
		if ended(last[n-1]) {
			floor = floor.Add(time.Hour)
		}
	}
	// Field by field: st.mu is held.
	st.valid, st.spec, st.since, st.cur, st.floor = true, spec, floor, LogCursor{}, floor
	st.hours = map[time.Time]*hourAgg{}
	return nil
}

// ended says s was taken after its hour ended: it is final.
func ended(s storage.Signal) bool { return !s.Created.Before(s.Hour.Add(time.Hour)) }

// errStopRead ends a catch-up's read at the open hour.
var errStopRead = errors.New("signals: the open hour waits for its end")

// signalsPass brings spec's signals up to now. A catch-up records the
// ended hours only: it stops reading at the first record signalSettle into
// the open hour and keeps what it read of that hour for the next pass.
func (m *Monitor) signalsPass(ctx context.Context, spec pipelineSpec, catchUp bool) error {
	st := m.signals.getOrNew(spec.name)
	st.mu.Lock()
	defer st.mu.Unlock()
	now := m.deps.Now().UTC()
	open := now.Truncate(time.Hour)
	var stop time.Time
	if catchUp {
		stop = open.Add(signalSettle)
	}
	err := func() error {
		if !st.valid || !reflect.DeepEqual(st.spec, spec) {
			if err := st.afresh(m, spec, now); err != nil {
				return err
			}
		}
		err := m.readSignals(ctx, st, now, stop)
		if errors.Is(err, ErrLogCursorStale) {
			if err = st.afresh(m, spec, now); err == nil {
				err = m.readSignals(ctx, st, now, stop)
			}
		}
		if err != nil {
			return err
		}
		for _, h := range slices.SortedFunc(maps.Keys(st.hours), time.Time.Compare) {
			if catchUp && !h.Before(open) {
				break
			}
			if err := st.record(ctx, m, h, now); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		// What was read and recorded before the failure is not known
		// exactly: the next pass reads afresh from what was stored.
		st.valid = false
		st.hours = nil
	}
	return err
}

// record records hour h of st as of now; an ended hour is final: it leaves
// st and the floor moves past it.
func (st *signalState) record(ctx context.Context, m *Monitor, h, now time.Time) error {
	if err := m.recordHour(ctx, st.spec, h, st.hours[h], now); err != nil {
		return err
	}
	next := h
	if !now.Before(h.Add(time.Hour)) {
		delete(st.hours, h)
		next = h.Add(time.Hour)
	}
	if next.After(st.floor) {
		st.floor = next
	}
	return nil
}

// readSignals reads into st what was appended to the log after st.cur,
// up to the first record at or after stop (zero: the end).
func (m *Monitor) readSignals(ctx context.Context, st *signalState, now, stop time.Time) error {
	// The log is in time order (up to request latency): an hour two hours
	// behind the record being read is complete, so it is recorded and its
	// sample freed then, and a pass holds at most a few hours at a time.
	flushBefore := func(cut time.Time) error {
		for _, h := range slices.SortedFunc(maps.Keys(st.hours), time.Time.Compare) {
			if !h.Before(cut) {
				break
			}
			if err := st.record(ctx, m, h, now); err != nil {
				return err
			}
			delete(st.hours, h) // not ended only with a clock behind the log's
		}
		return nil
	}
	cur, err := m.deps.Log.ScanFrom(st.spec.name, st.since, st.cur, func(r Logged) error {
		if !stop.IsZero() && !r.Time.Before(stop) {
			return errStopRead
		}
		if r.Time.Before(st.floor) || r.Status/100 != 2 {
			return nil
		}
		h := r.Time.UTC().Truncate(time.Hour)
		a := st.hours[h]
		if a == nil {
			if err := flushBefore(h.Add(-time.Hour)); err != nil {
				return err
			}
			a = newHourAgg()
			st.hours[h] = a
		}
		a.add(r, m, st.spec)
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return err
	}
	st.cur = cur
	return nil
}

// firstSignals says when pipeline's first pass after a start is due and
// whether it is a catch-up: a minute after now when an ended hour is owed,
// else signalSettle after the open hour ends (see the comment at the top).
// The last signal rules: taken in the open hour, the pass that took it
// recorded every hour before; taken after the hour before ended, that
// hour is final. Any other (none, one taken before its hour ended, one
// with ended hours after it unrecorded) leaves an ended hour owed.
func (m *Monitor) firstSignals(pipeline string, now time.Time) (due time.Time, catchUp bool) {
	open := now.UTC().Truncate(time.Hour)
	var last []storage.Signal
	err := m.deps.Store.View(func(tx *storage.Tx) (err error) {
		last, err = tx.Signals(pipeline, now.Add(-signalLookback).Truncate(time.Hour))
		return err
	})
	if err == nil && len(last) > 0 {
		s := last[len(last)-1]
		if !s.Hour.Before(open) || s.Hour.Equal(open.Add(-time.Hour)) && ended(s) {
			return open.Add(time.Hour + signalSettle), false
		}
	}
	return now.Add(time.Minute), true
}

// runSignals runs each pipeline's passes: the first as firstSignals says,
// then every signalEvery. It looks at the set of pipelines at least once a
// minute, so one added by a reload starts within a minute or so.
func (m *Monitor) runSignals(ctx context.Context) {
	type schedule struct {
		due     time.Time
		catchUp bool
	}
	next := map[string]*schedule{}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		m.mu.Lock()
		specs := make([]pipelineSpec, 0, len(m.specs))
		for _, s := range m.specs {
			specs = append(specs, s)
		}
		m.mu.Unlock()
		for name := range next {
			if !slices.ContainsFunc(specs, func(s pipelineSpec) bool { return s.name == name }) {
				delete(next, name)
				m.signals.set(name, nil)
			}
		}
		wait := time.Minute
		for _, s := range specs {
			now := m.deps.Now()
			sc := next[s.name]
			if sc == nil {
				due, catchUp := m.firstSignals(s.name, now)
				sc = &schedule{due: due, catchUp: catchUp}
				next[s.name] = sc
			}
			if !now.Before(sc.due) {
				err := m.signalsPass(ctx, s, sc.catchUp)
				if err != nil && ctx.Err() == nil {
					m.log.Warn("label-free signals", "pipeline", s.name, "err", err)
				}
				// A catch-up that failed is tried again as one.
				sc.due, sc.catchUp = now.Add(signalEvery), sc.catchUp && err != nil
			}
			wait = min(wait, sc.due.Sub(m.deps.Now()))
		}
		t.Reset(max(wait, time.Second))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
