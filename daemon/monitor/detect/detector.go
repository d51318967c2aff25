package detect

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Ratios are the rises in the miss rate's odds that the CUSUMs of every
// stream are tuned to: 1.5, 2.25 and 3.375 times the baseline's odds. A
// geometric grid keeps any rise from 1.5x to 4x within a factor 1.23 of a
// tuned one, where a CUSUM loses little (it is within a few percent of the
// CUSUM told the true rise; see the package doc), and no grid point was
// chosen for a benchmark's drop.
var Ratios = [nCusum]float64{1.5, 2.25, 3.375}

const nCusum = 3

// Budget shares of monitor.target_false_alarm (see the package doc).
const (
	// DetectorShare of the target goes to the detector's streams, the rest
	// to the paired test (PairedLevel).
	DetectorShare = 0.9
)

// DefaultHorizon is the number of stable labels target_false_alarm is
// defined over.
const DefaultHorizon = 100_000

// Warm-up lengths: the baseline is estimated from a stream's first labels
// until it has seen this many misses or this many labels (see the package
// doc for why).
const (
	WarmupMisses           = 400
	WarmupMaxLabels        = 20_000
	ClassWarmupMisses      = 100
	ClassWarmupMaxLabels   = 2_000
	minRefMiss, maxRefMiss = 0.001, 0.9
)

// Config configures a Detector.
type Config struct {
	// TargetFalseAlarm is monitor.target_false_alarm: the probability of
	// any alarm (all streams and the paired test together) within Horizon
	// labels of a stable live model.
	TargetFalseAlarm float64 `json:"target_false_alarm"`
	// Horizon in labels; 0 means DefaultHorizon.
	Horizon int `json:"horizon"`
	// Baseline is the live model's correct rate when known (0 < p0 < 1);
	// 0 (the monitor's case) estimates it from the first live labels.
	Baseline float64 `json:"baseline,omitempty"`
	// Classes adds a recall stream per class (macro_f1 pipelines): the
	// labels whose true class it is, hit when the model said that class.
	Classes []string `json:"classes,omitempty"`
}

// Alarm is what a detector reports when one of its streams crosses its
// threshold.
type Alarm struct {
	// Stream is "overall" or "class:<name>".
	Stream string `json:"stream"`
	// Label is the stream's label count since it was armed.
	Label int64 `json:"label"`
	// Baseline is the correct rate the stream's CUSUMs are referenced to
	// (1 minus the reference miss rate).
	Baseline float64 `json:"baseline"`
	// TunedTo is the correct rate the CUSUM that fired is tuned to, and
	// Ratio its odds ratio on the miss rate.
	TunedTo float64 `json:"tuned_to"`
	Ratio   float64 `json:"odds_ratio"`
	// Statistic and Threshold are in nats of log-likelihood ratio.
	Statistic float64 `json:"statistic"`
	Threshold float64 `json:"threshold"`
	// Level is the false-alarm probability that CUSUM was calibrated to
	// over the horizon.
	Level float64 `json:"level"`
}

// Phases of a stream.
const (
	PhaseWarmup = "warmup" // estimating its baseline
	PhaseArmed  = "armed"  // monitoring
	PhaseBlind  = "blind"  // its baseline misses too often to monitor (> 90%)
)

type stream struct {
	Name  string  `json:"name"`
	Phase string  `json:"phase"`
	Level float64 `json:"level"` // its share of the budget
	// Warm-up counters and limits (zero limits: known baseline).
	WarmLabels    int `json:"warmup_labels"`
	WarmMisses    int `json:"warmup_misses"`
	WarmMaxMisses int `json:"warmup_max_misses"`
	WarmMaxLabels int `json:"warmup_max_labels"`
	// Calibration, set when armed.
	Estimate float64             `json:"estimated_miss_rate,omitempty"`
	RefMiss  float64             `json:"reference_miss_rate,omitempty"`
	RelSD    float64             `json:"relative_sd,omitempty"`
	CusumLvl float64             `json:"cusum_level,omitempty"`
	Cusums   [nCusum]cusumParams `json:"cusums"`
	S        [nCusum]int32       `json:"s"`
	Labels   int64               `json:"labels"`
}

// Detector watches the live model's correctness (or, for mae/rmse, "the
// error stayed within the holdout's 90th percentile") on every stream and
// raises at most one Alarm until it is re-armed. It is not safe for
// concurrent use.
type Detector struct {
	cfg     Config
	streams []*stream
	byClass map[string]*stream
	alarm   *Alarm
}

// New builds a detector, calibrating at once when the baseline is known
// (otherwise each stream calibrates when its warm-up ends).
func New(cfg Config) (*Detector, error) {
	if !(cfg.TargetFalseAlarm > 0 && cfg.TargetFalseAlarm < 1) {
		return nil, fmt.Errorf("detect: target_false_alarm %v out of range (want above 0 and below 1)", cfg.TargetFalseAlarm)
	}
	if cfg.Horizon == 0 {
		cfg.Horizon = DefaultHorizon
	}
	if cfg.Horizon < 1 {
		return nil, fmt.Errorf("detect: horizon %d labels out of range", cfg.Horizon)
	}
	if cfg.Baseline != 0 && !(cfg.Baseline > 0 && cfg.Baseline < 1) {
		return nil, fmt.Errorf("detect: baseline %v out of range (want a correct rate above 0 and below 1, or 0 to estimate it)", cfg.Baseline)
	}
	cfg.Classes = slices.Clone(cfg.Classes)
	seen := map[string]bool{}
	for _, c := range cfg.Classes {
		if seen[c] {
			return nil, fmt.Errorf("detect: class %q listed twice", c)
		}
		seen[c] = true
	}
	d := &Detector{cfg: cfg}
	budget := DetectorShare * cfg.TargetFalseAlarm
	overall := budget
	if len(cfg.Classes) > 0 {
		overall = budget / 2
	}
	st := &stream{Name: "overall", Level: overall}
	if cfg.Baseline != 0 {
		if err := st.arm(1-cfg.Baseline, 0, overall, cfg.Horizon); err != nil {
			return nil, err
		}
	} else {
		st.Phase, st.WarmMaxMisses, st.WarmMaxLabels = PhaseWarmup, WarmupMisses, WarmupMaxLabels
	}
	d.streams = append(d.streams, st)
	for _, c := range cfg.Classes {
		d.streams = append(d.streams, &stream{Name: "class:" + c, Level: budget / 2 / float64(len(cfg.Classes)),
			Phase: PhaseWarmup, WarmMaxMisses: ClassWarmupMisses, WarmMaxLabels: ClassWarmupMaxLabels})
	}
	d.index()
	return d, nil
}

func (d *Detector) index() {
	d.byClass = make(map[string]*stream, len(d.cfg.Classes))
	for i, c := range d.cfg.Classes {
		d.byClass[c] = d.streams[i+1]
	}
}

// refMissRate puts a miss rate on the reference grid: log-odds in steps of
// 0.005, rounded up (a higher reference only lowers the false-alarm rate),
// floored at 0.001 (a rarer miss rate is monitored as if it were 0.001,
// again only safer). The grid makes calibrations cacheable.
func refMissRate(q float64) float64 {
	q = math.Max(q, minRefMiss)
	const step = 0.02
	k := math.Ceil(math.Log(q/(1-q))/step - 1e-9)
	return 1 / (1 + math.Exp(-k*step))
}

// arm calibrates the stream's CUSUMs at reference miss rate refMiss+ (on
// the grid) for false-alarm probability level over the horizon, split
// evenly between the CUSUMs (a union bound: the stream alarms when any
// does).
// arm calibrates the stream's CUSUMs for a false-alarm probability level
// over the horizon, split evenly between them (a union bound: the stream
// alarms when any does). With a known baseline (relSD 0) each CUSUM is
// referenced to and calibrated at miss rate q (on the grid). With an
// estimated one, of relative standard error relSD, see inflate.
func (s *stream) arm(q, relSD, level float64, horizon int) error {
	s.Estimate, s.RelSD, s.Labels, s.S = q, relSD, 0, [nCusum]int32{}
	s.RefMiss = refMissRate(q)
	if s.RefMiss > maxRefMiss {
		s.Phase = PhaseBlind
		return nil
	}
	s.CusumLvl = level / nCusum
	for i, r := range Ratios {
		p, err := calibrate(s.RefMiss, r, s.CusumLvl, horizon)
		if err == nil && relSD > 0 {
			p, err = inflate(p, q, relSD, r, s.CusumLvl, horizon)
		}
		if err != nil {
			return fmt.Errorf("detect: stream %s: %w", s.Name, err)
		}
		s.Cusums[i] = p
	}
	s.Phase = PhaseArmed
	return nil
}

// inflate recalibrates a CUSUM for a baseline q estimated with relative
// standard error relSD, so that the false-alarm probability of the whole
// procedure (estimate, then monitor) stays at alpha. The true rate is
// q*exp(relSD*Z) for a standard normal Z (the estimate's error, seen from
// the estimate); near the calibration the log false-alarm probability is
// about linear in Z with slope beta (measured on the chain: the change over
// one standard error above), so calibrating at q*exp(k*relSD) gives an
// average of alpha*exp(beta^2/2 - beta*k): k = beta/2 keeps it at alpha.
// The slope is measured at the first calibration (k=1) and once more at
// the result; the secant over one standard error upwards is steeper than
// the tangent for a convex log false-alarm curve, which errs on the safe
// side. Each reference is on the grid (rounded up).
func inflate(p cusumParams, q, relSD, r, alpha float64, horizon int) (cusumParams, error) {
	// On grids (both rounded up, the safe side) so the result is cached.
	q, relSD = refMissRate(q), roundSD(relSD)
	key := inflateKey{q, relSD, r, alpha, horizon}
	calMu.Lock()
	got, ok := inflateCache[key]
	calMu.Unlock()
	if ok {
		return got, nil
	}
	k := 1.0
	for range 2 {
		var err error
		p, err = calibrate(refMissRate(math.Min(q*math.Exp(k*relSD), 0.999)), r, alpha, horizon)
		if err != nil {
			return p, err
		}
		at := horizonFalseAlarm(int(p.Up), int(p.Down), int(p.H), p.Ref, horizon)
		up := horizonFalseAlarm(int(p.Up), int(p.Down), int(p.H), math.Min(p.Ref*math.Exp(relSD), 0.999), horizon)
		k = math.Max(0, math.Log(up/at)/2)
	}
	p, err := calibrate(refMissRate(math.Min(q*math.Exp(k*relSD), 0.999)), r, alpha, horizon)
	if err == nil {
		calMu.Lock()
		inflateCache[key] = p
		calMu.Unlock()
	}
	return p, err
}

type inflateKey struct {
	q, relSD, r, alpha float64
	n                  int
}

var inflateCache = map[inflateKey]cusumParams{}

// roundSD puts a relative standard error on a grid of 5% steps, rounded
// up (a wider spread only raises the thresholds).
func roundSD(sd float64) float64 {
	return math.Pow(1.05, math.Ceil(math.Log(sd)/math.Log(1.05)-1e-9))
}

// observe feeds one label to the stream; it returns the index of the CUSUM
// that crossed, or -1.
func (s *stream) observe(miss bool, horizon int) (int, error) {
	switch s.Phase {
	case PhaseArmed:
		s.Labels++
		fired := -1
		if miss {
			for i := range s.S {
				s.S[i] += s.Cusums[i].Up
				if s.S[i] >= s.Cusums[i].H && fired < 0 {
					fired = i
				}
			}
		} else {
			for i := range s.S {
				s.S[i] = max(0, s.S[i]-s.Cusums[i].Down)
			}
		}
		return fired, nil
	case PhaseWarmup:
		s.WarmLabels++
		if miss {
			s.WarmMisses++
		}
		atTarget := s.WarmMisses >= s.WarmMaxMisses
		if atTarget || s.WarmLabels >= s.WarmMaxLabels {
			// Jeffreys' estimate (e+1/2)/(n+1): never 0, so a warm-up
			// without misses still gives a reference and a spread.
			n := float64(s.WarmLabels)
			est := (float64(s.WarmMisses) + 0.5) / (n + 1)
			return -1, s.arm(est, math.Sqrt((1-est)/(est*n)), s.Level, horizon)
		}
	}
	return -1, nil
}

// Observe feeds one label of the live model: whether it was right, and the
// row's true class ("" when there are no class streams). It returns the
// alarm when this label raised one. After an alarm the detector stays
// latched (no further alarms; warm-ups continue) until Rearm or Rebaseline.
// An error is a calibration failure, which cannot happen with a valid
// Config; the label has been counted.
func (d *Detector) Observe(correct bool, class string) (*Alarm, error) {
	if d.alarm != nil {
		// latched: only streams still estimating their baseline learn
		var err error
		for _, s := range d.streams {
			if s.Phase == PhaseWarmup && (s == d.streams[0] || d.byClass[class] == s) {
				_, err = s.observe(!correct, d.cfg.Horizon)
			}
		}
		return nil, err
	}
	a, err := d.feed(d.streams[0], !correct)
	if a != nil || err != nil || class == "" {
		return a, err
	}
	if s := d.byClass[class]; s != nil {
		return d.feed(s, !correct)
	}
	return nil, nil
}

func (d *Detector) feed(s *stream, miss bool) (*Alarm, error) {
	i, err := s.observe(miss, d.cfg.Horizon)
	if i < 0 || err != nil {
		return nil, err
	}
	c := s.Cusums[i]
	o1 := c.Ratio * c.Ref / (1 - c.Ref)
	d.alarm = &Alarm{
		Stream: s.Name, Label: s.Labels, Baseline: 1 - c.Ref, TunedTo: 1 - o1/(1+o1), Ratio: c.Ratio,
		Statistic: float64(s.S[i]) * c.Nats, Threshold: float64(c.H) * c.Nats, Level: s.CusumLvl,
	}
	a := *d.alarm
	return &a, nil
}

// Alarmed returns the latched alarm, nil when armed.
func (d *Detector) Alarmed() *Alarm {
	if d.alarm == nil {
		return nil
	}
	a := *d.alarm
	return &a
}

// Rearm clears a latched alarm and restarts every armed stream's
// statistics from 0, keeping their baselines: the caller's move after a
// decision that left the live model and the world as they were (an alarm
// the decision found no evidence for). Hysteresis is this: nothing alarms
// between an alarm and the caller's Rearm or Rebaseline.
func (d *Detector) Rearm() {
	d.alarm = nil
	for _, s := range d.streams {
		if s.Phase == PhaseArmed {
			s.S, s.Labels = [nCusum]int32{}, 0
		}
	}
}

// Rebaseline clears a latched alarm and starts every stream's warm-up
// again: the caller's move after concept drift (the live model keeps
// serving in a changed world, so its old baseline would only alarm again).
// A known Config.Baseline is forgotten: it described the old world.
func (d *Detector) Rebaseline() {
	d.alarm = nil
	for i, s := range d.streams {
		mm, ml := WarmupMisses, WarmupMaxLabels
		if i > 0 {
			mm, ml = ClassWarmupMisses, ClassWarmupMaxLabels
		}
		*s = stream{Name: s.Name, Level: s.Level, Phase: PhaseWarmup, WarmMaxMisses: mm, WarmMaxLabels: ml}
	}
}

// Armed reports whether the overall stream is monitoring (its warm-up, if
// any, is over). Cheap: for per-label callers.
func (d *Detector) Armed() bool { return d.streams[0].Phase == PhaseArmed }

// StreamStatus is one stream as `kiln status` shows it.
type StreamStatus struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	// WarmupLabels and WarmupMisses so far; during the warm-up it ends at
	// WarmupMaxMisses misses or WarmupMaxLabels labels.
	WarmupLabels    int `json:"warmup_labels"`
	WarmupMisses    int `json:"warmup_misses"`
	WarmupMaxMisses int `json:"warmup_max_misses,omitempty"`
	WarmupMaxLabels int `json:"warmup_max_labels,omitempty"`
	// Estimate is the warm-up's correct rate and Baseline the (lower,
	// conservative) rate the CUSUMs are referenced to; 0 until armed.
	Estimate float64 `json:"estimate,omitempty"`
	Baseline float64 `json:"baseline,omitempty"`
	Labels   int64   `json:"labels"`
	// Statistic is the largest of the CUSUMs' fraction of their threshold
	// (0 to 1).
	Statistic float64 `json:"statistic"`
}

// Status reports every stream.
func (d *Detector) Status() []StreamStatus {
	out := make([]StreamStatus, 0, len(d.streams))
	for _, s := range d.streams {
		st := StreamStatus{Name: s.Name, Phase: s.Phase, WarmupLabels: s.WarmLabels, WarmupMisses: s.WarmMisses,
			WarmupMaxMisses: s.WarmMaxMisses, WarmupMaxLabels: s.WarmMaxLabels, Labels: s.Labels}
		if s.Phase != PhaseWarmup {
			st.Estimate, st.Baseline = 1-s.Estimate, 1-s.RefMiss
		}
		if s.Phase == PhaseArmed {
			for i, c := range s.Cusums {
				st.Statistic = math.Max(st.Statistic, float64(s.S[i])/float64(c.H))
			}
		}
		out = append(out, st)
	}
	return out
}

// Config returns the configuration the detector was built with (after
// defaults), so a caller can tell whether a reloaded spec changed it.
func (d *Detector) Config() Config {
	c := d.cfg
	c.Classes = slices.Clone(c.Classes)
	return c
}

// stateVersion is the version of the persisted state's layout.
const stateVersion = 1

type detectorState struct {
	Version int       `json:"version"`
	Config  Config    `json:"config"`
	Streams []*stream `json:"streams"`
	Alarm   *Alarm    `json:"alarm,omitempty"`
}

// MarshalJSON is the detector's whole state: configuration, calibration
// (thresholds and integer steps, so a restart never recalibrates) and
// statistics.
func (d *Detector) MarshalJSON() ([]byte, error) {
	return json.Marshal(detectorState{Version: stateVersion, Config: d.cfg, Streams: d.streams, Alarm: d.alarm})
}

// Restore rebuilds a detector from MarshalJSON's output; it resumes
// exactly: the same labels afterwards give the same alarms.
func Restore(b []byte) (*Detector, error) {
	var st detectorState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("detect: restore detector: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("detect: restore detector: state version %d, want %d", st.Version, stateVersion)
	}
	if len(st.Streams) != 1+len(st.Config.Classes) {
		return nil, fmt.Errorf("detect: restore detector: %d streams for %d classes", len(st.Streams), len(st.Config.Classes))
	}
	for i, s := range st.Streams {
		if err := s.valid(); err != nil {
			return nil, fmt.Errorf("detect: restore detector: streams[%d] (%s): %w", i, s.Name, err)
		}
	}
	d := &Detector{cfg: st.Config, streams: st.Streams, alarm: st.Alarm}
	d.index()
	return d, nil
}

func (s *stream) valid() error {
	switch s.Phase {
	case PhaseWarmup:
		if s.WarmMaxMisses < 1 || s.WarmMaxLabels < 1 {
			return errors.New("warm-up limits missing")
		}
	case PhaseBlind:
	case PhaseArmed:
		for i, c := range s.Cusums {
			if c.Up < 1 || c.Down < 1 || c.H < 1 || s.S[i] < 0 || s.S[i] >= c.H+c.Up {
				return fmt.Errorf("cusums[%d]: up %d, down %d, h %d, s %d out of range", i, c.Up, c.Down, c.H, s.S[i])
			}
		}
	default:
		return fmt.Errorf("phase %q unknown", s.Phase)
	}
	return nil
}
