package detect

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
)

// Verdict is the decision after an alarm.
type Verdict string

const (
	// Inconclusive: too few discordant rows after the alarm yet; keep
	// collecting.
	Inconclusive Verdict = "inconclusive"
	// Rollback: the standby is better on the rows after the alarm.
	Rollback Verdict = "rollback"
	// Drift: enough rows, and the standby is not better: the world changed.
	Drift Verdict = "drift"
)

// Decision-plan constants (see the package doc).
const (
	// DecisionShare of target_false_alarm is the decision's level: the
	// probability, per decision, of rolling back to a standby that is no
	// better than the live model.
	DecisionShare = 0.5
	// MinDiscordant is the fewest discordant rows a verdict is taken on.
	MinDiscordant = 20
	// DesignTheta and DesignMiss shape the plan: against a standby that
	// wins two of three discordant rows, the plan ends in Drift (a missed
	// rollback) with probability about DesignMiss.
	DesignTheta = 2.0 / 3
	DesignMiss  = 0.05
	// undecidedTail: the plan is truncated (Drift) where both hypotheses
	// would have decided with at least this probability.
	undecidedTail = 0.001
)

// Plan is the decision's sequential sign test on the discordant rows after
// an alarm, derived from the target. After each discordant row from
// MinDiscordant on, with W rows the standby won and L the live model won,
// it takes the log-likelihood ratio of "the standby wins DesignTheta of
// them" against "half": LLR = W ln(2 theta) + L ln(2 (1-theta)).
// LLR >= Upper is Rollback, LLR <= Lower (ln DesignMiss, Wald's boundary)
// or reaching MaxDiscordant rows is Drift. Wald's upper boundary is only an
// approximation, so Upper is instead the smallest value whose exact
// probability of Rollback when each model wins half (the binomial walk's
// dynamic programme, both boundaries and the truncation included) is at
// most Level. At a Rollback on n rows the exact one-sided sign-test p-value
// is at most NominalAt(n); the per-look level is this boundary, and the
// overall level over all looks is Level, exactly.
type Plan struct {
	Level         float64 `json:"level"`
	Theta         float64 `json:"theta"`
	Upper         float64 `json:"upper"`
	Lower         float64 `json:"lower"`
	MinDiscordant int     `json:"min_discordant"`
	MaxDiscordant int     `json:"max_discordant"`
	// TypeI and Power are the plan's exact Rollback probabilities when
	// each model wins half the discordant rows, and at DesignTheta.
	TypeI float64 `json:"type_i"`
	Power float64 `json:"power"`
}

var (
	planMu    sync.Mutex
	planCache = map[float64]Plan{}
)

// NewPlan derives the decision plan for monitor.target_false_alarm.
func NewPlan(target float64) (Plan, error) {
	if !(target > 0 && target < 1) {
		return Plan{}, fmt.Errorf("detect: target_false_alarm %v out of range (want above 0 and below 1)", target)
	}
	planMu.Lock()
	defer planMu.Unlock()
	if p, ok := planCache[target]; ok {
		return p, nil
	}
	p := Plan{Level: DecisionShare * target, Theta: DesignTheta, Lower: math.Log(DesignMiss), MinDiscordant: MinDiscordant}
	// MaxDiscordant: doubled until both hypotheses have decided by then
	// with probability 1-undecidedTail, Upper solved at each.
	for nmax := 128; ; nmax *= 2 {
		if nmax > 1<<16 {
			return Plan{}, fmt.Errorf("detect: no decision plan at level %v", p.Level)
		}
		p.MaxDiscordant = nmax
		lo, hi := 0.0, math.Log(2/p.Level)+5 // hi: beyond Wald's ln(1/level)
		for range 50 {
			p.Upper = (lo + hi) / 2
			if r, _ := p.walk(0.5); r <= p.Level {
				hi = p.Upper
			} else {
				lo = p.Upper
			}
		}
		p.Upper = hi
		var left0, left1 float64
		p.TypeI, left0 = p.walk(0.5)
		p.Power, left1 = p.walk(DesignTheta)
		if left0 <= undecidedTail && left1 <= undecidedTail {
			break
		}
	}
	planCache[target] = p
	return p, nil
}

func (p Plan) llr(w, l int64) float64 {
	return float64(w)*math.Log(2*p.Theta) + float64(l)*math.Log(2*(1-p.Theta))
}

// walk returns the exact probability of Rollback when the standby wins
// each discordant row with probability theta, and the probability of
// being still undecided at MaxDiscordant-1 rows.
func (p Plan) walk(theta float64) (rollback, undecided float64) {
	dist := []float64{1} // dist[w]: undecided after n rows, w won by the standby
	for n := 1; n < p.MaxDiscordant; n++ {
		next := make([]float64, n+1)
		for w, m := range dist {
			next[w] += m * (1 - theta)
			next[w+1] += m * theta
		}
		if n >= p.MinDiscordant {
			for w := range next {
				switch v := p.llr(int64(w), int64(n-w)); {
				case v >= p.Upper:
					rollback += next[w]
					next[w] = 0
				case v <= p.Lower:
					next[w] = 0
				}
			}
		}
		dist = next
	}
	for _, m := range dist {
		undecided += m
	}
	// the last row: a rollback still possible, anything else is Drift
	n := p.MaxDiscordant
	for w, m := range dist {
		if p.llr(int64(w+1), int64(n-w-1)) >= p.Upper {
			rollback += m * theta
		}
	}
	return rollback, undecided
}

// NominalAt is the per-look level at n discordant rows: the exact
// one-sided sign-test p-value of the fewest standby wins that roll back.
func (p Plan) NominalAt(n int) float64 {
	for w := 0; w <= n; w++ {
		if p.llr(int64(w), int64(n-w)) >= p.Upper {
			return SignTestP(w, n)
		}
	}
	return 0
}

// Decision is the numbers of a verdict, for the event.
type Decision struct {
	Verdict Verdict `json:"verdict"`
	Plan    Plan    `json:"plan"`
	// Rows after the alarm, both models answered: the window.
	Rows int64 `json:"rows"`
	// Discordant rows by winner, and concordant rows.
	StandbyOnly int64 `json:"standby_only"`
	LiveOnly    int64 `json:"live_only"`
	BothRight   int64 `json:"both_right"`
	BothWrong   int64 `json:"both_wrong"`
	// PValue is the exact one-sided sign-test p-value of StandbyOnly wins
	// among the discordant rows (1 before MinDiscordant).
	PValue float64 `json:"p_value"`
	// Accuracies on the window's rows.
	LiveAccuracy    float64 `json:"live_accuracy"`
	StandbyAccuracy float64 `json:"standby_accuracy"`
}

// Decider takes the rows that arrive after an alarm, in order, and reaches
// a verdict by the plan; once final, further rows leave it unchanged (they
// are outside the plan). The exported fields are its persisted state.
type Decider struct {
	D Decision `json:"decision"`
}

// NewDecider starts a decision for the target.
func NewDecider(target float64) (*Decider, error) {
	p, err := NewPlan(target)
	if err != nil {
		return nil, err
	}
	return &Decider{D: Decision{Verdict: Inconclusive, Plan: p, PValue: 1}}, nil
}

// Observe takes one post-alarm row both models answered and returns the
// verdict so far.
func (d *Decider) Observe(liveRight, standbyRight bool) Verdict {
	x := &d.D
	if x.Verdict != Inconclusive {
		return x.Verdict
	}
	x.Rows++
	switch {
	case liveRight && standbyRight:
		x.BothRight++
	case !liveRight && !standbyRight:
		x.BothWrong++
	case standbyRight:
		x.StandbyOnly++
	default:
		x.LiveOnly++
	}
	x.LiveAccuracy = float64(x.BothRight+x.LiveOnly) / float64(x.Rows)
	x.StandbyAccuracy = float64(x.BothRight+x.StandbyOnly) / float64(x.Rows)
	if liveRight != standbyRight {
		x.Verdict, x.PValue = x.Plan.Decide(x.LiveOnly, x.StandbyOnly)
	}
	return x.Verdict
}

// Result returns the decision so far.
func (d *Decider) Result() Decision { return d.D }

// Decide is the plan's verdict once the discordant rows after an alarm
// number liveOnly+standbyOnly, with the exact one-sided sign-test p-value.
// The plan's levels hold when it is asked after every discordant row, in
// order, stopping at the first final verdict (the Decider does this).
func (p Plan) Decide(liveOnly, standbyOnly int64) (Verdict, float64) {
	n := liveOnly + standbyOnly
	if n < int64(p.MinDiscordant) {
		return Inconclusive, 1
	}
	pv := SignTestP(int(standbyOnly), int(n))
	switch v := p.llr(standbyOnly, liveOnly); {
	case v >= p.Upper:
		return Rollback, pv
	case v <= p.Lower || n >= int64(p.MaxDiscordant):
		return Drift, pv
	}
	return Inconclusive, pv
}

// RestoreDecider rebuilds a decider from its JSON state.
func RestoreDecider(b []byte) (*Decider, error) {
	var d Decider
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("detect: restore decider: %w", err)
	}
	x := d.D
	if x.Plan.MaxDiscordant < x.Plan.MinDiscordant || !(x.Plan.Upper > 0) || !(x.Plan.Theta > 0.5 && x.Plan.Theta < 1) || x.Rows != x.BothRight+x.BothWrong+x.LiveOnly+x.StandbyOnly {
		return nil, fmt.Errorf("detect: restore decider: plan or counts inconsistent (rows %d)", x.Rows)
	}
	switch x.Verdict {
	case Inconclusive, Rollback, Drift:
	default:
		return nil, fmt.Errorf("detect: restore decider: verdict %q unknown", x.Verdict)
	}
	return &d, nil
}
