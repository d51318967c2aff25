package model

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
)

// The Open Inference Protocol v2 envelopes; for this model the input's Data
// is FP64, row-major and flat (nested arrays are accepted on input too).
type (
	InferRequest  = sagemaker.InferRequest
	InferTensor   = sagemaker.InferTensor
	InferResponse = sagemaker.InferResponse
	OutputTensor  = sagemaker.OutputTensor
)

// NewHandler serves m under both protocols; name is the v2 model name. The
// routes, health checks and v2 envelope are examples/internal/sagemaker's;
// this file holds only how CSV rows and FP64 tensors become labels.
func NewHandler(m *Model, name string) http.Handler {
	return sagemaker.NewHandler(sagemaker.Model{
		Name:        name,
		Input:       sagemaker.TensorMeta{Name: "input", Datatype: "FP64", Shape: []int{-1, len(m.Features)}},
		Invocations: func(w http.ResponseWriter, r *http.Request) { invocations(m, w, r) },
		Infer:       func(in InferTensor) ([]string, error) { return infer(m, in) },
	})
}

func invocations(m *Model, w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/jsonlines") {
		jsonLines(m, w, r)
		return
	}
	if ct != "" && !strings.HasPrefix(ct, "text/csv") {
		http.Error(w, fmt.Sprintf("Content-Type %q: want text/csv or application/jsonlines", ct), http.StatusUnsupportedMediaType)
		return
	}
	predictLines(m, w, r, "row", func(n int, line string) ([]float64, error) {
		rec, err := csv.NewReader(strings.NewReader(strings.TrimRight(line, "\r"))).Read()
		if err != nil {
			return nil, fmt.Errorf("row %d: %v", n, err)
		}
		x := make([]float64, len(rec))
		for i, v := range rec {
			if x[i], err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				return nil, fmt.Errorf("row %d, column %d: %q is not a number", n, i+1, v)
			}
		}
		return x, nil
	})
}

// predictLines answers a body of one row a line, blank lines skipped: parse
// turns line n (counted from 1) into features, or an error that is the
// 400's text. The answer is one predicted label a line (text/csv). what
// names a line in the model's errors: "row" for CSV, "line" for JSON Lines.
func predictLines(m *Model, w http.ResponseWriter, r *http.Request, what string, parse func(n int, line string) ([]float64, error)) {
	var out strings.Builder
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, sagemaker.MaxBody))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		x, err := parse(n, sc.Text())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		y, err := m.Predict(x)
		if err != nil {
			http.Error(w, fmt.Sprintf("%s %d: %v", what, n, err), http.StatusBadRequest)
			return
		}
		out.WriteString(y)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/csv")
	_, _ = io.WriteString(w, out.String())
}

// infer labels a v2 "input" tensor: FP64 of shape [rows, features].
func infer(m *Model, in InferTensor) ([]string, error) {
	if in.Datatype != "FP64" {
		return nil, fmt.Errorf("input datatype %q: want FP64", in.Datatype)
	}
	nf := len(m.Features)
	if len(in.Shape) != 2 || in.Shape[1] != nf || in.Shape[0] < 0 {
		return nil, fmt.Errorf("input shape %v: want [rows, %d]", in.Shape, nf)
	}
	flat, err := flatten(in.Data)
	if err != nil {
		return nil, fmt.Errorf("input data: %w", err)
	}
	rows := in.Shape[0]
	if len(flat) != rows*nf {
		return nil, fmt.Errorf("input data has %d values; shape %v needs %d", len(flat), in.Shape, rows*nf)
	}
	labels := make([]string, rows)
	for i := range rows {
		if labels[i], err = m.Predict(flat[i*nf : (i+1)*nf]); err != nil {
			return nil, err
		}
	}
	return labels, nil
}

// flatten accepts a flat or nested JSON array of numbers.
func flatten(raw json.RawMessage) ([]float64, error) {
	var direct []float64
	if err := json.Unmarshal(raw, &direct); err == nil {
		return direct, nil
	}
	var flat []float64
	var nested []json.RawMessage
	if err := json.Unmarshal(raw, &nested); err != nil {
		return nil, fmt.Errorf("want an array of numbers")
	}
	for _, n := range nested {
		f, err := flatten(n)
		if err != nil {
			return nil, err
		}
		flat = append(flat, f...)
	}
	return flat, nil
}
