package apiclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Datasets calls GET /v1/datasets (?pipeline=P when pipeline is set).
func (c *Client) Datasets(ctx context.Context, pipeline string) ([]api.Dataset, error) {
	var ds []api.Dataset
	path := api.PathDatasets
	if pipeline != "" {
		path += "?" + url.Values{"pipeline": {pipeline}}.Encode()
	}
	return ds, c.do(ctx, http.MethodGet, path, nil, &ds)
}

// Dataset calls GET /v1/datasets/{pipeline}/{id} for a full ID such as "pumps/d12".
func (c *Client) Dataset(ctx context.Context, id string) (api.DatasetDetail, error) {
	var d api.DatasetDetail
	path, err := datasetPath(api.PathDataset, id)
	if err != nil {
		return d, err
	}
	return d, c.do(ctx, http.MethodGet, path, nil, &d)
}

// ReleaseDataset calls POST /v1/datasets/{pipeline}/{id}/release: a quarantined batch is
// re-admitted, recorded with the caller's uid.
func (c *Client) ReleaseDataset(ctx context.Context, id string) (api.Dataset, error) {
	var d api.Dataset
	path, err := datasetPath(api.PathDatasetRelease, id)
	if err != nil {
		return d, err
	}
	return d, c.do(ctx, http.MethodPost, path, nil, &d)
}

func datasetPath(pattern, id string) (string, error) {
	p, short, ok := strings.Cut(id, "/")
	if !ok || p == "" || short == "" || strings.Contains(short, "/") {
		return "", fmt.Errorf("dataset ID %q: want PIPELINE/dN, e.g. pumps/d12", id)
	}
	return withParam(withParam(pattern, "{pipeline}", p), "{id}", short), nil
}
