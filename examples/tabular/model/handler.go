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
)

// maxBody caps one request; the example is not meant for huge batches.
const maxBody = 64 << 20

// InferRequest is an Open Inference Protocol v2 request.
type InferRequest struct {
	ID     string        `json:"id,omitempty"`
	Inputs []InferTensor `json:"inputs"`
}

// InferTensor is one named tensor. Data is row-major and flat (nested arrays
// are accepted on input too).
type InferTensor struct {
	Name     string          `json:"name"`
	Shape    []int           `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

// InferResponse is an Open Inference Protocol v2 response.
type InferResponse struct {
	ModelName string         `json:"model_name"`
	ID        string         `json:"id,omitempty"`
	Outputs   []OutputTensor `json:"outputs"`
}

// OutputTensor is the "label" output.
type OutputTensor struct {
	Name     string   `json:"name"`
	Shape    []int    `json:"shape"`
	Datatype string   `json:"datatype"`
	Data     []string `json:"data"`
}

type tensorMeta struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Shape    []int  `json:"shape"`
}

type modelMeta struct {
	Name     string       `json:"name"`
	Platform string       `json:"platform"`
	Inputs   []tensorMeta `json:"inputs"`
	Outputs  []tensorMeta `json:"outputs"`
}

// NewHandler serves m under both protocols; name is the v2 model name.
func NewHandler(m *Model, name string) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	}
	mux.HandleFunc("GET /ping", ok)
	mux.HandleFunc("GET /v2/health/ready", ok)
	mux.HandleFunc("GET /v2/health/live", ok)
	mux.HandleFunc("POST /invocations", func(w http.ResponseWriter, r *http.Request) { invocations(m, w, r) })
	known := func(w http.ResponseWriter, r *http.Request) bool {
		if r.PathValue("name") != name {
			v2Error(w, http.StatusNotFound, fmt.Sprintf("no model %q here; this server serves %q", r.PathValue("name"), name))
			return false
		}
		return true
	}
	mux.HandleFunc("GET /v2/models/{name}/ready", func(w http.ResponseWriter, r *http.Request) {
		if known(w, r) {
			ok(w, r)
		}
	})
	mux.HandleFunc("GET /v2/models/{name}", func(w http.ResponseWriter, r *http.Request) {
		if known(w, r) {
			writeJSON(w, http.StatusOK, modelMeta{Name: name, Platform: "kiln-example",
				Inputs:  []tensorMeta{{Name: "input", Datatype: "FP64", Shape: []int{-1, len(m.Features)}}},
				Outputs: []tensorMeta{{Name: "label", Datatype: "BYTES", Shape: []int{-1}}}})
		}
	})
	mux.HandleFunc("POST /v2/models/{name}/infer", func(w http.ResponseWriter, r *http.Request) {
		if known(w, r) {
			infer(m, name, w, r)
		}
	})
	return mux
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
	var out strings.Builder
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, maxBody))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(text)).Read()
		if err != nil {
			http.Error(w, fmt.Sprintf("row %d: %v", line, err), http.StatusBadRequest)
			return
		}
		x := make([]float64, len(rec))
		for i, v := range rec {
			if x[i], err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				http.Error(w, fmt.Sprintf("row %d, column %d: %q is not a number", line, i+1, v), http.StatusBadRequest)
				return
			}
		}
		y, err := m.Predict(x)
		if err != nil {
			http.Error(w, fmt.Sprintf("row %d: %v", line, err), http.StatusBadRequest)
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

func infer(m *Model, name string, w http.ResponseWriter, r *http.Request) {
	var req InferRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(&req); err != nil {
		v2Error(w, http.StatusBadRequest, "decode request: "+err.Error())
		return
	}
	if len(req.Inputs) != 1 || req.Inputs[0].Name != "input" {
		v2Error(w, http.StatusBadRequest, `want exactly one input named "input"`)
		return
	}
	in := req.Inputs[0]
	if in.Datatype != "FP64" {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input datatype %q: want FP64", in.Datatype))
		return
	}
	nf := len(m.Features)
	if len(in.Shape) != 2 || in.Shape[1] != nf || in.Shape[0] < 0 {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input shape %v: want [rows, %d]", in.Shape, nf))
		return
	}
	flat, err := flatten(in.Data)
	if err != nil {
		v2Error(w, http.StatusBadRequest, "input data: "+err.Error())
		return
	}
	rows := in.Shape[0]
	if len(flat) != rows*nf {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input data has %d values; shape %v needs %d", len(flat), in.Shape, rows*nf))
		return
	}
	labels := make([]string, rows)
	for i := range rows {
		if labels[i], err = m.Predict(flat[i*nf : (i+1)*nf]); err != nil {
			v2Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, InferResponse{ModelName: name, ID: req.ID, Outputs: []OutputTensor{{
		Name: "label", Shape: []int{rows}, Datatype: "BYTES", Data: labels,
	}}})
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

func v2Error(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
