package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

// splitID turns "iris/m7" into its path parts.
func splitID(pattern, id string) (string, error) {
	p, n, ok := strings.Cut(id, "/")
	if !ok || p == "" || n == "" {
		return "", fmt.Errorf("%q is not an ID like pipeline/m7", id)
	}
	return withParam(withParam(pattern, "{pipeline}", p), "{id}", n), nil
}

func filtered(path, pipeline string) string {
	if pipeline == "" {
		return path
	}
	return path + "?" + url.Values{"pipeline": {pipeline}}.Encode()
}

// Runs calls GET /v1/runs (pipeline "" lists every pipeline's).
func (c *Client) Runs(ctx context.Context, pipeline string) ([]api.Run, error) {
	var rs []api.Run
	return rs, c.do(ctx, http.MethodGet, filtered(api.PathRuns, pipeline), nil, &rs)
}

// Run calls GET /v1/runs/{pipeline}/{id}.
func (c *Client) Run(ctx context.Context, id string) (api.Run, error) {
	var r api.Run
	path, err := splitID(api.PathRun, id)
	if err != nil {
		return r, err
	}
	return r, c.do(ctx, http.MethodGet, path, nil, &r)
}

// CancelRun calls POST /v1/runs/{pipeline}/{id}/cancel.
func (c *Client) CancelRun(ctx context.Context, id string) (api.Run, error) {
	var r api.Run
	path, err := splitID(api.PathRunCancel, id)
	if err != nil {
		return r, err
	}
	return r, c.do(ctx, http.MethodPost, path, nil, &r)
}

// Train calls POST /v1/pipelines/{name}/train.
func (c *Client) Train(ctx context.Context, pipeline string) (api.TrainResult, error) {
	var r api.TrainResult
	return r, c.do(ctx, http.MethodPost, withName(api.PathTrain, pipeline), nil, &r)
}

// Logs streams a run's log into w; follow keeps streaming until the run ends.
func (c *Client) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	path, err := splitID(api.PathRunLogs, id)
	if err != nil {
		return err
	}
	if follow {
		path += "?follow=1"
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	_, err = io.Copy(w, resp.Body)
	return err
}

// Models calls GET /v1/models.
func (c *Client) Models(ctx context.Context, pipeline string) ([]api.Model, error) {
	var ms []api.Model
	return ms, c.do(ctx, http.MethodGet, filtered(api.PathModels, pipeline), nil, &ms)
}

// Model calls GET /v1/models/{pipeline}/{id}.
func (c *Client) Model(ctx context.Context, id string) (api.Model, error) {
	var m api.Model
	path, err := splitID(api.PathModel, id)
	if err != nil {
		return m, err
	}
	return m, c.do(ctx, http.MethodGet, path, nil, &m)
}

// Promote calls POST /v1/models/{pipeline}/{id}/promote; it returns once
// the model is live, or with the gate's reason why not.
func (c *Client) Promote(ctx context.Context, id string, force bool) (api.Model, error) {
	var m api.Model
	path, err := splitID(api.PathModelPromote, id)
	if err != nil {
		return m, err
	}
	if force {
		path += "?force=1"
	}
	return m, c.do(ctx, http.MethodPost, path, nil, &m)
}

// Rollback calls POST /v1/pipelines/{name}/rollback[?to=MODEL].
func (c *Client) Rollback(ctx context.Context, pipeline, to string) (map[string]string, error) {
	var out map[string]string
	path := withName(api.PathRollback, pipeline)
	if to != "" {
		path += "?" + url.Values{"to": {to}}.Encode()
	}
	return out, c.do(ctx, http.MethodPost, path, nil, &out)
}

// Pin calls POST /v1/pipelines/{name}/pin.
func (c *Client) Pin(ctx context.Context, pipeline, model string) (map[string]string, error) {
	var out map[string]string
	body, err := json.Marshal(api.PinRequest{Model: model})
	if err != nil {
		return nil, err
	}
	return out, c.do(ctx, http.MethodPost, withName(api.PathPin, pipeline), bytes.NewReader(body), &out)
}

// Unpin calls POST /v1/pipelines/{name}/unpin.
func (c *Client) Unpin(ctx context.Context, pipeline string) (map[string]string, error) {
	var out map[string]string
	return out, c.do(ctx, http.MethodPost, withName(api.PathUnpin, pipeline), nil, &out)
}

// Lineage calls GET /v1/lineage/{pipeline}/{id}.
func (c *Client) Lineage(ctx context.Context, id, direction string, depth int) (api.Lineage, error) {
	var l api.Lineage
	path, err := splitID(api.PathLineage, id)
	if err != nil {
		return l, err
	}
	path += "?" + url.Values{"direction": {direction}, "depth": {fmt.Sprint(depth)}}.Encode()
	return l, c.do(ctx, http.MethodGet, path, nil, &l)
}

// Predict sends rows (text/csv: no header, one row per line) through the
// pipeline's endpoint and copies the answer (one prediction per line) to w.
func (c *Client) Predict(ctx context.Context, pipeline string, rows io.Reader, w io.Writer) error {
	return c.PredictBody(ctx, pipeline, "text/csv", rows, w)
}

// PredictBody is Predict for a body of any content type the predict route
// takes: text/csv, application/jsonlines, or one image
// (application/x-image).
func (c *Client) PredictBody(ctx context.Context, pipeline, contentType string, body io.Reader, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://kilnd"+withName(api.PathPredict, pipeline), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
