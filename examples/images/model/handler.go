package model

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
)

// ContentTypeImage is the /invocations body type: one image's bytes.
const ContentTypeImage = "application/x-image"

// The Open Inference Protocol v2 envelopes; for images the input's Data is
// an array of base64 (standard encoding) strings, one per image.
type (
	InferRequest  = sagemaker.InferRequest
	InferTensor   = sagemaker.InferTensor
	InferResponse = sagemaker.InferResponse
	OutputTensor  = sagemaker.OutputTensor
)

// NewHandler serves m under both protocols; name is the v2 model name. The
// routes, health checks and v2 envelope are examples/internal/sagemaker's;
// this file holds only how an image request becomes a label.
func NewHandler(m *Model, name string) http.Handler {
	return sagemaker.NewHandler(sagemaker.Model{
		Name:        name,
		Input:       sagemaker.TensorMeta{Name: "input", Datatype: "BYTES", Shape: []int{-1}},
		Invocations: func(w http.ResponseWriter, r *http.Request) { invocations(m, w, r) },
		Infer:       func(in InferTensor) ([]string, error) { return infer(m, in) },
	})
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, sagemaker.MaxBody))
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

// infer labels a v2 "input" tensor: BYTES of shape [n], n base64 images.
func infer(m *Model, in InferTensor) ([]string, error) {
	if in.Datatype != "BYTES" {
		return nil, fmt.Errorf("input datatype %q: want BYTES (base64 images)", in.Datatype)
	}
	if len(in.Shape) != 1 || in.Shape[0] < 0 {
		return nil, fmt.Errorf("input shape %v: want [images]", in.Shape)
	}
	var data []string
	if err := json.Unmarshal(in.Data, &data); err != nil {
		return nil, errors.New("input data: want an array of base64 strings")
	}
	n := in.Shape[0]
	if len(data) != n {
		return nil, fmt.Errorf("input data has %d images; shape %v needs %d", len(data), in.Shape, n)
	}
	labels := make([]string, n)
	for i, s := range data {
		img, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("input image %d: not base64: %v", i+1, err)
		}
		if labels[i], err = m.Predict(img); err != nil {
			return nil, fmt.Errorf("input image %d: %v", i+1, err)
		}
	}
	return labels, nil
}
