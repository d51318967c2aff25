package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/monitor/detect"
)

func init() { register(Group{Name: "detect", Run: benchDetect}) }

// Streams of BENCH.md's detect group: Bernoulli correctness streams (1 =
// correct) from fixed seeds. Every stream is a splitmix64 sequence seeded
// with family<<32 | index; kiln's own thresholds come from an exact Markov
// chain and use no seeds at all, and its unit tests draw from math/rand's
// PCG under seeds 0x7e57xxxx, so the benchmark's draws are disjoint from
// both.
const (
	famScenario = 0xbe7c0001 // scenario streams A, B, C (common random numbers)
	famStable   = 0xbe7c0002 // 100k-label stable streams, known baseline
	famUnknown  = 0xbe7c0003 // stable streams with the baseline estimated
	famADWIN    = 0xbe7c0004 // stable streams for ADWIN's false alarms
	famDecide   = 0xbe7c0005 // post-alarm paired rows of the decide group
)

const (
	detP0      = 0.92
	detDropAt  = 10_000
	detHorizon = 100_000
	detTarget  = 0.01
)

// splitmix is the benchmark's cheap generator (Vigna's splitmix64).
type splitmix struct{ s uint64 }

func newStream(family, i uint64) *splitmix { return &splitmix{s: family<<32 | i} }

func (r *splitmix) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// cut is the uint64 below which a draw is "correct" with probability p.
func cut(p float64) uint64 { return uint64(p * 18446744073709551616.0) }

// parallel runs f over [0,n) split between the cores.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// oracleCUSUM is the Bernoulli CUSUM told the post-drop rate p1: the
// log-likelihood ratio of p1 against p0 per label, in floating point.
type oracleCUSUM struct{ onMiss, onHit float64 }

func newOracle(p0, p1 float64) oracleCUSUM {
	return oracleCUSUM{onMiss: math.Log((1 - p1) / (1 - p0)), onHit: math.Log(p1 / p0)}
}

type scenario struct {
	name  string
	p1    float64
	limit int // a later detection is a miss
}

var scenarios = []scenario{{"A", 0.80, 2000}, {"B", 0.87, 5000}, {"C", 0.84, 2000}}

// delays measures, over seeds, the labels after the drop until a detector
// alarms. newDet returns a fresh detector: observe reports an alarm, reset
// re-arms it after a false alarm before the drop (counted).
type delayRun struct {
	delays []float64 // of detections within the limit
	misses int
	early  int // alarms before the drop
}

func (d delayRun) mean() float64 {
	s := 0.0
	for _, x := range d.delays {
		s += x
	}
	return s / float64(max(len(d.delays), 1))
}

type stepper interface {
	observe(correct bool) bool
	reset()
}

func measureDelays(sc scenario, seeds int, mk func() stepper) delayRun {
	out := make([]float64, seeds)
	early := make([]int, seeds)
	parallel(seeds, func(i int) {
		r := newStream(famScenario, uint64(i))
		c0, c1 := cut(detP0), cut(sc.p1)
		det := mk()
		out[i] = -1
		for t := 0; t < detDropAt+sc.limit; t++ {
			th := c0
			if t >= detDropAt {
				th = c1
			}
			if det.observe(r.next() < th) {
				if t < detDropAt {
					early[i]++
					det.reset()
					continue
				}
				out[i] = float64(t - detDropAt + 1)
				return
			}
		}
	})
	var run delayRun
	for i, x := range out {
		run.early += early[i]
		if x < 0 {
			run.misses++
		} else {
			run.delays = append(run.delays, x)
		}
	}
	return run
}

type kilnStepper struct {
	d   *detect.Detector
	err error
}

func (k *kilnStepper) observe(c bool) bool {
	a, err := k.d.Observe(c, "")
	if err != nil && k.err == nil {
		k.err = err
	}
	return a != nil
}
func (k *kilnStepper) reset() { k.d.Rearm() }

func newKiln(baseline float64) func() stepper {
	return func() stepper {
		d, err := detect.New(detect.Config{TargetFalseAlarm: detTarget, Baseline: baseline})
		if err != nil {
			panic(err) // a constant, valid configuration
		}
		return &kilnStepper{d: d}
	}
}

type oracleStepper struct {
	o    oracleCUSUM
	h, s float64
}

func (o *oracleStepper) observe(c bool) bool {
	if c {
		o.s = math.Max(0, o.s+o.o.onHit)
	} else {
		o.s += o.o.onMiss
	}
	return o.s >= o.h
}
func (o *oracleStepper) reset() { o.s = 0 }

type adwinStepper struct{ a *adwin }

func (a *adwinStepper) observe(c bool) bool {
	x := 1.0
	if c {
		x = 0
	}
	return a.a.add(x) // MOA's detectors watch the error indicator
}
func (a *adwinStepper) reset() {} // ADWIN carries on after a detection by itself

// benchDetect takes BENCH.md's detect figures.
func benchDetect(ctx context.Context, opt Options) []Figure {
	seeds, stable, adwinStable := 1000, 10_000, 1000
	if opt.Quick {
		seeds, stable, adwinStable = 200, 1000, 100
	}
	var figs []Figure

	// Stable streams at 0.92: kiln's false alarms, and the oracle
	// thresholds (the 99th percentile of each oracle's largest statistic
	// over 100k labels, so that 1% of these streams alarm).
	t0 := time.Now()
	oracles := make([]oracleCUSUM, len(scenarios))
	for j, sc := range scenarios {
		oracles[j] = newOracle(detP0, sc.p1)
	}
	maxima := make([][]float64, len(scenarios))
	for j := range maxima {
		maxima[j] = make([]float64, stable)
	}
	alarmed := make([]bool, stable)
	var calErr error
	var errOnce sync.Once
	parallel(stable, func(i int) {
		r := newStream(famStable, uint64(i))
		th := cut(detP0)
		k := newKiln(detP0)().(*kilnStepper)
		var s, m [3]float64
		for range detHorizon {
			c := r.next() < th
			if !alarmed[i] && k.observe(c) {
				alarmed[i] = true
			}
			for j := range s {
				if c {
					s[j] = math.Max(0, s[j]+oracles[j].onHit)
				} else {
					s[j] += oracles[j].onMiss
					m[j] = math.Max(m[j], s[j])
				}
			}
		}
		if k.err != nil {
			errOnce.Do(func() { calErr = k.err })
		}
		for j := range m {
			maxima[j][i] = m[j]
		}
	})
	if calErr != nil {
		return []Figure{unmeasured("detect.a_mean_delay", "labels", "<= 175", "kiln's detector failed: "+calErr.Error())}
	}
	falseAlarms := 0
	for _, a := range alarmed {
		if a {
			falseAlarms++
		}
	}
	faPct := 100 * float64(falseAlarms) / float64(stable)
	h := make([]float64, len(scenarios))
	for j := range maxima {
		s := slices.Clone(maxima[j])
		slices.Sort(s)
		h[j] = s[stable-stable/100]
	}
	stableTook := time.Since(t0)
	if ctx.Err() != nil {
		return nil
	}

	// Scenario delays, kiln (told p0, not p1) and the oracles.
	kiln := make([]delayRun, len(scenarios))
	orc := make([]delayRun, len(scenarios))
	for j, sc := range scenarios {
		kiln[j] = measureDelays(sc, seeds, newKiln(detP0))
		o, hj := oracles[j], h[j]
		orc[j] = measureDelays(sc, seeds, func() stepper { return &oracleStepper{o: o, h: hj} })
	}
	missNote := func(r delayRun, sc scenario) string {
		if r.misses == 0 {
			return ""
		}
		return fmt.Sprintf("; FAILED: %d of %d seeds missed (no alarm within %d labels)", r.misses, seeds, sc.limit)
	}
	delayFig := func(name string, v float64, goal string, r delayRun, sc scenario, detail string) Figure {
		f := measured(name, v, "labels", goal, detail+missNote(r, sc))
		if r.misses > 0 {
			f.Pass = false
		}
		return f
	}
	A, B, C := kiln[0], kiln[1], kiln[2]
	figs = append(figs,
		delayFig("detect.a_mean_delay", A.mean(), "<= 175", A, scenarios[0], fmt.Sprintf(
			"0.92 -> 0.80, mean over %d seeds (oracle told p1: %.1f); p0 known, p1 not; %d alarms before the drop re-armed",
			len(A.delays), orc[0].mean(), A.early)),
		delayFig("detect.a_p99_delay", percentile(A.delays, 99), "<= 400", A, scenarios[0], fmt.Sprintf(
			"p99 over %d seeds (median %.0f, max %.0f; oracle p99 %.0f)", len(A.delays), median(A.delays), slices.Max(A.delays), percentile(orc[0].delays, 99))),
		delayFig("detect.b_mean_delay", B.mean(), "<= 740", B, scenarios[1], fmt.Sprintf(
			"0.92 -> 0.87, mean over %d seeds (oracle told p1: %.1f, p99 kiln %.0f); %d alarms before the drop re-armed",
			len(B.delays), orc[1].mean(), percentile(B.delays, 99), B.early)),
		delayFig("detect.c_delay_vs_oracle", C.mean()/orc[2].mean(), "<= 1.1", C, scenarios[2], fmt.Sprintf(
			"0.92 -> 0.84: kiln %.1f / oracle %.1f labels (oracle: Bernoulli CUSUM told p1=0.84, threshold %.2f nats = p99 of its max over %d stable 100k streams; its misses %d)",
			C.mean(), orc[2].mean(), h[2], stable, orc[2].misses)),
	)
	figs[len(figs)-1].Unit = "x"
	// Why a delay misses its goal: kiln is not told p1, so it runs three
	// CUSUMs whose false-alarm budget is split by a union bound.
	const why = "; over the goal because kiln, not told p1, runs three CUSUMs (odds ratios 1.5, 2.25, 3.375) that share the 0.9% budget by a union bound (0.3% each: about ln 3 = 1.1 nats more threshold than one CUSUM at 0.9%), and none is tuned to this drop"
	for i := len(figs) - 4; i < len(figs); i++ {
		if !figs[i].Pass && !strings.Contains(figs[i].Detail, "FAILED") && figs[i].Name != "detect.a_p99_delay" {
			figs[i].Detail += why
		}
	}
	figs = append(figs, measured("detect.false_rollback_pct", faPct, "%", "<= 1.0", fmt.Sprintf(
		"%d of %d stable streams of %d labels at 0.92 alarmed (detector's share of target 0.01: %.3g; oracle thresholds A/B/C %.2f/%.2f/%.2f nats from the same streams); %s",
		falseAlarms, stable, detHorizon, detect.DetectorShare*detTarget, h[0], h[1], h[2], stableTook.Round(time.Second))))
	if ctx.Err() != nil {
		return figs
	}

	// ADWIN on scenario A, and its false alarms on stable streams.
	t1 := time.Now()
	ad := measureDelays(scenarios[0], seeds, func() stepper { return &adwinStepper{newADWIN(0.002)} })
	adAlarmed := make([]bool, adwinStable)
	parallel(adwinStable, func(i int) {
		r := newStream(famADWIN, uint64(i))
		th := cut(detP0)
		a := newADWIN(0.002)
		for range detHorizon {
			x := 1.0
			if r.next() < th {
				x = 0
			}
			if a.add(x) {
				adAlarmed[i] = true
				return
			}
		}
	})
	adFA := 0
	for _, a := range adAlarmed {
		if a {
			adFA++
		}
	}
	// At no higher false-alarm rate: kiln's measured rate (at target 0.01)
	// must not exceed ADWIN's measured rate. When it does, kiln is
	// configured for a target whose detector share (0.9 of it, an upper
	// bound on its rate by construction) is ADWIN's measured rate.
	adRate := float64(adFA) / float64(adwinStable)
	kA, adTarget := A, detTarget
	if faPct > 100*adRate {
		adTarget = math.Max(adRate, 0.5/float64(adwinStable)) / detect.DetectorShare
		kA = measureDelays(scenarios[0], seeds, func() stepper {
			d, err := detect.New(detect.Config{TargetFalseAlarm: adTarget, Baseline: detP0})
			if err != nil {
				panic(err)
			}
			return &kilnStepper{d: d}
		})
	}
	vs := measured("detect.vs_adwin", kA.mean()/ad.mean(), "x", "<= 0.85", fmt.Sprintf(
		"scenario A: kiln %.1f / ADWIN(delta 0.002, MOA bucket loop, clock 32) %.1f labels over %d seeds (ADWIN misses %d, early detections %d); false alarms per 100k stable labels: ADWIN %d of %d streams (%.2f%%), kiln %.2f%% at target 0.01, so kiln ran at target %.4g (at 0.01 its delay is %.1f); %s",
		kA.mean(), ad.mean(), len(ad.delays), ad.misses, ad.early, adFA, adwinStable, 100*adRate, faPct, adTarget, A.mean(),
		time.Since(t1).Round(time.Second)))
	if ad.misses > 0 || kA.misses > 0 {
		vs.Pass = false
	}
	if !vs.Pass {
		vs.Detail += "; over the goal for the reason of detect.a_mean_delay"
	}
	figs = append(figs, vs)
	if ctx.Err() != nil {
		return figs
	}

	// Unknown baseline: estimated from the first live labels (the warm-up
	// is part of each stream), scenario A and stable streams.
	t2 := time.Now()
	U := measureDelays(scenarios[0], seeds, newKiln(0))
	figs = append(figs, delayFig("detect.unknown_baseline_mean_delay", U.mean(), "<= 200", U, scenarios[0], fmt.Sprintf(
		"scenario A, baseline estimated from the stream's first labels (warm-up: %d misses, about %d labels, inside the 10,000 before the drop): mean over %d seeds, p99 %.0f; %d alarms before the drop re-armed",
		detect.WarmupMisses, int(float64(detect.WarmupMisses)/(1-detP0)), len(U.delays), percentile(U.delays, 99), U.early)))
	uAlarmed := make([]bool, stable)
	warm := make([]int, stable)
	parallel(stable, func(i int) {
		r := newStream(famUnknown, uint64(i))
		th := cut(detP0)
		k := newKiln(0)().(*kilnStepper)
		armed := 0
		for armed < detHorizon {
			if k.observe(r.next() < th) {
				uAlarmed[i] = true
				return
			}
			if k.d.Armed() {
				armed++
			} else {
				warm[i]++
			}
		}
	})
	uFA := 0
	for _, a := range uAlarmed {
		if a {
			uFA++
		}
	}
	wf := make([]float64, len(warm))
	for i, w := range warm {
		wf[i] = float64(w)
	}
	figs = append(figs, measured("detect.unknown_baseline_false_alarm_pct", 100*float64(uFA)/float64(stable), "%", "<= 1.0", fmt.Sprintf(
		"%d of %d stable streams at 0.92 alarmed in their warm-up (median %.0f labels) plus %d monitored labels; %s",
		uFA, stable, median(wf), detHorizon, time.Since(t2).Round(time.Second))))
	return figs
}
