package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Accuracy calls GET /v1/pipelines/{name}/accuracy.
func (c *Client) Accuracy(ctx context.Context, pipeline string) (api.Accuracy, error) {
	var a api.Accuracy
	return a, c.do(ctx, http.MethodGet, withName(api.PathAccuracy, pipeline), nil, &a)
}

// Feedback streams a feedback file to POST /v1/pipelines/{name}/feedback.
// size is the body's length when known (kilnd then refuses one over the
// pipeline's data.max_file_size before any byte is sent), else -1 (the body
// goes chunked, as it is read).
func (c *Client) Feedback(ctx context.Context, pipeline string, r io.Reader, size int64) (api.FeedbackResult, error) {
	var res api.FeedbackResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://kilnd"+withName(api.PathFeedback, pipeline), struct{ io.Reader }{r})
	if err != nil {
		return res, err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return res, c.dialError(err)
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if e.Error == "" {
			e.Error = resp.Status
		}
		return res, &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("decode feedback answer: %w", err)
	}
	return res, nil
}
