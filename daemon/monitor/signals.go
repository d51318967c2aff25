package monitor

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/storage"
)

// Label-free signals. Labels come late or never; two signals need none:
// the mix of predicted classes and the PSI of each logged input feature
// against the training data of the model that answered, per hour. They only
// alert (event monitor.drift): without labels nothing says the model is
// worse, only that the world looks different.

// signalEvery is how often the current hour is brought up to date.
const signalEvery = 10 * time.Minute

// signalLookback is how far back a pipeline with no signal yet starts.
const signalLookback = 24 * time.Hour

// minPSIValues is the fewest values on each side for a PSI; below it the
// index reads noise as drift (the same floor ingest's drift check uses).
const minPSIValues = 50

// maxHourValues bounds the values kept per feature and hour.
const maxHourValues = 2000

// sampledPerHour is how many requests an hour have their answer parsed and
// their input decoded: the class mix and the PSI are estimates from a
// systematic sample (the first requests of each hour, then every k-th), so
// a busy endpoint's log costs a bounded pass; counts of requests and rows
// are exact.
const sampledPerHour = 1000

// hourAgg gathers one hour of the log.
type hourAgg struct {
	requests, rows int64
	sampled        int64
	models         map[string]int64
	classes        map[string]int64
	values         map[string][]float64
}

func newHourAgg() *hourAgg {
	return &hourAgg{models: map[string]int64{}, classes: map[string]int64{}, values: map[string][]float64{}}
}

// add counts r, a 2xx answer of a, and reads it into the sample when the
// sampling rule picks it. The rule depends only on how many requests the
// hour has counted before r, so a reading carried on from where it stopped
// picks the same requests as one from the hour's start.
func (a *hourAgg) add(r Logged, m *Monitor, spec pipelineSpec) {
	a.requests++
	a.rows += int64(r.Rows)
	a.models[r.Model]++
	// Past the first sampledPerHour requests, every k-th, k doubling
	// as the hour fills: a bounded sample spread over the hour.
	if n := a.requests; n > sampledPerHour && n%(1<<bits.Len64(uint64(n/sampledPerHour))) != 0 {
		return
	}
	a.sampled++
	preds, err := contract.ParseAnswer(r.Protocol, r.Output)
	if err != nil {
		return // an answer kiln cannot read says nothing of the mix
	}
	if !contract.LowerIsBetter(spec.metric) {
		for _, p := range preds {
			a.classes[strings.TrimSpace(p)]++
		}
	}
	// Input drift is per feature: an image's key is no feature (its drift is
	// checked at ingest, on per-channel statistics).
	if rows, images, ok := m.decodeLogged(spec, r.Model, r); ok && images == nil {
		a.addInputs(r.Model, rows, m, spec)
	}
}

// Signals brings pipeline's hourly signals up to now: it reads what was
// appended to the log since its last pass (the first pass: from the hour
// of the last signal, or the hour after it when that signal was taken
// after its hour ended) and records every hour it holds. An hour that has
// ended and shows drift raises one monitor.drift event.
func (m *Monitor) Signals(ctx context.Context, pipeline string) error {
	spec, ok := m.spec(pipeline)
	if !ok {
		m.signals.set(pipeline, nil)
		return nil
	}
	return m.signalsPass(ctx, spec, false)
}

// recordHour computes one hour's signal and records it, with a
// monitor.drift event when the hour has ended and shows drift. An hour is
// recorded ended once: its records are read no more after that (the
// floor of signalState), so its event is raised once.
func (m *Monitor) recordHour(ctx context.Context, spec pipelineSpec, h time.Time, a *hourAgg, now time.Time) error {
	pipeline := spec.name
	model := topModel(a.models)
	sig := storage.Signal{Pipeline: pipeline, Hour: h, Model: model, Requests: a.requests, Rows: a.rows, Created: now}
	if len(a.classes) > 0 {
		sig.Classes = a.classes
	}
	var alerts []string
	if ti, err := m.train.get(model, spec); err == nil {
		for col, vals := range a.values {
			if psi, ok := psiOf(ti.values[col], vals); ok {
				if sig.PSI == nil {
					sig.PSI = map[string]float64{}
				}
				sig.PSI[col] = psi
				if psi > spec.psiMax {
					alerts = append(alerts, fmt.Sprintf("%s psi %.3f", col, psi))
				}
			}
		}
		if psi, ok := mixPSI(ti.labels, a.classes); ok && psi > spec.psiMax {
			alerts = append(alerts, fmt.Sprintf("predicted class mix psi %.3f", psi))
		}
	}
	ended := !now.Before(h.Add(time.Hour))
	err := m.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutSignal(sig); err != nil {
			return err
		}
		if !ended || len(alerts) == 0 {
			return nil
		}
		slices.Sort(alerts)
		_, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "monitor.drift", Pipeline: pipeline, Refs: []string{model},
			Details: map[string]string{"hour": h.Format(time.RFC3339), "requests": strconv.FormatInt(a.requests, 10),
				"signals": strings.Join(alerts, "; "), "psi_max": strconv.FormatFloat(spec.psiMax, 'f', 3, 64),
				"note": "alert only: no labels say the model is worse"}})
		return err
	})
	return err
}

func (a *hourAgg) addInputs(model string, rows [][]string, m *Monitor, spec pipelineSpec) {
	ti, err := m.train.get(model, spec)
	if err != nil {
		return
	}
	for _, r := range rows {
		for j, v := range r {
			if j >= len(ti.columns) {
				break
			}
			col := ti.columns[j]
			if len(a.values[col]) >= maxHourValues {
				continue
			}
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				a.values[col] = append(a.values[col], f)
			}
		}
	}
}

// psiOf is the population stability index of cur against ref over ref's
// deciles (edges at its quantiles, so each reference bin holds about a
// tenth), with empty bins smoothed.
func psiOf(ref, cur []float64) (float64, bool) {
	if len(ref) < minPSIValues || len(cur) < minPSIValues {
		return 0, false
	}
	r := slices.Clone(ref)
	slices.Sort(r)
	var edges []float64
	for i := 1; i < 10; i++ {
		e := r[i*len(r)/10]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	bin := func(v float64) int {
		i, _ := slices.BinarySearch(edges, v)
		return i
	}
	pr := make([]float64, len(edges)+1)
	pc := make([]float64, len(edges)+1)
	for _, v := range ref {
		pr[bin(v)]++
	}
	for _, v := range cur {
		pc[bin(v)]++
	}
	return psiCounts(pr, pc), true
}

// mixPSI compares the predicted class mix with the training label mix.
func mixPSI(train, pred map[string]int64) (float64, bool) {
	var nt, np int64
	for _, n := range train {
		nt += n
	}
	for _, n := range pred {
		np += n
	}
	if nt < minPSIValues || np < minPSIValues {
		return 0, false
	}
	keys := map[string]bool{}
	for k := range train {
		keys[k] = true
	}
	for k := range pred {
		keys[k] = true
	}
	var pr, pc []float64
	for k := range keys {
		pr = append(pr, float64(train[k]))
		pc = append(pc, float64(pred[k]))
	}
	return psiCounts(pr, pc), true
}

// psiCounts is sum (c - r) ln(c / r) over bins of proportions; a bin empty
// on one side gets half an observation, so one empty bin does not read as
// infinite drift.
func psiCounts(ref, cur []float64) float64 {
	var nr, nc float64
	for i := range ref {
		nr += ref[i]
		nc += cur[i]
	}
	var psi float64
	for i := range ref {
		r := math.Max(ref[i], 0.5) / nr
		c := math.Max(cur[i], 0.5) / nc
		psi += (c - r) * math.Log(c/r)
	}
	return psi
}

func topModel(counts map[string]int64) string {
	best := ""
	for name, n := range counts {
		if best == "" || n > counts[best] || n == counts[best] && name < best {
			best = name
		}
	}
	return best
}
