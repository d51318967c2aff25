package detect

import (
	"fmt"
	"math"
	"sync"
)

// A cusum is one integer Bernoulli CUSUM on a miss stream (1 = the label was
// missed): S = max(0, S + Up) on a miss, max(0, S - Down) on a hit, alarm at
// S >= H. Up/Down is the log-likelihood ratio of "miss rate q1" against
// "miss rate q0" scaled to integers (one unit = Nats nats), so the statistic
// the monitor runs is exactly the Markov chain whose false-alarm
// probability falseAlarmProb computes: no approximation sits between the
// calibration and the detector.
type cusumParams struct {
	Ratio float64 `json:"odds_ratio"` // odds(q1)/odds(q0): the rise this CUSUM is tuned to
	Up    int32   `json:"up"`
	Down  int32   `json:"down"`
	H     int32   `json:"h"`
	Nats  float64 `json:"nats_per_unit"`
	// Ref is the miss rate the CUSUM is referenced to and calibrated at.
	Ref float64 `json:"reference_miss_rate"`
}

// statesPerThreshold sets the statistic's resolution: the threshold is
// about this many units, so rounding the LLR to integers changes a step by
// at most 1/(2*Down) of a hit's LLR, under a third of a percent of the
// threshold. When one hit's LLR is finer than that, a hit is one unit and
// the chain has threshold/LLR(hit) states (about 3,800 at a miss rate of
// 0.005, 15,000 at the 0.001 floor of the reference grid).
const statesPerThreshold = 1500

// design scales the LLR of miss rate q1 (odds ratio r above q0) against q0
// to integers for a threshold of about hNats nats.
func design(q0, r, hNats float64) cusumParams {
	o1 := r * q0 / (1 - q0)
	q1 := o1 / (1 + o1)
	a := math.Log(q1 / q0)             // a miss's LLR
	b := math.Log((1 - q0) / (1 - q1)) // a hit's LLR, negated
	down := max(1, math.Round(b/(hNats/statesPerThreshold)))
	u := b / down
	return cusumParams{Ratio: r, Up: int32(max(1, math.Round(a/u))), Down: int32(down), Nats: u}
}

// falseAlarmProb is the exact probability that the integer CUSUM (up, down,
// h), started at 0, reaches h within n labels of a stream whose labels are
// missed independently with probability q. It iterates the chain's state
// distribution label by label; once the per-label alarm hazard has
// converged to the chain's quasi-stationary value (it rises monotonically to
// it from a start at 0) the rest of the horizon is geometric, so a 100k
// horizon costs a few thousand steps.
func falseAlarmProb(up, down, h int, q float64, n int) float64 {
	v := make([]float64, h)
	w := make([]float64, h)
	v[0] = 1
	alive, fired := 1.0, 0.0
	hit := 1 - q
	const block = 256
	prevHazard := 0.0
	for t := 0; t < n; t++ {
		// hits: shift down by `down`, the lowest `down` states collapse to 0
		z := 0.0
		for s := 0; s < down && s < h; s++ {
			z += v[s]
		}
		for s := down; s < h; s++ {
			w[s-down] = hit * v[s]
		}
		for s := max(h-down, 0); s < h; s++ {
			w[s] = 0
		}
		w[0] += hit * z
		// misses: shift up by `up`, the top `up` states alarm
		lost := 0.0
		top := h - up
		for s := 0; s < top; s++ {
			w[s+up] += q * v[s]
		}
		for s := max(top, 0); s < h; s++ {
			lost += v[s]
		}
		lost *= q
		hazard := lost / alive
		fired += lost
		alive -= lost
		v, w = w, v
		if t%block == block-1 {
			if t > 4*h && hazard > 0 && math.Abs(hazard-prevHazard) <= 1e-7*hazard {
				// geometric tail: survive the remaining n-t-1 labels at 1-hazard each
				rest := float64(n - t - 1)
				return fired + alive*(-math.Expm1(rest*math.Log1p(-hazard)))
			}
			prevHazard = hazard
		}
	}
	return fired
}

// hazard is the chain's quasi-stationary alarm probability per label: the
// probability that a label raises the alarm once the statistic has forgotten
// its start, conditioned on no alarm so far. It is computed on the chain
// embedded at misses (a hit can never alarm): before a miss the statistic
// has some distribution x; the miss adds up (mass at or above h alarms);
// the run of hits until the next miss is geometric, so it moves a state t
// down by down*G with P(G=g) = q(1-q)^g, all in one O(h) pass. Power
// iteration from the start state 0 converges to the alarm probability per
// miss, pi, and the per-label hazard is q*pi (alarms happen only at misses,
// which arrive at rate q). One step stands for 1/q labels, so even a stream
// missed once in 200 labels converges in a few hundred O(h) steps.
//
// A chain whose statistic barely drifts down (a true miss rate near the
// rise a CUSUM is tuned to) mixes slowly; after maxIter steps without
// convergence hazard returns 1, the conservative answer (such a rate sits
// in the far tail of the estimate's spread, where the alarm is near
// certain anyway).
func hazard(up, down, h int, q float64) float64 {
	if q*float64(up) >= (1-q)*float64(down) {
		return 1 // the statistic drifts up: it alarms for sure
	}
	maxIter := min(20*h/max(up, 1)+2000, 20000)
	x := make([]float64, h)
	r := make([]float64, h+down)
	x[0] = 1
	prev := -1.0
	for j := 0; j < maxIter; j++ {
		alarm := 0.0
		for s := max(h-up, 0); s < h; s++ {
			alarm += x[s]
		}
		// r[t] = sum_g (1-q)^g y[t+down*g], y = x shifted up by `up`
		for t := h - 1; t >= 0; t-- {
			y := 0.0
			if t >= up {
				y = x[t-up]
			}
			r[t] = y + (1-q)*r[t+down]
		}
		keep := 1 - alarm
		sum := 0.0
		for t := h - 1; t >= 1; t-- {
			x[t] = q * r[t] / keep
			sum += x[t]
		}
		x[0] = 1 - sum
		if j > 2*h/max(up, 1)+16 && math.Abs(alarm-prev) <= 1e-8*alarm {
			return q * alarm
		}
		prev = alarm
	}
	return 1
}

// horizonFalseAlarm bounds the probability that the CUSUM alarms within n
// labels from a start at 0: 1-(1-hazard)^n. The CUSUM's update is monotone
// in its state, so a chain started at 0 stays, label by label and on the
// same labels, at or below one started from the quasi-stationary
// distribution, whose survival is exactly (1-hazard)^n: the bound holds and
// is tight once n is long against the chain's memory (a 100k horizon against
// a memory of a few hundred labels here).
func horizonFalseAlarm(up, down, h int, q float64, n int) float64 {
	return -math.Expm1(float64(n) * math.Log1p(-hazard(up, down, h, q)))
}

type calKey struct {
	q0, r, alpha float64
	n            int
}

var (
	calMu    sync.Mutex
	calCache = map[calKey]cusumParams{}
)

// calibrate returns the CUSUM tuned to odds-ratio r above reference miss
// rate q0 with the smallest integer threshold whose false-alarm
// probability within n labels of a stream missed at rate q0 is at most
// alpha (horizonFalseAlarm: exact hazard, conservative bound). Results are
// cached by their inputs (q0 is on the reference grid, see refMissRate).
func calibrate(q0, r, alpha float64, n int) (cusumParams, error) {
	if !(q0 > 0 && q0 < 1) || !(r > 1) || !(alpha > 0 && alpha < 1) || n < 1 {
		return cusumParams{}, fmt.Errorf("calibrate: miss rate %v, ratio %v, alpha %v, horizon %d out of range", q0, r, alpha, n)
	}
	key := calKey{q0, r, alpha, n}
	calMu.Lock()
	p, ok := calCache[key]
	calMu.Unlock()
	if ok {
		return p, nil
	}
	// Threshold guess from Wald/Siegmund: the stable chain's hazard is
	// about exp(-hNats), so n*exp(-hNats) ~ alpha.
	hNats := math.Log(float64(n)/alpha) + 1
	p = design(q0, r, hNats)
	p.Ref = q0
	fa := func(h int) float64 { return horizonFalseAlarm(int(p.Up), int(p.Down), h, q0, n) }
	// Bracket: lo fails (fa > alpha), hi passes, then interpolate on
	// log(fa), nearly linear in h, guarded by bisection.
	hi := int(math.Ceil(hNats / p.Nats))
	fhi := fa(hi)
	lo, flo := 0, 1.0
	for fhi > alpha {
		lo, flo = hi, fhi
		hi += hi/4 + 1
		fhi = fa(hi)
	}
	if lo == 0 {
		lo = hi / 2
		flo = fa(lo)
		for flo <= alpha {
			hi, fhi = lo, flo
			lo /= 2
			if lo < 1 {
				lo, flo = 0, 1
				break
			}
			flo = fa(lo)
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if flo < 1 && fhi > 0 {
			ll, lh, la := math.Log(flo), math.Log(fhi), math.Log(alpha)
			g := lo + int(math.Round(float64(hi-lo)*(ll-la)/(ll-lh)))
			mid = min(max(g, lo+1), hi-1)
		}
		if f := fa(mid); f > alpha {
			lo, flo = mid, f
		} else {
			hi, fhi = mid, f
		}
	}
	p.H = int32(hi)
	calMu.Lock()
	calCache[key] = p
	calMu.Unlock()
	return p, nil
}
