package model

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// maxBody caps one request, as the tabular example does.
const maxBody = 64 << 20

// ContentTypeImage is the /invocations body type: one image's bytes.
const ContentTypeImage = "application/x-image"

// InferRequest is an Open Inference Protocol v2 request.
type InferRequest struct {
	ID     string        `json:"id,omitempty"`
	Inputs []InferTensor `json:"inputs"`
}

// InferTensor is one named tensor; for images Data is an array of base64
// (standard encoding) strings, one per image.
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
				Inputs:  []tensorMeta{{Name: "input", Datatype: "BYTES", Shape: []int{-1}}},
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

// imageTypes are the /invocations Content-Types taken as one image; the
// bytes decide PNG or JPEG either way.
var imageTypes = map[string]bool{ContentTypeImage: true, "image/png": true, "image/jpeg": true}

func invocations(m *Model, w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !imageTypes[mt] {
			http.Error(w, fmt.Sprintf("Content-Type %q: want %s (one PNG or JPEG image)", ct, ContentTypeImage), http.StatusUnsupportedMediaType)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		status := http.StatusBadRequest
		if _, big := errors.AsType[*http.MaxBytesError](err); big {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "read request: "+err.Error(), status)
		return
	}
	y, err := m.Predict(body)
	if err != nil {
		http.Error(w, "image: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/csv")
	_, _ = io.WriteString(w, y+"\n")
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
	if in.Datatype != "BYTES" {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input datatype %q: want BYTES (base64 images)", in.Datatype))
		return
	}
	if len(in.Shape) != 1 || in.Shape[0] < 0 {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input shape %v: want [images]", in.Shape))
		return
	}
	var data []string
	if err := json.Unmarshal(in.Data, &data); err != nil {
		v2Error(w, http.StatusBadRequest, "input data: want an array of base64 strings")
		return
	}
	n := in.Shape[0]
	if len(data) != n {
		v2Error(w, http.StatusBadRequest, fmt.Sprintf("input data has %d images; shape %v needs %d", len(data), in.Shape, n))
		return
	}
	labels := make([]string, n)
	for i, s := range data {
		img, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			v2Error(w, http.StatusBadRequest, fmt.Sprintf("input image %d: not base64: %v", i+1, err))
			return
		}
		if labels[i], err = m.Predict(img); err != nil {
			v2Error(w, http.StatusBadRequest, fmt.Sprintf("input image %d: %v", i+1, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, InferResponse{ModelName: name, ID: req.ID, Outputs: []OutputTensor{{
		Name: "label", Shape: []int{n}, Datatype: "BYTES", Data: labels,
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
