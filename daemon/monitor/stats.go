package monitor

import (
	"strconv"

	"github.com/kiln-edge/kiln/daemon/monitor/detect"
)

// statistics is what the watch needs of the detection statistics: a
// detector, a paired test and a post-alarm decider per live model,
// restored from their persisted state (nil: fresh). Package detect is the
// real one; the interface keeps the watch's bookkeeping testable apart.
type statistics interface {
	detector(spec pipelineSpec, state []byte) (detector, error)
	paired(spec pipelineSpec, state []byte) (pairedTest, error)
	decider(spec pipelineSpec, state []byte) (decider, error)
}

type detector interface {
	// observe takes one label of the live model: right or wrong, and its
	// true class (per-class streams). fired reports an alarm.
	observe(correct bool, class string) (fired bool, by string, details map[string]string, err error)
	state() ([]byte, error)
}

type pairedTest interface {
	// observe takes one row both models answered; reject reports that the
	// standby is better, at any stopping time.
	observe(liveRight, standbyRight bool) (reject bool, details map[string]string)
	state() ([]byte, error)
}

type decider interface {
	// observe takes one post-alarm row both models answered and returns
	// "rollback", "drift" or "" (too few discordant rows yet).
	observe(liveRight, standbyRight bool) string
	details() map[string]string
	state() ([]byte, error)
}

// detectStats is package detect behind the interfaces.
type detectStats struct{}

func (detectStats) detector(spec pipelineSpec, state []byte) (detector, error) {
	if state != nil {
		d, err := detect.Restore(state)
		return detDetector{d}, err
	}
	var classes []string
	if spec.metric == "macro_f1" {
		classes = spec.classes
	}
	d, err := detect.New(detect.Config{TargetFalseAlarm: spec.targetFalseAlarm, Classes: classes})
	return detDetector{d}, err
}

func (detectStats) paired(spec pipelineSpec, state []byte) (pairedTest, error) {
	if state != nil {
		t, err := detect.RestorePairedTest(state)
		return detPaired{t}, err
	}
	t, err := detect.NewPairedTest(spec.targetFalseAlarm)
	return detPaired{t}, err
}

func (detectStats) decider(spec pipelineSpec, state []byte) (decider, error) {
	if state != nil {
		d, err := detect.RestoreDecider(state)
		return detDecider{d}, err
	}
	d, err := detect.NewDecider(spec.targetFalseAlarm)
	return detDecider{d}, err
}

type detDetector struct{ d *detect.Detector }

func (x detDetector) observe(correct bool, class string) (bool, string, map[string]string, error) {
	a, err := x.d.Observe(correct, class)
	if a == nil || err != nil {
		return false, "", nil, err
	}
	return true, "cusum:" + a.Stream, map[string]string{
		"stream": a.Stream, "baseline": f4(a.Baseline), "tuned_to": f4(a.TunedTo),
		"statistic": f4(a.Statistic), "threshold": f4(a.Threshold), "level": strconv.FormatFloat(a.Level, 'g', 3, 64),
		"stream_labels": strconv.FormatInt(a.Label, 10),
	}, nil
}

func (x detDetector) state() ([]byte, error) { return x.d.MarshalJSON() }

type detPaired struct{ t *detect.PairedTest }

func (x detPaired) observe(liveRight, standbyRight bool) (bool, map[string]string) {
	if !x.t.Observe(liveRight, standbyRight) {
		return false, nil
	}
	// The test decided on its e-value (valid at any stopping time); the
	// fixed-n sign-test p-value of the same counts is given for people.
	n := x.t.StandbyWins + x.t.LiveWins
	return true, map[string]string{"standby_wins": strconv.FormatInt(x.t.StandbyWins, 10),
		"live_wins": strconv.FormatInt(x.t.LiveWins, 10), "log_e": f4(x.t.LogE()), "level": strconv.FormatFloat(x.t.Level, 'g', 3, 64),
		"p_value": strconv.FormatFloat(detect.SignTestP(int(x.t.StandbyWins), int(n)), 'g', 4, 64)}
}

func (x detPaired) state() ([]byte, error) { return jsonOf(x.t) }

type detDecider struct{ d *detect.Decider }

func (x detDecider) observe(liveRight, standbyRight bool) string {
	switch x.d.Observe(liveRight, standbyRight) {
	case detect.Rollback:
		return "rollback"
	case detect.Drift:
		return "drift"
	}
	return ""
}

func (x detDecider) details() map[string]string {
	r := x.d.Result()
	return map[string]string{"post_alarm_rows": strconv.FormatInt(r.Rows, 10),
		"standby_only": strconv.FormatInt(r.StandbyOnly, 10), "live_only": strconv.FormatInt(r.LiveOnly, 10),
		"p_value":                   strconv.FormatFloat(r.PValue, 'g', 4, 64),
		"live_accuracy_after_alarm": f4(r.LiveAccuracy), "standby_accuracy_after_alarm": f4(r.StandbyAccuracy)}
}

func (x detDecider) state() ([]byte, error) { return jsonOf(x.d) }

func f4(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
