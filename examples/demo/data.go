package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
)

// cancer is the example data (UCI's breast cancer set, 569 rows, label
// last) as feature rows and labels; the demo's batches and feedback are all
// cut from it.
type cancer struct {
	header []string // features, then the label column
	rows   [][]string
	labels []string
}

func loadCancer(path string) (cancer, error) {
	f, err := os.Open(path)
	if err != nil {
		return cancer{}, fmt.Errorf("the example data: %w (run from the repository root, or pass -data)", err)
	}
	defer func() { _ = f.Close() }() // read only
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return cancer{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) < 570 || recs[0][len(recs[0])-1] != "diagnosis" {
		return cancer{}, fmt.Errorf("%s: want 569 rows with diagnosis last, got %d lines", path, len(recs))
	}
	c := cancer{header: recs[0]}
	for _, r := range recs[1:] {
		c.rows = append(c.rows, r[:len(r)-1])
		c.labels = append(c.labels, r[len(r)-1])
	}
	return c, nil
}

// shape says how a row of the data is written into a batch: its values
// multiplied by scale (1: as measured), told apart from every other copy by
// salt (a relative nudge of the first value far below its precision, so the
// monitor does not take a re-measured row for one a model trained on), and
// with its label swapped when flip is set.
type shape struct {
	scale float64
	salt  int
	flip  bool
}

// batch writes rows idx as CSV with the header.
func (c cancer) batch(idx []int, s shape) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(c.header) // into memory: cannot fail
	for k, i := range idx {
		rec := make([]string, 0, len(c.header))
		for j, v := range c.rows[i] {
			x, _ := strconv.ParseFloat(v, 64) // the file parsed as numbers for the model too
			x *= s.scale
			if j == 0 && s.salt != 0 {
				x *= 1 + 1e-10*float64(s.salt*100_000+k+1)
			}
			rec = append(rec, strconv.FormatFloat(x, 'g', -1, 64))
		}
		label := c.labels[i]
		if s.flip {
			label = swapped(label)
		}
		_ = w.Write(append(rec, label))
	}
	w.Flush()
	return b.Bytes()
}

func swapped(label string) string {
	if label == "benign" {
		return "malignant"
	}
	return "benign"
}

// span is the row indexes lo..hi-1.
func span(lo, hi int) []int {
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

// cycle is n row indexes taken in turn from idx, starting at the k-th.
func cycle(idx []int, k, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = idx[(k+i)%len(idx)]
	}
	return out
}
