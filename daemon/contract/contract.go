package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// The protocols a pipeline's serve.protocol names (config.ProtocolSageMaker
// and config.ProtocolV2 spell the same strings; config may not be imported
// here, cmd/kiln links this package).
const (
	ProtocolSageMaker = "sagemaker"
	ProtocolV2        = "v2"
)

// Content types of the two protocols' requests.
const (
	ContentTypeCSV  = "text/csv"
	ContentTypeJSON = "application/json"
)

// Request is one HTTP request to a model server, without the transport:
// POST Body to Path with Content-Type ContentType.
type Request struct {
	Path        string
	ContentType string
	Body        []byte
}

// checkProtocol answers the protocol's canonical name. The empty string is
// the spec's default, sagemaker.
func checkProtocol(protocol string) (string, error) {
	switch protocol {
	case ProtocolSageMaker, "":
		return ProtocolSageMaker, nil
	case ProtocolV2:
		return ProtocolV2, nil
	}
	return "", fmt.Errorf("unknown protocol %q (want %s or %s)", protocol, ProtocolSageMaker, ProtocolV2)
}

// EncodeRequest turns rows (feature columns in training order, no label)
// into the request pipeline's model server expects: sagemaker, CSV records
// without a header; v2, one FP64 tensor "input" of shape [rows, features].
// Every row must have as many values as the first.
func EncodeRequest(protocol, pipeline string, rows [][]string) (Request, error) {
	protocol, err := checkProtocol(protocol)
	if err != nil {
		return Request{}, err
	}
	features := 0
	if len(rows) > 0 {
		features = len(rows[0])
	}
	for i, r := range rows {
		if len(r) != features {
			return Request{}, fmt.Errorf("row %d has %d values, row 1 has %d", i+1, len(r), features)
		}
	}
	if protocol == ProtocolSageMaker {
		var body bytes.Buffer
		w := csv.NewWriter(&body)
		if err := w.WriteAll(rows); err != nil {
			return Request{}, err
		}
		return Request{Path: "/invocations", ContentType: ContentTypeCSV, Body: body.Bytes()}, nil
	}
	data := make([]float64, 0, len(rows)*features)
	for i, r := range rows {
		for j, v := range r {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				// JSON has no NaN or infinity, and a number out of range is no FP64.
				return Request{}, fmt.Errorf("row %d column %d: v2 sends finite FP64 numbers, got %q", i+1, j+1, v)
			}
			data = append(data, f)
		}
	}
	body, err := json.Marshal(v2Request{Inputs: []v2Input{{Name: "input", Datatype: "FP64", Shape: []int{len(rows), features}, Data: data}}})
	if err != nil {
		return Request{}, err
	}
	return Request{Path: V2InferPath(pipeline), ContentType: ContentTypeJSON, Body: body}, nil
}

// V2InferPath is where an OIP v2 server infers for pipeline's model: kiln
// names the model after the pipeline.
func V2InferPath(pipeline string) string {
	return "/v2/models/" + url.PathEscape(pipeline) + "/infer"
}

// v2Request and v2Input are the Open Inference Protocol's request as kiln
// writes it; the field order is the wire's.
type v2Request struct {
	Inputs []v2Input `json:"inputs"`
}

type v2Input struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int     `json:"shape"`
	Data     []float64 `json:"data"`
}

// v2Tensor is a tensor as kiln reads it from any client or server: data may
// be flat or nested, numbers, strings or booleans.
type v2Tensor struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int           `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

// DecodeRequest turns a request body, as the prediction log keeps it, back
// into rows: the inverse of EncodeRequest (and of Encode for jsonl), for
// replaying logged requests and for joining late labels to the inputs they
// label. Content type "" is the protocol's own. v2 numbers come back
// formatted with strconv's 'g' format and the shortest precision (41 ->
// "41", 2.10 -> "2.1"), whatever the client wrote; v2 data may be flat or
// nested, and its input is the one named "input" or the only one.
//
// A sagemaker application/jsonlines body's rows hold the values in the
// order of the keys sorted (DecodeInputs returns those names as Columns),
// not the training order: match columns by name. An image
// request (sagemaker application/x-image, image/png or image/jpeg; v2 with
// a 1-D BYTES input) has no rows: the error is ErrNotTabular.
func DecodeRequest(protocol, contentType string, body []byte) ([][]string, error) {
	in, err := decodeInputs(protocol, contentType, body, false)
	if err != nil {
		return nil, err
	}
	if in.Format == FormatImages {
		return nil, ErrNotTabular
	}
	return in.Rows, nil
}

func decodeCSV(body []byte) ([][]string, error) {
	r := csv.NewReader(bytes.NewReader(body))
	r.ReuseRecord = false
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("sagemaker request: %w", err)
	}
	return rows, nil
}

// decodeV2 reads a v2 request: rows, or images when the input is a 1-D
// BYTES tensor (kiln's images convention), base64-decoded only when
// images is set.
func decodeV2(body []byte, images bool) (Inputs, error) {
	var req struct {
		Inputs []v2Tensor `json:"inputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Inputs{}, fmt.Errorf("v2 request: %w", err)
	}
	in, err := pickInput(req.Inputs)
	if err != nil {
		return Inputs{}, err
	}
	if in.Datatype == "BYTES" && len(in.Shape) == 1 {
		return decodeV2Images(in, images)
	}
	var rows, features int
	switch {
	case len(in.Shape) == 2 && in.Shape[0] >= 0 && in.Shape[1] >= 0:
		rows, features = in.Shape[0], in.Shape[1]
	case len(in.Shape) == 1 && in.Shape[0] >= 0: // one feature a row
		rows, features = in.Shape[0], 1
	default:
		return Inputs{}, fmt.Errorf("v2 request: input %q shape %v: want [rows, features]", in.Name, in.Shape)
	}
	flat, err := flatten(in.Data)
	if err != nil {
		return Inputs{}, fmt.Errorf("v2 request: input %q data: %w", in.Name, err)
	}
	if len(flat) != rows*features {
		return Inputs{}, fmt.Errorf("v2 request: input %q has %d values; shape %v needs %d", in.Name, len(flat), in.Shape, rows*features)
	}
	out := make([][]string, rows)
	for i := range out {
		out[i] = flat[i*features : (i+1)*features : (i+1)*features]
	}
	return Inputs{Format: FormatCSV, Rows: out}, nil
}

func decodeV2Images(in v2Tensor, decode bool) (Inputs, error) {
	if !decode {
		return Inputs{Format: FormatImages}, nil
	}
	var data []string
	if err := json.Unmarshal(in.Data, &data); err != nil {
		return Inputs{}, fmt.Errorf("v2 request: input %q data: want an array of base64 strings: %w", in.Name, err)
	}
	if in.Shape[0] != len(data) {
		return Inputs{}, fmt.Errorf("v2 request: input %q has %d images; shape %v says %d", in.Name, len(data), in.Shape, in.Shape[0])
	}
	out := Inputs{Format: FormatImages, Images: make([][]byte, len(data))}
	for i, s := range data {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return Inputs{}, fmt.Errorf("v2 request: input %q image %d: %w", in.Name, i+1, err)
		}
		out.Images[i] = b
	}
	return out, nil
}

func pickInput(inputs []v2Tensor) (v2Tensor, error) {
	if len(inputs) == 1 {
		return inputs[0], nil
	}
	for _, in := range inputs {
		if in.Name == "input" {
			return in, nil
		}
	}
	return v2Tensor{}, fmt.Errorf(`v2 request: %d inputs and none named "input"`, len(inputs))
}

// flatten reads a tensor's data, flat or nested in row-major order, as
// strings: numbers in 'g' format, strings as they are, booleans as
// true/false. null is an error: no value stands for it in a row.
func flatten(raw json.RawMessage) ([]string, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	top, ok := v.([]any)
	if !ok {
		return nil, errors.New("not an array")
	}
	var out []string
	var walk func([]any) error
	walk = func(a []any) error {
		for _, e := range a {
			switch e := e.(type) {
			case []any:
				if err := walk(e); err != nil {
					return err
				}
			case json.Number:
				s, err := formatNumber(e)
				if err != nil {
					return err
				}
				out = append(out, s)
			case string:
				out = append(out, e)
			case bool:
				out = append(out, strconv.FormatBool(e))
			case nil:
				return fmt.Errorf("element %d is null", len(out)+1)
			default:
				return fmt.Errorf("element %d is an object", len(out)+1)
			}
		}
		return nil
	}
	if err := walk(top); err != nil {
		return nil, err
	}
	return out, nil
}

// formatNumber is the one spelling of a JSON number kiln uses: float64 in
// strconv's 'g' format, shortest precision, as fmt.Sprint writes it.
func formatNumber(n json.Number) (string, error) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return "", fmt.Errorf("number %s: %w", n, err)
	}
	return strconv.FormatFloat(f, 'g', -1, 64), nil
}

// ParseAnswer turns a model server's answer to a request into one
// prediction per row. sagemaker: one prediction a line (CRLF or LF; the
// final newline optional; a line is kept whole, commas and all). v2: the
// elements of the output named "label", numbers in 'g' format.
//
// It does not know how many rows were sent; Predict checks the count.
func ParseAnswer(protocol string, body []byte) ([]string, error) {
	protocol, err := checkProtocol(protocol)
	if err != nil {
		return nil, err
	}
	if protocol == ProtocolSageMaker {
		text := strings.TrimRight(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n")
		if text == "" {
			return nil, nil
		}
		return strings.Split(text, "\n"), nil
	}
	var out struct {
		Outputs []v2Tensor `json:"outputs"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("v2 answer: %w", err)
	}
	for _, o := range out.Outputs {
		if o.Name != "label" {
			continue
		}
		preds, err := flatten(o.Data)
		if err != nil {
			return nil, fmt.Errorf(`v2 answer: output "label" data: %w`, err)
		}
		return preds, nil
	}
	return nil, errors.New(`v2 answer has no output "label"`)
}
