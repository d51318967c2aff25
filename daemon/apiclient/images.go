package apiclient

import (
	"context"
	"io"
	"net/http"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Images calls GET /v1/images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var ims []api.Image
	return ims, c.do(ctx, http.MethodGet, api.PathImages, nil, &ims)
}

// ImportImages streams an OCI or `docker save` archive to POST
// /v1/images/import. The body is sent as it is read (chunked), so an
// archive of any size passes through the socket without being buffered;
// wrap r to observe progress.
func (c *Client) ImportImages(ctx context.Context, r io.Reader) (api.ImportResult, error) {
	var res api.ImportResult
	// Hide any WriterTo/Len so net/http streams instead of sizing the body.
	return res, c.do(ctx, http.MethodPost, api.PathImagesImport, struct{ io.Reader }{r}, &res)
}
