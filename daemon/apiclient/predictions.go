package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/kiln-edge/kiln/daemon/api"
)

// PurgePredictions calls POST /v1/pipelines/{name}/predictions/purge.
func (c *Client) PurgePredictions(ctx context.Context, pipeline string, req api.PurgeRequest) (api.PurgeResult, error) {
	var res api.PurgeResult
	body, err := json.Marshal(req)
	if err != nil {
		return res, err
	}
	return res, c.do(ctx, http.MethodPost, withName(api.PathPredictionsPurge, pipeline), bytes.NewReader(body), &res)
}

// BackupPredictions streams the prediction logs' tar archive into w.
func (c *Client) BackupPredictions(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, api.PathPredictionsBackup, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	expect(w, resp)
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("read prediction log backup stream: %w", err)
	}
	return n, nil
}
