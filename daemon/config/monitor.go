package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Monitor tunes the detector that watches the live model's accuracy on feedback.
type Monitor struct {
	// target_false_alarm: the false alarm probability the detector is calibrated to (per
	// 100k labels). Default 0.01.
	TargetFalseAlarm float64 `yaml:"target_false_alarm" json:"target_false_alarm"`
	// cooldown: after a rollback or retrain, how long the monitor waits before acting again.
	// Default 10m.
	Cooldown Duration `yaml:"cooldown" json:"cooldown"`
	// probation: for this long after a promotion, the new live model is rolled back without
	// labels when its non-2xx rate passes 1% or its p99 latency passes 3x the standby's.
	// Default 30m; 0 turns probation off.
	Probation Duration `yaml:"probation" json:"probation"`
	// min_label_rate: labels per day below which the monitor says it is blind (kiln status).
	// Default 50.
	MinLabelRate float64 `yaml:"min_label_rate" json:"min_label_rate"`
	// max_retrains_per_day: automatic retraining runs a day at most. Default 3.
	MaxRetrainsPerDay int `yaml:"max_retrains_per_day" json:"max_retrains_per_day"`
	// log: the prediction log's retention and which inputs it keeps.
	Log MonitorLog `yaml:"log" json:"log"`
}

func defaultMonitor() Monitor {
	return Monitor{TargetFalseAlarm: 0.01, Cooldown: D(10 * time.Minute), Probation: D(30 * time.Minute),
		MinLabelRate: 50, MaxRetrainsPerDay: 3, Log: DefaultMonitorLog()}
}

// MonitorLog is the retention of the pipeline's prediction log (see daemon/serve).
type MonitorLog struct {
	// keep: whole log segments whose newest record is older are removed; 14d, 36h, 90m.
	// 0 keeps them until max_size. Default 14d.
	Keep Age `yaml:"keep" json:"keep"`
	// max_size: the log's folder (records, indexes, input files) is kept under this, the
	// oldest segments removed first. Default 4Gi.
	MaxSize Bytes `yaml:"max_size" json:"max_size"`
	// inputs: which request bodies are kept for replay and late labels: all, none, or
	// "sample F" (the fraction F of requests, chosen by a stable hash of the request id).
	// Default all.
	Inputs string `yaml:"inputs" json:"inputs"`
}

// DefaultMonitorLog is monitor.log when a spec leaves it out; kilnd also applies it to the
// log of a pipeline no longer loaded.
func DefaultMonitorLog() MonitorLog {
	return MonitorLog{Keep: Age{D(14 * 24 * time.Hour)}, MaxSize: 4 * GiB, Inputs: LogInputsAll}
}

// InputFraction is the fraction of requests whose inputs the log keeps: 1 for all, 0 for
// none, F for "sample F". It is only called on a validated spec.
func (l MonitorLog) InputFraction() float64 {
	f, _ := parseInputs(l.Inputs) // validated: cannot fail
	return f
}

func parseInputs(s string) (float64, error) {
	switch f := strings.Fields(s); {
	case len(f) == 1 && f[0] == LogInputsAll:
		return 1, nil
	case len(f) == 1 && f[0] == LogInputsNone:
		return 0, nil
	case len(f) == 2 && f[0] == LogInputsSample:
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil || !(v > 0 && v < 1) {
			return 0, fmt.Errorf("sample %q is not a fraction above 0 and below 1 (e.g. sample 0.1)", f[1])
		}
		return v, nil
	}
	return 0, fmt.Errorf("%q is not all, none or sample F (e.g. sample 0.1)", clip(s))
}

func (m *Monitor) validate(c *checker, path string) {
	if !(m.TargetFalseAlarm > 0 && m.TargetFalseAlarm < 1) {
		c.failf(path+".target_false_alarm", "%v is out of range (want above 0 and below 1, e.g. 0.01)", m.TargetFalseAlarm)
	}
	c.nonNegative(path+".cooldown", m.Cooldown)
	c.nonNegative(path+".probation", m.Probation)
	if m.MinLabelRate < 0 {
		c.failf(path+".min_label_rate", "%v is negative (want labels a day, e.g. 50)", m.MinLabelRate)
	}
	if m.MaxRetrainsPerDay < 0 || m.MaxRetrainsPerDay > 24 {
		c.failf(path+".max_retrains_per_day", "%d is out of range (want 0 to 24; 0 turns automatic retraining off)", m.MaxRetrainsPerDay)
	}
	c.nonNegative(path+".log.keep", m.Log.Keep.Duration)
	if m.Log.MaxSize < MinLogSize {
		c.failf(path+".log.max_size", "%s is too small (want at least %s: two log segments)", m.Log.MaxSize, MinLogSize)
	}
	if _, err := parseInputs(m.Log.Inputs); err != nil {
		c.failf(path+".log.inputs", "%v", err)
	}
}
