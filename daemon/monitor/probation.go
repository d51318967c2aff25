package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// Probation: labels come late, but a newly promoted model that fails
// requests or answers slowly shows at once. For monitor.probation after a
// promotion, the live model's answers in the prediction log are compared
// with the standby's from its own time live: a non-2xx rate above 1%, or a
// p99 latency above 3x the standby's, rolls back. Each needs enough
// requests to mean something (probationMin); fewer say nothing.
//
// The log is read once per promotion, not once per probe: the first probe
// (after the promotion, or after kilnd starts) reads from an hour before
// the promotion, and each later one only the records appended since the
// last (PredictionLog.ScanFrom), into running counts and two latency
// histograms of fixed size. A probe thus costs what arrived in 15 s, and
// the memory is the same at 6 or 6,000 requests a second. A record purged
// after it was counted stays counted (the request was answered); a purge
// or retention that rewrites the segment being followed starts the count
// again from the log as it is.

const (
	probationMin      = 200  // requests of the live model before its rates are judged
	probationFailRate = 0.01 // non-2xx
	probationSlower   = 3.0  // p99 latency, live over standby
	probationEvery    = 15 * time.Second
)

// probationTally is one promotion's reading of the log up to cur.
type probationTally struct {
	live, standby string
	since         time.Time // the promotion
	cur           LogCursor
	n, failed     int64         // the live model's requests since the promotion
	lat, stbyLat  latencyCounts // the live model's 2xx latencies; the standby's in its hour before
}

func (t *probationTally) add(r Logged) error {
	switch {
	case r.Model == t.live && !r.Time.Before(t.since):
		t.n++
		if r.Status/100 != 2 {
			t.failed++
		} else {
			t.lat.add(r.LatencyUS)
		}
	case r.Model == t.standby && r.Time.Before(t.since) && r.Status/100 == 2:
		// A request the standby answered while it was still live may be
		// appended after the promotion (it finished later): it counts when
		// it comes, as it would in a full read.
		t.stbyLat.add(r.LatencyUS)
	}
	return nil
}

// probe judges pipeline's live model if it is on probation; it asks for a
// rollback when it fails, and reports whether the model is still on probation.
func (m *Monitor) probe(ctx context.Context, spec pipelineSpec) (onProbation bool, err error) {
	if spec.probation <= 0 || m.deps.Actions == nil {
		m.probation.set(spec.name, nil)
		return false, nil
	}
	var live, standby string
	var since time.Time
	if err := m.deps.Store.View(func(tx *storage.Tx) (err error) {
		live, standby, since, err = liveOf(tx, spec.name)
		return err
	}); err != nil {
		return false, err
	}
	now := m.deps.Now()
	if live == "" || standby == "" || now.Sub(since) > spec.probation {
		m.probation.set(spec.name, nil)
		return false, nil
	}
	t, err := m.tally(spec.name, live, standby, since)
	if err != nil {
		return true, err
	}
	n, failed := t.n, t.failed
	details := map[string]string{"requests": strconv.FormatInt(n, 10), "failed": strconv.FormatInt(failed, 10),
		"probation": spec.probation.String()}
	var why string
	if n >= probationMin && float64(failed)/float64(n) > probationFailRate {
		why = fmt.Sprintf("probation: %d of %d requests failed (%.1f%%, more than %.0f%%)", failed, n,
			100*float64(failed)/float64(n), 100*probationFailRate)
	}
	if why == "" && t.lat.n >= probationMin && t.stbyLat.n >= probationMin {
		p, s := t.lat.quantile(0.99), t.stbyLat.quantile(0.99)
		details["p99_us"], details["standby_p99_us"] = strconv.FormatFloat(p, 'f', 0, 64), strconv.FormatFloat(s, 'f', 0, 64)
		if p > probationSlower*s {
			why = fmt.Sprintf("probation: p99 latency %.0f us is more than %.0fx the standby's %.0f us", p, probationSlower, s)
		}
	}
	if why == "" {
		return true, nil
	}
	err = m.deps.Actions.Rollback(ctx, spec.name, live, "probation", why, details)
	switch {
	case err == nil:
		m.log.Warn("rolled back on probation", "pipeline", spec.name, "model", live, "why", why)
	case errors.Is(err, ErrActLater):
		return true, nil
	default:
		m.event(ctx, spec.name, "monitor.action_refused", []string{live}, with(with(details, "decision", why), "error", err.Error()))
	}
	return false, nil
}

// tally brings pipeline's count for the promotion of live over standby at
// since up to the end of the log: from where the last probe stopped when it
// counted the same promotion, else afresh from the standby's hour before
// the promotion.
func (m *Monitor) tally(pipeline, live, standby string, since time.Time) (*probationTally, error) {
	t := m.probation.get(pipeline)
	if t == nil || t.live != live || t.standby != standby || !t.since.Equal(since) {
		t = &probationTally{live: live, standby: standby, since: since}
	}
	from := since.Add(-time.Hour)
	cur, err := m.deps.Log.ScanFrom(pipeline, from, t.cur, t.add)
	if errors.Is(err, ErrLogCursorStale) {
		t = &probationTally{live: live, standby: standby, since: since}
		cur, err = m.deps.Log.ScanFrom(pipeline, from, t.cur, t.add)
	}
	if err != nil {
		// What was counted before the failure is not known exactly: the
		// next probe reads afresh.
		m.probation.set(pipeline, nil)
		return nil, err
	}
	t.cur = cur
	m.probation.set(pipeline, t)
	return t, nil
}

// latencyCounts is a histogram of latencies in microseconds whose buckets
// are at most 1/64 of their values wide (exact below 128 us), so a
// quantile read from it is within 0.8% of the exact one, in 18 KiB
// however many requests it counts.
type latencyCounts struct {
	n      int64
	counts [latencyBuckets]int64
}

const (
	latencyExact   = 128 // values below have a bucket each
	latencySubBits = 6   // 2^6 buckets per power of two above
	latencyMaxExp  = 40  // 2^41 us (25 days) and beyond share the last bucket
	latencyBuckets = latencyExact + (latencyMaxExp-7+1)<<latencySubBits
)

func latencyBucket(us int64) int {
	if us < latencyExact {
		return int(max(us, 0))
	}
	u := uint64(us)        //nolint:gosec // us >= latencyExact here
	e := bits.Len64(u) - 1 // >= 7
	if e > latencyMaxExp {
		return latencyBuckets - 1
	}
	sub := int(u>>(e-latencySubBits)) & (1<<latencySubBits - 1) //nolint:gosec // 6 bits
	return latencyExact + (e-7)<<latencySubBits + sub
}

// latencyValue is the middle of bucket b.
func latencyValue(b int) float64 {
	if b < latencyExact {
		return float64(b)
	}
	e := 7 + (b-latencyExact)>>latencySubBits
	sub := (b - latencyExact) & (1<<latencySubBits - 1)
	width := int64(1) << (e - latencySubBits)
	return float64(int64(1<<latencySubBits+sub)*width + width/2)
}

func (h *latencyCounts) add(us int64) {
	h.counts[latencyBucket(us)]++
	h.n++
}

// quantile is the nearest-rank q-quantile, as quantile is over the sorted
// values, to within a bucket; h must not be empty.
func (h *latencyCounts) quantile(q float64) float64 {
	rank := max(1, min(int64(math.Ceil(q*float64(h.n))), h.n))
	for b, c := range h.counts {
		if rank -= c; rank <= 0 {
			return latencyValue(b)
		}
	}
	return latencyValue(latencyBuckets - 1)
}

// quantile is the nearest-rank q-quantile of sorted, non-empty values.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
