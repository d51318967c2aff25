package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
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

const (
	probationMin      = 200  // requests of the live model before its rates are judged
	probationFailRate = 0.01 // non-2xx
	probationSlower   = 3.0  // p99 latency, live over standby
	probationEvery    = 15 * time.Second
)

// probe judges pipeline's live model if it is on probation; it asks for a
// rollback when it fails, and reports whether the model is still on probation.
func (m *Monitor) probe(ctx context.Context, spec pipelineSpec) (onProbation bool, err error) {
	if spec.probation <= 0 || m.deps.Actions == nil {
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
		return false, nil
	}
	var n, failed int64
	var lat, stbyLat []float64
	// The standby's latencies come from the hour before the promotion,
	// when it was the live model.
	err = m.deps.Log.Scan(spec.name, since.Add(-time.Hour), func(r Logged) error {
		switch {
		case r.Model == live && !r.Time.Before(since):
			n++
			if r.Status/100 != 2 {
				failed++
			} else {
				lat = append(lat, float64(r.LatencyUS))
			}
		case r.Model == standby && r.Time.Before(since) && r.Status/100 == 2:
			stbyLat = append(stbyLat, float64(r.LatencyUS))
		}
		return nil
	})
	if err != nil {
		return true, err
	}
	details := map[string]string{"requests": strconv.FormatInt(n, 10), "failed": strconv.FormatInt(failed, 10),
		"probation": spec.probation.String()}
	var why string
	if n >= probationMin && float64(failed)/float64(n) > probationFailRate {
		why = fmt.Sprintf("probation: %d of %d requests failed (%.1f%%, more than %.0f%%)", failed, n,
			100*float64(failed)/float64(n), 100*probationFailRate)
	}
	if why == "" && len(lat) >= probationMin && len(stbyLat) >= probationMin {
		slices.Sort(lat)
		slices.Sort(stbyLat)
		p, s := quantile(lat, 0.99), quantile(stbyLat, 0.99)
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

// quantile is the nearest-rank q-quantile of sorted, non-empty values.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
