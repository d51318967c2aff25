package contract

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// DialFunc connects to one model server (a serving container's socket,
// a pipeline's endpoint).
type DialFunc func(ctx context.Context) (net.Conn, error)

// PredictBatch is how many rows go in one request: large enough to amortise
// the round trip, small enough for a modest server's body limit.
const PredictBatch = 500

// maxAnswer bounds an answer read into memory; 500 predictions are far less.
const maxAnswer = 64 << 20

// Predict sends rows through the model server dial reaches, PredictBatch
// rows a request, and returns one prediction per row, in order. An error
// names the rows of the batch that failed.
func Predict(ctx context.Context, dial DialFunc, protocol, pipeline string, rows [][]string) ([]string, error) {
	hc := &http.Client{
		Transport: &http.Transport{
			DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			MaxIdleConns:    2,
			IdleConnTimeout: 30 * time.Second,
		},
		Timeout: 2 * time.Minute,
	}
	defer hc.CloseIdleConnections()
	out := make([]string, 0, len(rows))
	for start := 0; start < len(rows); start += PredictBatch {
		batch := rows[start:min(start+PredictBatch, len(rows))]
		preds, err := predictBatch(ctx, hc, protocol, pipeline, batch)
		if err != nil {
			return nil, fmt.Errorf("rows %d-%d: %w", start+1, start+len(batch), err)
		}
		out = append(out, preds...)
	}
	return out, nil
}

func predictBatch(ctx context.Context, hc *http.Client, protocol, pipeline string, rows [][]string) ([]string, error) {
	req, err := EncodeRequest(protocol, pipeline, rows)
	if err != nil {
		return nil, err
	}
	answer, err := post(ctx, hc, req)
	if err != nil {
		return nil, err
	}
	preds, err := ParseAnswer(protocol, answer)
	if err != nil {
		return nil, err
	}
	if len(preds) != len(rows) {
		return nil, fmt.Errorf("answered %d predictions for %d rows", len(preds), len(rows))
	}
	return preds, nil
}

// post sends r to the model server and returns the body of a 200.
func post(ctx context.Context, hc *http.Client, r Request) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://model"+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", r.ContentType)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", r.Path, resp.Status, firstLine(string(b)))
	}
	return b, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
