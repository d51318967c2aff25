// Package model is the example tabular model shared by kiln's example trainer
// and server: multinomial logistic regression (softmax) over standardized
// numeric features, trained by full-batch gradient descent with L2, stored as
// one JSON file. It is small on purpose: the example exists to exercise the
// container contract with real training, not to win benchmarks.
package model

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Kind names this model format in model.json.
const Kind = "kiln-example/logistic-regression"

// Model is model.json.
type Model struct {
	Kind     string      `json:"kind"`
	Label    string      `json:"label"`
	Features []string    `json:"features"` // training order, which /invocations rows follow
	Classes  []string    `json:"classes"`
	Mean     []float64   `json:"mean"`
	Std      []float64   `json:"std"`
	Weights  [][]float64 `json:"weights"` // [class][feature], on standardized features
	Bias     []float64   `json:"bias"`
}

// Options are the trainer's hyperparameters.
type Options struct {
	Epochs       int     // default 300
	LearningRate float64 // default 0.5
	L2           float64 // default 1e-3
}

func (o *Options) defaults() {
	if o.Epochs <= 0 {
		o.Epochs = 300
	}
	if o.LearningRate <= 0 {
		o.LearningRate = 0.5
	}
	if o.L2 < 0 {
		o.L2 = 0
	}
}

// Table is a CSV with a header, split into numeric features and a label.
type Table struct {
	Features []string
	Label    string
	X        [][]float64
	Y        []string
}

// ReadTable reads a CSV with a header row; label names the label column.
// Every other column must be numeric.
func ReadTable(r io.Reader, label string) (*Table, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	li := slices.Index(header, label)
	if li < 0 {
		return nil, fmt.Errorf("label column %q not in header %s", label, strings.Join(header, ","))
	}
	t := &Table{Label: label}
	for i, h := range header {
		if i != li {
			t.Features = append(t.Features, h)
		}
	}
	if err := t.appendRows(cr, header, li); err != nil {
		return nil, err
	}
	return t, nil
}

// Append reads more rows of a CSV with the same header into t.
func (t *Table) Append(r io.Reader) error {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	li := slices.Index(header, t.Label)
	var feats []string
	for i, h := range header {
		if i != li {
			feats = append(feats, h)
		}
	}
	if li < 0 || !slices.Equal(feats, t.Features) {
		return fmt.Errorf("header %s differs from the first file's", strings.Join(header, ","))
	}
	return t.appendRows(cr, header, li)
}

func (t *Table) appendRows(cr *csv.Reader, header []string, li int) error {
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		line, _ := cr.FieldPos(0)
		if err := t.addRecord(header, li, rec, line); err != nil {
			return err
		}
	}
}

// addRecord appends one row whose values follow header, the label at li;
// line numbers the error.
func (t *Table) addRecord(header []string, li int, rec []string, line int) error {
	x := make([]float64, 0, len(header)-1)
	for i, v := range rec {
		if i == li {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("line %d, column %s: %q is not a finite number", line, header[i], v)
		}
		x = append(x, f)
	}
	t.X = append(t.X, x)
	t.Y = append(t.Y, rec[li])
	return nil
}

// Split shuffles rows with seed and cuts off fraction of them for validation.
func (t *Table) Split(fraction float64, seed uint64) (train, valid *Table) {
	idx := make([]int, len(t.X))
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) //nolint:gosec // G404: a seeded, reproducible split is the point; nothing secret
	rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	nv := int(math.Round(fraction * float64(len(idx))))
	train = &Table{Features: t.Features, Label: t.Label}
	valid = &Table{Features: t.Features, Label: t.Label}
	for k, i := range idx {
		dst := train
		if k < nv {
			dst = valid
		}
		dst.X = append(dst.X, t.X[i])
		dst.Y = append(dst.Y, t.Y[i])
	}
	return train, valid
}

// Train fits a model on t.
func Train(t *Table, opt Options) (*Model, error) {
	opt.defaults()
	if len(t.X) == 0 {
		return nil, errors.New("no training rows")
	}
	classes := slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, y := range t.Y {
			if !seen[y] {
				seen[y] = true
				if !yield(y) {
					return
				}
			}
		}
	})
	if len(classes) < 2 {
		return nil, fmt.Errorf("label %q has %d distinct value(s); need at least 2", t.Label, len(classes))
	}
	nf, nc, n := len(t.Features), len(classes), float64(len(t.X))
	m := &Model{Kind: Kind, Label: t.Label, Features: t.Features, Classes: classes,
		Mean: make([]float64, nf), Std: make([]float64, nf), Bias: make([]float64, nc)}
	for _, x := range t.X {
		for j, v := range x {
			m.Mean[j] += v / n
		}
	}
	for _, x := range t.X {
		for j, v := range x {
			d := v - m.Mean[j]
			m.Std[j] += d * d / n
		}
	}
	for j := range m.Std {
		m.Std[j] = math.Sqrt(m.Std[j])
		if m.Std[j] < 1e-12 {
			m.Std[j] = 1
		}
	}
	m.Weights = make([][]float64, nc)
	for c := range m.Weights {
		m.Weights[c] = make([]float64, nf)
	}
	ci := make([]int, len(t.Y))
	for i, y := range t.Y {
		ci[i], _ = slices.BinarySearch(classes, y)
	}
	z := make([][]float64, len(t.X))
	for i, x := range t.X {
		z[i] = m.standardize(x)
	}
	gw := make([][]float64, nc)
	for c := range gw {
		gw[c] = make([]float64, nf)
	}
	gb := make([]float64, nc)
	p := make([]float64, nc)
	for range opt.Epochs {
		for c := range gw {
			clear(gw[c])
		}
		clear(gb)
		for i, x := range z {
			m.probs(x, p)
			for c := range p {
				g := p[c]
				if c == ci[i] {
					g--
				}
				gb[c] += g / n
				for j, v := range x {
					gw[c][j] += g * v / n
				}
			}
		}
		for c := range m.Weights {
			for j := range m.Weights[c] {
				m.Weights[c][j] -= opt.LearningRate * (gw[c][j] + opt.L2*m.Weights[c][j])
			}
			m.Bias[c] -= opt.LearningRate * gb[c]
		}
	}
	return m, nil
}

func (m *Model) standardize(x []float64) []float64 {
	z := make([]float64, len(x))
	for j, v := range x {
		z[j] = (v - m.Mean[j]) / m.Std[j]
	}
	return z
}

// probs writes the softmax of the class scores of standardized x into p.
func (m *Model) probs(z, p []float64) {
	maxScore := math.Inf(-1)
	for c, w := range m.Weights {
		s := m.Bias[c]
		for j, v := range z {
			s += w[j] * v
		}
		p[c] = s
		maxScore = max(maxScore, s)
	}
	var sum float64
	for c := range p {
		p[c] = math.Exp(p[c] - maxScore)
		sum += p[c]
	}
	for c := range p {
		p[c] /= sum
	}
}

// Predict returns the most likely class of one row of features, in training order.
func (m *Model) Predict(x []float64) (string, error) {
	if len(x) != len(m.Features) {
		return "", fmt.Errorf("got %d features, want %d (%s)", len(x), len(m.Features), strings.Join(m.Features, ","))
	}
	p := make([]float64, len(m.Classes))
	m.probs(m.standardize(x), p)
	best := 0
	for c := range p {
		if p[c] > p[best] {
			best = c
		}
	}
	return m.Classes[best], nil
}

// Accuracy is the fraction of t's rows predicted right.
func (m *Model) Accuracy(t *Table) float64 {
	if len(t.X) == 0 {
		return 0
	}
	ok := 0
	for i, x := range t.X {
		if y, err := m.Predict(x); err == nil && y == t.Y[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(t.X))
}

// Load reads model.json.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if m.Kind != Kind || len(m.Classes) == 0 || len(m.Weights) != len(m.Classes) ||
		len(m.Mean) != len(m.Features) || len(m.Std) != len(m.Features) || len(m.Bias) != len(m.Classes) {
		return nil, fmt.Errorf("model %s: not a consistent %s model", path, Kind)
	}
	for _, w := range m.Weights {
		if len(w) != len(m.Features) {
			return nil, fmt.Errorf("model %s: weight row has %d entries for %d features", path, len(w), len(m.Features))
		}
	}
	return &m, nil
}
