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
}

// maxStates bounds the calibration chain (and the statistic's resolution):
// the threshold is about this many units. Below it the LLR is rounded by at
// most 1/(2*Down) relative; it is only reached coarsely when the miss rate is
// so small that one hit's LLR is under threshold/maxStates nats, and then the
// decrement per hit is one unit (the CUSUM is tuned to a slightly larger
// rise than its nominal ratio; see design).
const maxStates = 1500

// design scales the LLR of miss rate q1 = odds-ratio r above q0 to integers
// for a threshold of about hNats nats.
func design(q0, r, hNats float64) cusumParams {
	o1 := r * q0 / (1 - q0)
	q1 := o1 / (1 + o1)
	a := math.Log(q1 / q0)             // a miss's LLR
	b := math.Log((1 - q0) / (1 - q1)) // a hit's LLR, negated
	u := hNats / maxStates
	down := max(1, math.Round(b/u))
	u = b / down
	if down == 1 && b < hNats/maxStates {
		// Resolution floor: one unit per hit is b' = hNats/maxStates nats,
		// more than b; keep the miss step's LLR ratio a/b so the CUSUM still
		// weighs a miss against hits as the LLR does.
		u = hNats / maxStates
		return cusumParams{Ratio: r, Up: int32(max(1, math.Round(a/b))), Down: 1, Nats: u}
	}
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

type calKey struct {
	q0, r, alpha float64
	n            int
}

var (
	calMu    sync.Mutex
	calCache = map[calKey]cusumParams{}
)

// calibrate returns the CUSUM tuned to odds-ratio r above miss rate q0 with
// the smallest integer threshold whose exact false-alarm probability within
// n labels at miss rate q0 is at most alpha. Results are cached by their
// inputs (q0 is already on the reference grid, see refMissRate).
func calibrate(q0, r, alpha float64, n int) (cusumParams, error) {
	if !(q0 > 0 && q0 < 1) || !(r > 1) || !(alpha > 0 && alpha < 1) || n < 1 {
		return cusumParams{}, fmt.Errorf("calibrate: q0 %v, ratio %v, alpha %v, horizon %d out of range", q0, r, alpha, n)
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
	fa := func(h int) float64 { return falseAlarmProb(int(p.Up), int(p.Down), h, q0, n) }
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
