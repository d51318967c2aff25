package sagemaker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// MaxBody caps one request body; the examples are not meant for huge
// batches.
const MaxBody = 64 << 20

// InferRequest is an Open Inference Protocol v2 request.
type InferRequest struct {
	ID     string        `json:"id,omitempty"`
	Inputs []InferTensor `json:"inputs"`
}

// InferTensor is one named tensor; what Data holds depends on Datatype
// (numbers for FP64, base64 strings for BYTES).
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

// TensorMeta describes one tensor in GET /v2/models/{name}.
type TensorMeta struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Shape    []int  `json:"shape"`
}

type modelMeta struct {
	Name     string       `json:"name"`
	Platform string       `json:"platform"`
	Inputs   []TensorMeta `json:"inputs"`
	Outputs  []TensorMeta `json:"outputs"`
}

// Model is what one example serves; NewHandler puts the shared routes
// around it.
type Model struct {
	// Name is the v2 model name (ModelName in a container).
	Name string
	// Input describes the one input tensor, named "input".
	Input TensorMeta
	// Invocations answers POST /invocations in the example's own format.
	Invocations http.HandlerFunc
	// Infer turns the "input" tensor of a v2 request into one label per
	// item; an error is a 400 whose {"error"} is its text.
	Infer func(in InferTensor) ([]string, error)
}

// NewHandler serves m under both protocols:
//
//	GET  /ping, /v2/health/ready, /v2/health/live   "ok"
//	POST /invocations                               m.Invocations
//	GET  /v2/models/{name}[/ready]                  metadata, readiness
//	POST /v2/models/{name}/infer                    m.Infer, output "label" BYTES [n]
//
// A v2 request for another model name is a 404.
func NewHandler(m Model) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	}
	mux.HandleFunc("GET /ping", ok)
	mux.HandleFunc("GET /v2/health/ready", ok)
	mux.HandleFunc("GET /v2/health/live", ok)
	mux.HandleFunc("POST /invocations", m.Invocations)
	known := func(w http.ResponseWriter, r *http.Request) bool {
		if r.PathValue("name") != m.Name {
			v2Error(w, http.StatusNotFound, fmt.Sprintf("no model %q here; this server serves %q", r.PathValue("name"), m.Name))
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
			writeJSON(w, http.StatusOK, modelMeta{Name: m.Name, Platform: "kiln-example",
				Inputs:  []TensorMeta{m.Input},
				Outputs: []TensorMeta{{Name: "label", Datatype: "BYTES", Shape: []int{-1}}}})
		}
	})
	mux.HandleFunc("POST /v2/models/{name}/infer", func(w http.ResponseWriter, r *http.Request) {
		if known(w, r) {
			infer(m, w, r)
		}
	})
	return mux
}

func infer(m Model, w http.ResponseWriter, r *http.Request) {
	var req InferRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	if err := dec.Decode(&req); err != nil {
		v2Error(w, http.StatusBadRequest, "decode request: "+err.Error())
		return
	}
	if len(req.Inputs) != 1 || req.Inputs[0].Name != "input" {
		v2Error(w, http.StatusBadRequest, `want exactly one input named "input"`)
		return
	}
	labels, err := m.Infer(req.Inputs[0])
	if err != nil {
		v2Error(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, InferResponse{ModelName: m.Name, ID: req.ID, Outputs: []OutputTensor{{
		Name: "label", Shape: []int{len(labels)}, Datatype: "BYTES", Data: labels,
	}}})
}

func v2Error(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
