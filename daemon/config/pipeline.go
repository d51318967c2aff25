package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"go.yaml.in/yaml/v3"
)

// NameRE is what a pipeline name may be. Names become folder names (drop/<p>/), socket names
// (serve/<p>.sock) and ID prefixes (p/m7), hence the short, plain alphabet.
var NameRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// MaxNameLen is the longest pipeline name; Paths.Check sizes socket paths for it.
const MaxNameLen = 32

// Pipeline is one pipeline spec, /etc/kiln/pipelines/<name>.yaml. The comment on each field is
// the documentation of its key; the default is what a spec gets when the key is left out.
type Pipeline struct {
	// name: the pipeline's name; default the file's base name, and when set it must equal it.
	Name      string    `yaml:"name" json:"name"`
	Data      Data      `yaml:"data" json:"data"`
	Window    Window    `yaml:"window" json:"window"`
	Train     Train     `yaml:"train" json:"train"`
	Serve     Serve     `yaml:"serve" json:"serve"`
	Evaluate  Evaluate  `yaml:"evaluate" json:"evaluate"`
	Triggers  Triggers  `yaml:"triggers" json:"triggers"`
	Monitor   Monitor   `yaml:"monitor" json:"monitor"`
	Retention Retention `yaml:"retention" json:"retention"`

	// File is where the spec was read from and Digest the sha256 of its bytes ("sha256:<hex>"),
	// so a reload can tell which pipelines changed and lineage can record the spec a run used.
	File   string `yaml:"-" json:"file,omitempty"`
	Digest string `yaml:"-" json:"digest,omitempty"`
}

// Window is which dataset versions a run trains on; exactly one key is set.
type Window struct {
	// versions: all (the default window).
	Versions string `yaml:"versions,omitempty" json:"versions,omitempty"`
	// last: the newest N versions.
	Last int `yaml:"last,omitempty" json:"last,omitempty"`
	// days: the versions accepted in the last D days.
	Days int `yaml:"days,omitempty" json:"days,omitempty"`
}

// Train is how a training run is started (SageMaker bring-your-own-container contract).
type Train struct {
	// image: the trainer, as a reference (kiln.local/trainer:1) or a digest (sha256:...). Required.
	Image string `yaml:"image" json:"image"`
	// hyperparameters: written to hyperparameters.json; every value becomes a string, as in
	// SageMaker, exactly as written in the spec (1e-3 stays "1e-3").
	Hyperparameters map[string]string `yaml:"hyperparameters,omitempty" json:"hyperparameters,omitempty"`
	// channels: the folders under /opt/ml/input/data/: train (the train parts of the window) and
	// optionally validation (the holdout parts, for early stopping; kilnd still scores every
	// candidate on the holdout itself). Default [train].
	Channels []string `yaml:"channels" json:"channels"`
	// resources: container limits.
	Resources Resources `yaml:"resources" json:"resources"`
	// gpus: 0, N, or {count: N, min_free: 8Gi}. Default 0.
	GPUs GPUs `yaml:"gpus" json:"gpus"`
	// timeout: a run still going after this is stopped and failed. Default 1h.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// retries: how often a failed run is retried. Default 0.
	Retries int `yaml:"retries" json:"retries"`
	// max_model_size: a run whose /opt/ml/model holds more fails instead of
	// filling the blob store; 0 is no cap. Default 0.
	MaxModelSize Bytes `yaml:"max_model_size,omitempty" json:"max_model_size,omitempty"`
}

// Resources are a container's limits.
type Resources struct {
	// memory: the memory limit; 0 is no limit. Default 0.
	Memory Bytes `yaml:"memory,omitempty" json:"memory,omitempty"`
	// cpus: CPU quota in CPUs (1.5); 0 is no limit. Default 0.
	CPUs float64 `yaml:"cpus,omitempty" json:"cpus,omitempty"`
	// pids: the process limit; hardening keeps one by default. Default 1024.
	PIDs int `yaml:"pids" json:"pids"`
}

// GPUs is how many GPUs a container needs and how much free memory each must have.
type GPUs struct {
	Count   int   `yaml:"count" json:"count"`
	MinFree Bytes `yaml:"min_free,omitempty" json:"min_free,omitempty"`
}

func (g *GPUs) unmarshalShorthand(n *yaml.Node) error {
	var i int
	if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		return fmt.Errorf("want a GPU count or {count: N, min_free: SIZE}, got %s", describe(n))
	}
	*g = GPUs{Count: i}
	return nil
}

// UnmarshalYAML serves callers that use yaml.Unmarshal directly; the spec loader decodes the
// mapping form itself for its field errors.
func (g *GPUs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return g.unmarshalShorthand(n)
	}
	type plain GPUs
	return n.Decode((*plain)(g))
}

// MarshalYAML writes the short form when it says everything.
func (g GPUs) MarshalYAML() (any, error) {
	if g.MinFree == 0 {
		return g.Count, nil
	}
	type plain GPUs
	return plain(g), nil
}

// UnmarshalJSON accepts both forms, like the YAML.
func (g *GPUs) UnmarshalJSON(b []byte) error {
	var i int
	if err := json.Unmarshal(b, &i); err == nil {
		*g = GPUs{Count: i}
		return nil
	}
	type plain GPUs
	return json.Unmarshal(b, (*plain)(g))
}

// Serve is the model server behind the pipeline's endpoint, /run/kiln/serve/<name>.sock.
type Serve struct {
	// image: the server, a reference or a digest. Required.
	Image string `yaml:"image" json:"image"`
	// protocol: sagemaker (GET /ping, POST /invocations, text/csv) or v2 (Open Inference
	// Protocol). Default sagemaker.
	Protocol string `yaml:"protocol" json:"protocol"`
	// listen: an optional TCP host:port for the endpoint besides its unix socket.
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
	// resources: container limits, as for train.
	Resources Resources `yaml:"resources" json:"resources"`
	// gpus: as for train. Default 0.
	GPUs GPUs `yaml:"gpus" json:"gpus"`
	// standby: keep_warm keeps the previous model running for an instant rollback; stop stops it
	// (a rollback then waits for it to start). Default keep_warm.
	Standby string `yaml:"standby" json:"standby"`
	// port: 0 (the default) has the server listen on the unix socket $KILN_SOCKET; a TCP port
	// (SageMaker images use 8080) has it listen there inside its own empty network namespace,
	// where kilnd dials it.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
}

// Evaluate is how kilnd scores a candidate and decides whether it may go live.
type Evaluate struct {
	// holdout: {fraction, seed}, the share of each version held out by a stable hash, or
	// {file}, a fixed holdout file (absolute path). Default {fraction: 0.2, seed: 1}.
	Holdout Holdout `yaml:"holdout" json:"holdout"`
	// metric: accuracy | macro_f1 (classification) | mae | rmse (regression). Default accuracy.
	Metric string `yaml:"metric" json:"metric"`
	// gate: the promotion rule.
	Gate Gate `yaml:"gate" json:"gate"`
}

// Holdout is either a fraction of every version or one fixed file.
type Holdout struct {
	Fraction float64 `yaml:"fraction,omitempty" json:"fraction,omitempty"`
	Seed     int64   `yaml:"seed,omitempty" json:"seed,omitempty"`
	File     string  `yaml:"file,omitempty" json:"file,omitempty"`
}

// Gate decides promotion.
type Gate struct {
	// min: the lowest metric a candidate may have (accuracy, macro_f1). Default none.
	Min *float64 `yaml:"min,omitempty" json:"min,omitempty"`
	// max: the highest error a candidate may have (mae, rmse). Default none.
	Max *float64 `yaml:"max,omitempty" json:"max,omitempty"`
	// min_improvement: how much better than the live model on the same holdout a candidate
	// must be (higher accuracy, or lower error). Default 0: at least as good.
	MinImprovement float64 `yaml:"min_improvement" json:"min_improvement"`
}

// Triggers are what starts a training run.
type Triggers struct {
	// new_data: {debounce, min_rows}: train once new versions with at least min_rows rows in
	// all have arrived and no more came for debounce. Default {debounce: 10s, min_rows: 1}.
	NewData NewData `yaml:"new_data" json:"new_data"`
	// schedule: a 5-field cron line (minute hour day-of-month month day-of-week, local time) or
	// @hourly, @daily, @weekly, @monthly, @yearly. Default none.
	Schedule string `yaml:"schedule,omitempty" json:"schedule,omitempty"`
	// degradation: what to do when live and standby both degrade: retrain (and alert) or alert
	// only. Default retrain.
	Degradation string `yaml:"degradation" json:"degradation"`
}

// NewData triggers a run on new dataset versions.
type NewData struct {
	Debounce Duration `yaml:"debounce" json:"debounce"`
	MinRows  int      `yaml:"min_rows" json:"min_rows"`
}

// Retention is how much history is kept.
type Retention struct {
	// models: how many models are kept, live and standby included (at least 2); older ones
	// are retired and their files removed, unless a kept model descends from them. Default 10.
	Models int `yaml:"models" json:"models"`
}

// Formats, protocols and the other enumerations of the spec.
const (
	FormatCSV    = "csv"
	FormatJSONL  = "jsonl"
	FormatImages = "images"
	FormatFiles  = "files"

	ProtocolSageMaker = "sagemaker"
	ProtocolV2        = "v2"

	StandbyKeepWarm = "keep_warm"
	StandbyStop     = "stop"

	MetricAccuracy = "accuracy"
	MetricMacroF1  = "macro_f1"
	MetricMAE      = "mae"
	MetricRMSE     = "rmse"

	DegradationRetrain = "retrain"
	DegradationAlert   = "alert"

	ChannelTrain      = "train"
	ChannelValidation = "validation"

	WindowAll = "all"

	LogInputsAll    = "all"
	LogInputsNone   = "none"
	LogInputsSample = "sample"
)

// MinLogSize is the smallest monitor.log.max_size: two of the log's 64 MiB segments, the
// one being written and one closed.
const MinLogSize = 128 * MiB

// defaultPipeline is the value a spec is decoded over; see the package doc for why.
func defaultPipeline() Pipeline {
	return Pipeline{
		Data: Data{
			Format:      FormatCSV,
			Settle:      D(2 * time.Second),
			Validate:    Validation{Rows: RowBounds{Min: 1}},
			MaxFileSize: GiB,
		},
		Train: Train{
			Channels:  []string{ChannelTrain},
			Resources: Resources{PIDs: 1024},
			Timeout:   D(time.Hour),
		},
		Serve: Serve{
			Protocol:  ProtocolSageMaker,
			Resources: Resources{PIDs: 1024},
			Standby:   StandbyKeepWarm,
		},
		Evaluate: Evaluate{Metric: MetricAccuracy},
		Triggers: Triggers{
			NewData:     NewData{Debounce: D(10 * time.Second), MinRows: 1},
			Degradation: DegradationRetrain,
		},
		Monitor:   defaultMonitor(),
		Retention: Retention{Models: 10},
	}
}

// applyExclusiveDefaults defaults the groups whose keys exclude each other, when none of their
// keys is written; pre-filling them would make any explicit choice look like a conflict.
func (p *Pipeline) applyExclusiveDefaults(root *yaml.Node) {
	if !present(root, "window.versions") && !present(root, "window.last") && !present(root, "window.days") {
		p.Window.Versions = WindowAll
	}
	if p.Data.Format == FormatImages && !present(root, "data.validate.rows") {
		// Images are counted by files.max_count and min_per_class; rows has no meaning.
		p.Data.Validate.Rows = RowBounds{}
	}
	if p.Evaluate.Holdout.File == "" {
		if !present(root, "evaluate.holdout.fraction") {
			p.Evaluate.Holdout.Fraction = 0.2
		}
		if !present(root, "evaluate.holdout.seed") {
			p.Evaluate.Holdout.Seed = 1
		}
	}
}

// checker keeps the first problem found; a file's error is one line, and the first problem in
// file order is the one a person fixes first.
// checker collects Validate's problems: every field's, so a person fixes a
// file in one pass; the first per field path, since a later check of a bad
// field only repeats it.
type checker struct{ errs []*FieldError }

func (c *checker) failf(path, format string, args ...any) {
	for _, e := range c.errs {
		if e.Path == path {
			return
		}
	}
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// clip shortens a value quoted back in an error, which must stay one readable line.
func clip(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// result is nil, the one *FieldError, or errors.Join of them in the order found.
func (c *checker) result() error {
	switch len(c.errs) {
	case 0:
		return nil
	case 1:
		return c.errs[0]
	}
	errs := make([]error, len(c.errs))
	for i, e := range c.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (c *checker) oneOf(path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.failf(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func (c *checker) fraction(path string, v float64, openLow bool) {
	if math.IsNaN(v) || v < 0 || v > 1 || (openLow && v == 0) {
		lo := "0"
		if openLow {
			lo = "above 0"
		}
		c.failf(path, "%v is out of range (want %s to 1)", v, lo)
	}
}

func (c *checker) nonNegative(path string, d Duration) {
	if d.Duration < 0 {
		c.failf(path, "must not be negative")
	}
}

// Validate checks a decoded or JSON-built spec and returns every problem, each a *FieldError
// (joined with errors.Join when there are several).
// Each section checks itself, so a later change to one section touches one method.
func (p *Pipeline) Validate() error {
	c := &checker{}
	switch {
	case p.Name == "":
		c.failf("name", "required")
	case !NameRE.MatchString(p.Name):
		c.failf("name", "%q is not a valid pipeline name (want 1 to %d of a-z, 0-9 and -)", p.Name, MaxNameLen)
	}
	p.Data.validate(c, "data")
	p.Window.validate(c, "window")
	p.Train.validate(c, "train")
	p.Serve.validate(c, "serve")
	p.Evaluate.validate(c, "evaluate", p.Data.Format)
	if p.Data.Format == FormatImages && p.Evaluate.Holdout.File != "" {
		c.failf("evaluate.holdout.file", "applies to csv and jsonl; images are held out by fraction (evaluate.holdout.fraction)")
	}
	p.Triggers.validate(c, "triggers")
	p.Monitor.validate(c, "monitor")
	p.Retention.validate(c, "retention")
	return c.result()
}

func (w *Window) validate(c *checker, path string) {
	n := 0
	if w.Versions != "" {
		n++
		c.oneOf(path+".versions", w.Versions, WindowAll)
	}
	if w.Last != 0 {
		n++
		if w.Last < 0 {
			c.failf(path+".last", "must be at least 1")
		}
	}
	if w.Days != 0 {
		n++
		if w.Days < 0 {
			c.failf(path+".days", "must be at least 1")
		}
	}
	if n != 1 {
		c.failf(path, "set exactly one of versions: all, last: N or days: D (N, D at least 1)")
	}
}

func validImage(c *checker, path, image string) {
	if image == "" {
		c.failf(path, "required (an image reference such as kiln.local/trainer:1, or sha256:<digest>)")
		return
	}
	if _, err := reference.ParseAnyReference(image); err != nil {
		c.failf(path, "%q is not an image reference: %v", image, err)
	}
}

func (r *Resources) validate(c *checker, path string) {
	if r.Memory < 0 || (r.Memory > 0 && r.Memory < 6*MiB) {
		c.failf(path+".memory", "%s is too small (want 0 for no limit, or at least 6Mi)", r.Memory)
	}
	if r.CPUs < 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || (r.CPUs > 0 && r.CPUs < 0.01) {
		c.failf(path+".cpus", "%v is out of range (want 0 for no limit, or at least 0.01)", r.CPUs)
	}
	if r.PIDs < 0 {
		c.failf(path+".pids", "must not be negative (0 is no limit)")
	}
}

func (g *GPUs) validate(c *checker, path string) {
	if g.Count < 0 {
		c.failf(path+".count", "must not be negative")
	}
	if g.MinFree < 0 {
		c.failf(path+".min_free", "must not be negative")
	}
	if g.MinFree > 0 && g.Count == 0 {
		c.failf(path+".min_free", "needs count of at least 1")
	}
}

func (t *Train) validate(c *checker, path string) {
	validImage(c, path+".image", t.Image)
	for _, k := range sortedKeys(t.Hyperparameters) {
		if k == "" {
			c.failf(path+".hyperparameters", "empty hyperparameter name")
		}
	}
	if len(t.Channels) == 0 {
		c.failf(path+".channels", "want at least [train]")
	}
	seen := map[string]bool{}
	for i, ch := range t.Channels {
		p := fmt.Sprintf("%s.channels[%d]", path, i)
		c.oneOf(p, ch, ChannelTrain, ChannelValidation)
		if seen[ch] {
			c.failf(p, "%q is listed twice", ch)
		}
		seen[ch] = true
	}
	if len(t.Channels) > 0 && !seen[ChannelTrain] {
		c.failf(path+".channels", "must include train")
	}
	t.Resources.validate(c, path+".resources")
	t.GPUs.validate(c, path+".gpus")
	if t.Timeout.Duration <= 0 {
		c.failf(path+".timeout", "must be above 0")
	}
	if t.Retries < 0 || t.Retries > 10 {
		c.failf(path+".retries", "%d is out of range (want 0 to 10)", t.Retries)
	}
	if t.MaxModelSize < 0 {
		c.failf(path+".max_model_size", "must not be negative")
	}
}

func (s *Serve) validate(c *checker, path string) {
	validImage(c, path+".image", s.Image)
	c.oneOf(path+".protocol", s.Protocol, ProtocolSageMaker, ProtocolV2)
	if s.Listen != "" {
		if err := checkHostPort(s.Listen); err != nil {
			c.failf(path+".listen", "%v", err)
		}
	}
	s.Resources.validate(c, path+".resources")
	s.GPUs.validate(c, path+".gpus")
	c.oneOf(path+".standby", s.Standby, StandbyKeepWarm, StandbyStop)
	if s.Port < 0 || s.Port > 65535 {
		c.failf(path+".port", "%d is not a TCP port (want 1-65535, or 0 for the unix socket)", s.Port)
	}
}

// checkHostPort accepts host:port with a numeric port; an empty host is every address.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (want e.g. 127.0.0.1:8080)", clip(s))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has no valid port (want 1 to 65535)", clip(s))
	}
	return nil
}

func (e *Evaluate) validate(c *checker, path, format string) {
	h, hp := &e.Holdout, path+".holdout"
	if h.File != "" {
		if h.Fraction != 0 {
			c.failf(hp+".fraction", "set fraction or file, not both")
		}
		if !filepath.IsAbs(h.File) {
			c.failf(hp+".file", "%q is not an absolute path", h.File)
		}
	} else if !(h.Fraction > 0 && h.Fraction < 1) {
		c.failf(hp+".fraction", "%v is out of range (want above 0 and below 1, e.g. 0.2)", h.Fraction)
	}
	c.oneOf(path+".metric", e.Metric, MetricAccuracy, MetricMacroF1, MetricMAE, MetricRMSE)
	g, gp := &e.Gate, path+".gate"
	switch e.Metric {
	case MetricAccuracy, MetricMacroF1:
		if g.Min != nil {
			c.fraction(gp+".min", *g.Min, false)
		}
		if g.Max != nil {
			c.failf(gp+".max", "applies to error metrics (mae, rmse); use gate.min for %s", e.Metric)
		}
	case MetricMAE, MetricRMSE:
		if g.Min != nil {
			c.failf(gp+".min", "applies to accuracy and macro_f1; use gate.max for %s (lower is better)", e.Metric)
		}
		if g.Max != nil && !(*g.Max >= 0) {
			c.failf(gp+".max", "must not be negative")
		}
	}
	if !(g.MinImprovement >= 0) {
		c.failf(gp+".min_improvement", "must not be negative")
	}
}

func (t *Triggers) validate(c *checker, path string) {
	c.nonNegative(path+".new_data.debounce", t.NewData.Debounce)
	if t.NewData.MinRows < 1 {
		c.failf(path+".new_data.min_rows", "must be at least 1")
	}
	if t.Schedule != "" {
		if _, err := ParseCron(t.Schedule); err != nil {
			c.failf(path+".schedule", "%v", err)
		}
	}
	c.oneOf(path+".degradation", t.Degradation, DegradationRetrain, DegradationAlert)
}

func (r *Retention) validate(c *checker, path string) {
	if r.Models < 2 {
		c.failf(path+".models", "%d is too few (want at least 2: the live model and its standby)", r.Models)
	}
}
