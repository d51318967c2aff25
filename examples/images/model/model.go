// Package model is the example image model shared by kiln's example image
// trainer and server: every image is decoded (PNG or JPEG, standard library
// only), turned to grayscale, box-resized to Size x Size and standardized
// (zero mean, unit deviation per image, so lighting shifts do not move it);
// a class is the centroid of its training images and a prediction is the
// nearest centroid. It is small on purpose: the example exercises the
// container contract for images with real training, not accuracy records.
package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"slices"
)

// Kind names this model format in model.json.
const Kind = "kiln-example/nearest-centroid"

// Limits on one image, so that a small request cannot make the server
// allocate gigabytes (a PNG bomb) and Size stays a thumbnail.
const (
	MaxPixels = 4096 * 4096
	MaxSize   = 64
)

// Model is model.json.
type Model struct {
	Kind      string      `json:"kind"`
	Size      int         `json:"size"`      // images are resized to Size x Size
	Classes   []string    `json:"classes"`   // sorted
	Centroids [][]float64 `json:"centroids"` // [class][Size*Size], on standardized pixels
	Counts    []int       `json:"counts"`    // training images per class
}

// Sample is one labelled training image, already turned into features.
type Sample struct {
	Label string
	X     []float64
}

// Decode reads one PNG or JPEG, chosen by its first bytes. The error is one
// line naming the format: "not a decodable png: <why>".
func Decode(data []byte) (image.Image, error) {
	var kind string
	var decode func([]byte) (image.Image, error)
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		kind = "png"
		decode = func(b []byte) (image.Image, error) { return png.Decode(bytes.NewReader(b)) }
	case bytes.HasPrefix(data, []byte{0xff, 0xd8}):
		kind = "jpeg"
		decode = func(b []byte) (image.Image, error) { return jpeg.Decode(bytes.NewReader(b)) }
	case len(data) == 0:
		return nil, errors.New("empty: want a PNG or JPEG image")
	default:
		head := data[:min(len(data), 8)]
		return nil, fmt.Errorf("not a PNG or JPEG image (starts with %q)", head)
	}
	var cfg image.Config
	var err error
	if kind == "png" {
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	} else {
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("not a decodable %s: %v", kind, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxPixels {
		return nil, fmt.Errorf("%s of %dx%d pixels: want at least 1x1 and at most %d pixels", kind, cfg.Width, cfg.Height, MaxPixels)
	}
	img, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("not a decodable %s: %v", kind, err)
	}
	return img, nil
}

// Features is img as the model sees it: grayscale, box-resized to size x
// size, then standardized. A flat image standardizes to all zeros.
func Features(img image.Image, size int) []float64 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	at := grayAt(img)
	out := make([]float64, size*size)
	if w >= size && h >= size {
		// Downscaling: every source pixel falls in exactly one cell; add it
		// there in one row-major pass, with no copy of the picture.
		cellX, cellY := cells(w, size), cells(h, size)
		for y := range h {
			row := out[cellY[y]*size:]
			for x := range w {
				row[cellX[x]] += at(b.Min.X+x, b.Min.Y+y)
			}
		}
		for oy := range size {
			y0, y1 := span(oy, size, h)
			for ox := range size {
				x0, x1 := span(ox, size, w)
				out[oy*size+ox] /= float64((y1 - y0) * (x1 - x0))
			}
		}
	} else {
		// Upscaling (a side under size pixels): cells share pixels.
		for oy := range size {
			y0, y1 := span(oy, size, h)
			for ox := range size {
				x0, x1 := span(ox, size, w)
				var sum float64
				for y := y0; y < y1; y++ {
					for x := x0; x < x1; x++ {
						sum += at(b.Min.X+x, b.Min.Y+y)
					}
				}
				out[oy*size+ox] = sum / float64((y1-y0)*(x1-x0))
			}
		}
	}
	standardize(out)
	return out
}

// grayAt is img's luma (ITU-R 601, 0-255) at a pixel. The usual decoded
// types are read from their concrete colour without img.At's interface
// allocation; the values are the same as through At.
func grayAt(img image.Image) func(x, y int) float64 {
	luma := func(r, g, b uint32) float64 {
		return (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b)) / 257
	}
	switch m := img.(type) {
	case *image.Gray:
		return func(x, y int) float64 { r, g, b, _ := m.GrayAt(x, y).RGBA(); return luma(r, g, b) }
	case *image.RGBA:
		return func(x, y int) float64 { r, g, b, _ := m.RGBAAt(x, y).RGBA(); return luma(r, g, b) }
	case *image.NRGBA:
		return func(x, y int) float64 { r, g, b, _ := m.NRGBAAt(x, y).RGBA(); return luma(r, g, b) }
	case *image.YCbCr:
		return func(x, y int) float64 { r, g, b, _ := m.YCbCrAt(x, y).RGBA(); return luma(r, g, b) }
	}
	return func(x, y int) float64 { r, g, b, _ := img.At(x, y).RGBA(); return luma(r, g, b) }
}

// cells maps each of src source positions to its output cell of n (src >= n).
func cells(src, n int) []int {
	out := make([]int, src)
	for i := range n {
		lo, hi := span(i, n, src)
		for j := lo; j < hi; j++ {
			out[j] = i
		}
	}
	return out
}

// span is the source range [lo, hi) that output cell i of n covers in a
// source of length src; never empty, so upscaling repeats pixels.
func span(i, n, src int) (lo, hi int) {
	lo, hi = i*src/n, (i+1)*src/n
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

func standardize(v []float64) {
	var mean float64
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / float64(len(v)))
	for i := range v {
		if sd < 1e-9 {
			v[i] = 0
		} else {
			v[i] = (v[i] - mean) / sd
		}
	}
}

// Train averages each class's samples. Samples must hold size*size features.
func Train(samples []Sample, size int) (*Model, error) {
	if size < 1 || size > MaxSize {
		return nil, fmt.Errorf("size %d: want 1 to %d", size, MaxSize)
	}
	if len(samples) == 0 {
		return nil, errors.New("no training images")
	}
	idx := map[string]int{}
	var classes []string
	for _, s := range samples {
		if _, ok := idx[s.Label]; !ok {
			idx[s.Label] = 0
			classes = append(classes, s.Label)
		}
	}
	slices.Sort(classes)
	for i, c := range classes {
		idx[c] = i
	}
	m := &Model{Kind: Kind, Size: size, Classes: classes,
		Centroids: make([][]float64, len(classes)), Counts: make([]int, len(classes))}
	for i := range m.Centroids {
		m.Centroids[i] = make([]float64, size*size)
	}
	for _, s := range samples {
		if len(s.X) != size*size {
			return nil, fmt.Errorf("sample of class %s has %d features, want %d", s.Label, len(s.X), size*size)
		}
		c := idx[s.Label]
		m.Counts[c]++
		for j, v := range s.X {
			m.Centroids[c][j] += v
		}
	}
	for c := range m.Centroids {
		for j := range m.Centroids[c] {
			m.Centroids[c][j] /= float64(m.Counts[c])
		}
	}
	return m, nil
}

// PredictFeatures is the nearest centroid's class; ties go to the first
// class in sorted order.
func (m *Model) PredictFeatures(x []float64) string {
	best, bestD := 0, math.Inf(1)
	for c, cen := range m.Centroids {
		var d float64
		for j, v := range cen {
			d += (x[j] - v) * (x[j] - v)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return m.Classes[best]
}

// Predict decodes one image and classifies it.
func (m *Model) Predict(data []byte) (string, error) {
	img, err := Decode(data)
	if err != nil {
		return "", err
	}
	return m.PredictFeatures(Features(img, m.Size)), nil
}

// Accuracy is the share of samples whose label the model predicts; NaN
// when there are none.
func (m *Model) Accuracy(samples []Sample) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	ok := 0
	for _, s := range samples {
		if m.PredictFeatures(s.X) == s.Label {
			ok++
		}
	}
	return float64(ok) / float64(len(samples))
}

// Check says what is wrong with a model read from a file, if anything.
func (m *Model) Check() error {
	switch {
	case m.Kind != Kind:
		return fmt.Errorf("kind %q: want %q", m.Kind, Kind)
	case m.Size < 1 || m.Size > MaxSize:
		return fmt.Errorf("size %d: want 1 to %d", m.Size, MaxSize)
	case len(m.Classes) == 0:
		return errors.New("classes: none")
	case len(m.Centroids) != len(m.Classes):
		return fmt.Errorf("centroids: %d for %d classes", len(m.Centroids), len(m.Classes))
	}
	for i, c := range m.Centroids {
		if len(c) != m.Size*m.Size {
			return fmt.Errorf("centroids[%d]: %d values, want size*size = %d", i, len(c), m.Size*m.Size)
		}
	}
	return nil
}

// Load reads and checks model.json.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}
