package detect

import (
	"encoding/json"
	"fmt"
	"math"
)

// pairedThetas are the alternatives the paired test's mixture averages
// over: the standby wins this share of the rows where exactly one of the
// two is right. Equal weights; 0.55 to 0.9 spans "slightly" to "much"
// better without being told which.
var pairedThetas = [...]float64{0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9}

// PairedLevel is the paired test's share of monitor.target_false_alarm.
func PairedLevel(target float64) float64 { return (1 - DetectorShare) * target }

// PairedTest is the sequential test, from promotion on, of "the live model
// is worse than the standby" on the discordant rows (exactly one of the two
// right). Under H0 each wins such a row with probability 1/2. Its
// statistic is a mixture likelihood ratio (an e-process)
//
//	E = mean over theta of (2 theta)^W (2 (1-theta))^L
//
// (W rows the standby won, L the live model won), a nonnegative martingale
// under H0, so by Ville's inequality P(E ever reaches 1/level) <= level:
// the test is valid at any stopping time, however long it runs and however
// often it is looked at. It rejects once and stays rejected until Reset.
// The exported fields are its persisted state.
type PairedTest struct {
	Level       float64 `json:"level"`
	StandbyWins int64   `json:"standby_wins"`
	LiveWins    int64   `json:"live_wins"`
	Rejected    bool    `json:"rejected"`
}

// NewPairedTest builds the test at PairedLevel(target).
func NewPairedTest(target float64) (*PairedTest, error) {
	if !(target > 0 && target < 1) {
		return nil, fmt.Errorf("detect: target_false_alarm %v out of range (want above 0 and below 1)", target)
	}
	return &PairedTest{Level: PairedLevel(target)}, nil
}

// Observe takes one row both models answered; rows where both were right
// or both wrong carry no information and are ignored. It reports true on
// the row that makes the test reject (once).
func (t *PairedTest) Observe(liveRight, standbyRight bool) bool {
	if liveRight == standbyRight || t.Rejected {
		return false
	}
	if standbyRight {
		t.StandbyWins++
	} else {
		t.LiveWins++
	}
	if t.LogE() >= math.Log(1/t.Level) {
		t.Rejected = true
		return true
	}
	return false
}

// LogE is the log of the e-value so far.
func (t *PairedTest) LogE() float64 {
	w, l := float64(t.StandbyWins), float64(t.LiveWins)
	m := math.Inf(-1)
	var terms [len(pairedThetas)]float64
	for i, th := range pairedThetas {
		terms[i] = w*math.Log(2*th) + l*math.Log(2*(1-th))
		m = math.Max(m, terms[i])
	}
	s := 0.0
	for _, x := range terms {
		s += math.Exp(x - m)
	}
	return m + math.Log(s/float64(len(pairedThetas)))
}

// Reset starts the test again (after the live model changed).
func (t *PairedTest) Reset() { *t = PairedTest{Level: t.Level} }

// RestorePairedTest rebuilds a test from its JSON state.
func RestorePairedTest(b []byte) (*PairedTest, error) {
	var t PairedTest
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("detect: restore paired test: %w", err)
	}
	if !(t.Level > 0 && t.Level < 1) || t.StandbyWins < 0 || t.LiveWins < 0 {
		return nil, fmt.Errorf("detect: restore paired test: level %v, standby_wins %d, live_wins %d out of range", t.Level, t.StandbyWins, t.LiveWins)
	}
	return &t, nil
}
