package monitor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// probationLog is a fixture with p/m1 live since the returned time and
// p/m2 its standby, and a log holding the standby's hour before (300
// answers of 800-1200 us, one failed), plus records no probe may count: the
// standby's from before that hour and the live model's from before its
// promotion.
func probationLog(t *testing.T) (*fixture, time.Time) {
	f := newFixture(t, t.TempDir())
	f.deploy(t)
	var since time.Time
	if err := f.store.View(func(tx *storage.Tx) (err error) { _, _, since, err = liveOf(tx, "p"); return err }); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		status := 200
		if i == 7 {
			status = 500
		}
		f.log.recs[fmt.Sprintf("s%d", i)] = Logged{Model: "p/m2", Time: since.Add(-time.Duration(i+1) * 10 * time.Second),
			Status: status, LatencyUS: 800 + rng.Int64N(400)}
	}
	for i := range 20 {
		f.log.recs[fmt.Sprintf("old%d", i)] = Logged{Model: "p/m2", Time: since.Add(-2 * time.Hour), Status: 200, LatencyUS: 1}
		f.log.recs[fmt.Sprintf("early%d", i)] = Logged{Model: "p/m1", Time: since.Add(-time.Minute), Status: 500, LatencyUS: 1}
	}
	return f, since
}

// TestProbationReadsOnlyNewRecords: after its first probe, a monitor reads
// only the records appended since its last one, and at each step its
// counts and its decision are those of a monitor that reads the whole log
// afresh (as after a restart).
func TestProbationReadsOnlyNewRecords(t *testing.T) {
	f, since := probationLog(t)
	acts := &fakeActions{}
	m := New(Deps{Store: f.store, Log: f.log, Actions: acts})
	spec := specOf(f.spec)
	spec.probation = 30 * time.Minute
	rng := rand.New(rand.NewPCG(3, 4))
	n := 0
	live := func(k, failed int, us int64) {
		for i := range k {
			status := 200
			if i < failed {
				status = 503
			}
			f.log.recs[fmt.Sprintf("l%05d", n)] = Logged{Model: "p/m1", Time: since.Add(time.Duration(n) * time.Millisecond),
				Status: status, LatencyUS: us + rng.Int64N(us/2)}
			n++
		}
	}
	for _, step := range []struct {
		name      string
		add       func()
		visits    int // records the incremental probe reads
		rollsBack bool
	}{
		{"first probe reads the log once", func() { live(250, 1, 1000) }, 590, false},
		{"healthy answers and a late one of the standby's", func() {
			live(100, 0, 1000)
			// Answered by the standby while it was live, logged after the
			// promotion (it finished late): it is the standby's.
			f.log.recs["zlate"] = Logged{Model: "p/m2", Time: since.Add(-time.Millisecond), Status: 200, LatencyUS: 2000}
		}, 101, false},
		{"nothing new", func() {}, 0, false},
		{"slow answers", func() { live(20, 0, 9000) }, 20, true},
	} {
		step.add()
		before := f.log.visited
		on, err := m.probe(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.log.visited - before; got != step.visits {
			t.Errorf("%s: the probe read %d records, want %d", step.name, got, step.visits)
		}
		rb, _, _ := acts.calls()
		if rolled := len(rb) == 1; rolled != step.rollsBack || on == step.rollsBack {
			t.Errorf("%s: rollbacks %v, on probation %v; want rollback %v", step.name, rb, on, step.rollsBack)
		}

		freshActs := &fakeActions{}
		fresh := New(Deps{Store: f.store, Log: &memLog{recs: f.log.recs}, Actions: freshActs})
		freshOn, err := fresh.probe(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		frb, _, _ := freshActs.calls()
		if freshOn != on || (len(frb) == 1) != step.rollsBack {
			t.Errorf("%s: a full read decides rollbacks %v, on probation %v; the incremental one %v, %v", step.name, frb, freshOn, rb, on)
		}
		if got, want := m.probation.get("p"), fresh.probation.get("p"); !sameTally(got, want) {
			t.Errorf("%s: incremental tally %s, full read %s", step.name, tallyString(got), tallyString(want))
		}
		acts.rollbacks = nil
	}
	if got := m.probation.get("p"); got.n != 370 || got.failed != 1 || got.stbyLat.n != 300 {
		t.Errorf("tally %s; want 370 requests, 1 failed, 300 of the standby", tallyString(got))
	}
}

func sameTally(a, b *probationTally) bool {
	return a != nil && b != nil && a.n == b.n && a.failed == b.failed && a.lat == b.lat && a.stbyLat == b.stbyLat
}

func tallyString(t *probationTally) string {
	if t == nil {
		return "none"
	}
	return fmt.Sprintf("{%d requests, %d failed, %d latencies, %d of the standby}", t.n, t.failed, t.lat.n, t.stbyLat.n)
}

// TestProbationStartsAfresh: a new promotion, a log rewritten under the
// cursor (a purge) and the end of probation each drop what was counted;
// the count that follows is a whole read's.
func TestProbationStartsAfresh(t *testing.T) {
	f, since := probationLog(t)
	for i := range 250 {
		f.log.recs[fmt.Sprintf("l%d", i)] = Logged{Model: "p/m1", Time: since.Add(time.Duration(i) * time.Second), Status: 200, LatencyUS: 900}
	}
	m := New(Deps{Store: f.store, Log: f.log, Actions: &fakeActions{}})
	first, err := m.tally("p", "p/m1", "p/m2", since)
	if err != nil || first.n != 250 || first.stbyLat.n != 299 {
		t.Fatalf("first tally %s (%v), want 250 requests and 299 of the standby", tallyString(first), err)
	}

	// p/m2 promoted again 100 s after: only the live answers from then on.
	again := since.Add(100 * time.Second)
	before := f.log.visited
	got, err := m.tally("p", "p/m1", "p/m2", again)
	if err != nil || got.n != 150 || f.log.visited-before != len(f.log.order) {
		t.Errorf("after a new promotion: %s (%v) after reading %d records; want 150 requests from a whole read of %d",
			tallyString(got), err, f.log.visited-before, len(f.log.order))
	}

	f.log.purge("l200")
	before = f.log.visited
	got, err = m.tally("p", "p/m1", "p/m2", again)
	if err != nil || got.n != 149 || f.log.visited-before != len(f.log.order) {
		t.Errorf("after a purge: %s (%v) after reading %d records; want 149 requests from a whole read of %d",
			tallyString(got), err, f.log.visited-before, len(f.log.order))
	}

	spec := specOf(f.spec)
	spec.probation = time.Nanosecond
	if on, err := m.probe(t.Context(), spec); on || err != nil || m.probation.get("p") != nil {
		t.Errorf("probation over: on %v (%v), tally %s kept", on, err, tallyString(m.probation.get("p")))
	}
}

// TestLatencyCountsQuantile: the histogram's p99 is within 1% of the exact
// nearest-rank one, whatever the shape and scale; below 128 us it is exact.
func TestLatencyCountsQuantile(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		name string
		draw func() int64
	}{
		{"small", func() int64 { return rng.Int64N(120) }},
		{"lognormal around 1 ms", func() int64 { return int64(1000 * math.Exp(0.5*rng.NormFloat64())) }},
		{"bimodal with a slow tail", func() int64 {
			if rng.IntN(50) == 0 {
				return 200_000 + rng.Int64N(100_000)
			}
			return 300 + rng.Int64N(200)
		}},
		{"seconds", func() int64 { return 1_000_000 + rng.Int64N(30_000_000) }},
		{"zero and below", func() int64 { return -rng.Int64N(3) }},
	} {
		var h latencyCounts
		var vals []float64
		for range 20_000 {
			v := tc.draw()
			h.add(v)
			vals = append(vals, float64(max(v, 0)))
		}
		slices.Sort(vals)
		for _, q := range []float64{0.5, 0.99, 1} {
			got, want := h.quantile(q), quantile(vals, q)
			if want < latencyExact && got != want || math.Abs(got-want) > 0.01*want {
				t.Errorf("%s: q%.2f %.1f, exact %.1f", tc.name, q, got, want)
			}
		}
	}
	for _, us := range []int64{127, 128, 129, 255, 256, 1 << 20, 1<<41 - 1} {
		b := latencyBucket(us)
		if v := latencyValue(b); math.Abs(v-float64(us)) > float64(us)/128+0.5 {
			t.Errorf("%d us: bucket %d's value %.1f", us, b, v)
		}
	}
	if b := latencyBucket(math.MaxInt64); b != latencyBuckets-1 {
		t.Errorf("the longest latency's bucket %d, want the last, %d", b, latencyBuckets-1)
	}
}
