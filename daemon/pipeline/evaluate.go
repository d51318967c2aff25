package pipeline

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Backend is one model's serving container, as the evaluator and the
// endpoint reach it.
type Backend interface {
	Model() string
	DialContext(ctx context.Context) (net.Conn, error)
}

// Holdout is labelled rows split into the feature columns, in training
// order (the data's column order without the label), and the labels.
type Holdout struct {
	Columns []string
	Rows    [][]string
	Labels  []string
}

// Len is the number of rows.
func (h *Holdout) Len() int { return len(h.Rows) }

// AddCSV appends the rows of a CSV part (header first, as ingest stores
// parts) whose label column is label. Every part must have the same columns.
func (h *Holdout) AddCSV(r io.Reader, label, name string) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("holdout %s: header: %w", name, err)
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	li := slices.Index(header, label)
	if li < 0 {
		return fmt.Errorf("holdout %s: no label column %q in header %v", name, label, header)
	}
	cols := slices.Delete(slices.Clone(header), li, li+1)
	if h.Columns == nil {
		h.Columns = cols
	} else if !slices.Equal(h.Columns, cols) {
		return fmt.Errorf("holdout %s: columns %v differ from the window's %v", name, cols, h.Columns)
	}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("holdout %s: %w", name, err)
		}
		h.Labels = append(h.Labels, rec[li])
		h.Rows = append(h.Rows, slices.Delete(rec, li, li+1))
	}
}

// predictBatch is how many rows go in one request: large enough to amortise
// the round trip, small enough for a modest server's body limit.
const predictBatch = 500

// Predict sends rows through b in the container contract's format and
// returns one prediction per row, in order.
func Predict(ctx context.Context, b Backend, protocol, pipeline string, rows [][]string) ([]string, error) {
	hc := backendClient(b)
	defer hc.CloseIdleConnections()
	out := make([]string, 0, len(rows))
	for start := 0; start < len(rows); start += predictBatch {
		batch := rows[start:min(start+predictBatch, len(rows))]
		var preds []string
		var err error
		if protocol == "v2" {
			preds, err = predictV2(ctx, hc, pipeline, batch)
		} else {
			preds, err = predictSageMaker(ctx, hc, batch)
		}
		if err != nil {
			return nil, fmt.Errorf("model %s, rows %d-%d: %w", b.Model(), start+1, start+len(batch), err)
		}
		if len(preds) != len(batch) {
			return nil, fmt.Errorf("model %s answered %d predictions for %d rows", b.Model(), len(preds), len(batch))
		}
		out = append(out, preds...)
	}
	return out, nil
}

func backendClient(b Backend) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return b.DialContext(ctx) },
			MaxIdleConns:    2,
			IdleConnTimeout: 30 * time.Second,
		},
		Timeout: 2 * time.Minute,
	}
}

func predictSageMaker(ctx context.Context, hc *http.Client, rows [][]string) ([]string, error) {
	var body bytes.Buffer
	w := csv.NewWriter(&body)
	if err := w.WriteAll(rows); err != nil {
		return nil, err
	}
	b, err := post(ctx, hc, "/invocations", "text/csv", &body)
	if err != nil {
		return nil, err
	}
	text := strings.TrimRight(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	if text == "" {
		return nil, nil
	}
	return strings.Split(text, "\n"), nil
}

// v2 is the Open Inference Protocol's request and response, as far as kiln
// uses it: one FP64 input "input" of shape [rows, features], one BYTES
// output "label" of shape [rows].
type v2Tensor struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Shape    []int  `json:"shape"`
	Data     []any  `json:"data"`
}

func predictV2(ctx context.Context, hc *http.Client, pipeline string, rows [][]string) ([]string, error) {
	features := 0
	if len(rows) > 0 {
		features = len(rows[0])
	}
	data := make([]any, 0, len(rows)*features)
	for i, r := range rows {
		for j, v := range r {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return nil, fmt.Errorf("row %d column %d: v2 sends FP64, got %q", i+1, j+1, v)
			}
			data = append(data, f)
		}
	}
	reqBody, err := json.Marshal(map[string]any{"inputs": []v2Tensor{{Name: "input", Datatype: "FP64", Shape: []int{len(rows), features}, Data: data}}})
	if err != nil {
		return nil, err
	}
	b, err := post(ctx, hc, "/v2/models/"+pipeline+"/infer", "application/json", bytes.NewReader(reqBody))
	if err != nil {
		return nil, err
	}
	var out struct {
		Outputs []v2Tensor `json:"outputs"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("v2 answer: %w", err)
	}
	for _, o := range out.Outputs {
		if o.Name != "label" {
			continue
		}
		preds := make([]string, len(o.Data))
		for i, v := range o.Data {
			preds[i] = fmt.Sprint(v)
		}
		return preds, nil
	}
	return nil, errors.New(`v2 answer has no output "label"`)
}

// post sends body to the model server and returns the answer of a 200.
func post(ctx context.Context, hc *http.Client, path, contentType string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://model"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", path, resp.Status, firstLine(string(b)))
	}
	return b, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
