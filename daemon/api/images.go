package api

import "time"

// Image routes.
const (
	PathImages       = "/v1/images"
	PathImagesImport = "/v1/images/import"
)

// Image is one entry of GET /v1/images (`kiln images ls -o json`): a tag,
// or the pin kilnd keeps under each imported manifest's digest.
type Image struct {
	// ID is the image's name: a tag (kiln.local/tabular-trainer:1) or, for
	// a pin, the digest itself.
	ID      string    `json:"id"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// State is "tagged" or "pinned".
	State string `json:"state"`
}

// ImportResult answers POST /v1/images/import, whose body is the archive
// (an OCI image layout tar or a `docker save` tar), streamed.
type ImportResult struct {
	Images  []Image `json:"images"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}
