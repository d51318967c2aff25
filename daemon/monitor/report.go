package monitor

import (
	"encoding/json"
	"math"
	"time"

	"github.com/kiln-edge/kiln/daemon/monitor/detect"
	"github.com/kiln-edge/kiln/storage"
)

// Watch is what `kiln status` says of a pipeline's monitoring: how fast
// labels come, how late, what the detector is doing, and what a 5-point drop
// would take to be seen at this rate.
type Watch struct {
	LabelsPerDay float64
	// DelayP50 is the median label delay of the newest joined labels.
	DelayP50 time.Duration
	// Phase is the detector's overall stream: warmup, armed or blind; or
	// "alarm" while an alarm waits for its decision.
	Phase string
	// WarmupLabels of WarmupMaxLabels, WarmupMisses of WarmupMaxMisses
	// during the warm-up; Baseline once armed.
	WarmupLabels, WarmupMaxLabels, WarmupMisses, WarmupMaxMisses int
	Baseline                                                     float64
	// Detect5 is the expected time to detect a drop of 5 points of accuracy
	// at LabelsPerDay (0 when unknown), from Lorden's approximation of a
	// CUSUM's delay: ln(horizon / level) / KL(p0 - 0.05 || p0) labels.
	Detect5 time.Duration
	// Blind says the monitor cannot watch: fewer labels a day than
	// monitor.min_label_rate, or a baseline that misses too often.
	Blind    bool
	BlindWhy string
	// Alarm describes an alarm waiting for its decision.
	Alarm string
}

// WatchOf reports a pipeline's monitoring from its scorings and state.
func WatchOf(scorings []storage.Scoring, st *storage.MonitorState, minRate, target float64, now time.Time) Watch {
	var w Watch
	var first time.Time
	var labels int64
	const span = 7 * 24 * time.Hour
	for _, sc := range scorings {
		if now.Sub(sc.Arrived) > span {
			continue
		}
		if first.IsZero() || sc.Arrived.Before(first) {
			first = sc.Arrived
		}
		if len(sc.Models) > 0 {
			labels += sc.Models[0].Rows + sc.Models[0].Excluded
		}
		if sc.Delay != nil {
			w.DelayP50 = time.Duration(sc.Delay.P50 * float64(time.Second))
		}
	}
	if labels > 0 {
		days := math.Max(now.Sub(first).Hours(), 1) / 24
		w.LabelsPerDay = float64(labels) / days
	}
	if w.LabelsPerDay < minRate {
		w.Blind, w.BlindWhy = true, "fewer labels a day than monitor.min_label_rate"
	}
	if st == nil {
		return w
	}
	if st.Detector != nil {
		if d, err := detect.Restore(st.Detector); err == nil {
			if ss := d.Status(); len(ss) > 0 {
				o := ss[0]
				w.Phase, w.WarmupLabels, w.WarmupMaxLabels = o.Phase, o.WarmupLabels, o.WarmupMaxLabels
				w.WarmupMisses, w.WarmupMaxMisses, w.Baseline = o.WarmupMisses, o.WarmupMaxMisses, o.Baseline
				if o.Phase == detect.PhaseBlind {
					w.Blind, w.BlindWhy = true, "the live model misses too often for a baseline"
				}
			}
		}
	}
	if a := st.Alarm; a != nil {
		w.Phase = "alarm"
		w.Alarm = "alarm by " + a.By + " at label " + itoa(a.Labels) + ": " + itoa(a.Rows) + " rows since, " +
			itoa(a.LiveOnly+a.StbyOnly) + " where the models disagree"
		if a.Decided != "" {
			w.Alarm += "; decided " + a.Decided + ", to be acted on"
		}
	}
	if p0 := w.Baseline; p0 > 0.05 && p0 < 1 && w.LabelsPerDay > 0 {
		n := expectedDelay(p0, p0-0.05, detect.DefaultHorizon, detect.DetectorShare*target)
		w.Detect5 = time.Duration(n / w.LabelsPerDay * 24 * float64(time.Hour))
	}
	return w
}

// expectedDelay is Lorden's approximation of a CUSUM's detection delay in
// labels for a fall of the correct rate from p0 to p1, its threshold set
// for a false alarm with probability level over horizon labels.
func expectedDelay(p0, p1 float64, horizon int, level float64) float64 {
	kl := p1*math.Log(p1/p0) + (1-p1)*math.Log((1-p1)/(1-p0))
	return math.Log(float64(horizon)/level) / kl
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
