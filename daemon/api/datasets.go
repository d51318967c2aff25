package api

import "time"

// Dataset routes. {id} is the short ID within the pipeline ("d12"); the full ID is
// {pipeline}/{id}.
const (
	PathDatasets       = "/v1/datasets"
	PathDataset        = "/v1/datasets/{pipeline}/{id}"
	PathDatasetRelease = "/v1/datasets/{pipeline}/{id}/release"
)

// Dataset is one dataset version (or quarantined batch) as GET /v1/datasets lists it.
type Dataset struct {
	ID         string        `json:"id"`
	Pipeline   string        `json:"pipeline"`
	Kind       string        `json:"kind"`             // data | feedback
	Format     string        `json:"format,omitempty"` // csv | jsonl | images | files, as it was read
	State      string        `json:"state"`            // accepted | quarantined | released | expired
	Created    time.Time     `json:"created"`
	Digest     string        `json:"digest"` // sha256 of the manifest; "" when rejected unread
	Rows       int64         `json:"rows"`
	Files      []DatasetFile `json:"files"`
	Reason     string        `json:"reason,omitempty"` // why it was quarantined
	ReleasedBy string        `json:"released_by,omitempty"`
	// Suspect names the rolled-back model whose training window held this version and the
	// restored model's did not: it stays out of training windows until released.
	Suspect string `json:"suspect,omitempty"`
}

// DatasetFile is one dropped file of a dataset, or one of its parts.
type DatasetFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
	Rows   int64  `json:"rows,omitempty"` // parts only
	// Label and Holdout: an image's class and whether it is in the holdout part.
	Label   string `json:"label,omitempty"`
	Holdout bool   `json:"holdout,omitempty"`
}

// DatasetDetail answers GET /v1/datasets/{pipeline}/{id}: the dataset with its manifest,
// validation report and lineage.
type DatasetDetail struct {
	Dataset
	// Parts are the train and holdout parts (csv/jsonl data versions).
	Parts []DatasetFile `json:"parts,omitempty"`
	// Manifest and Report are the stored manifest and validation report, as JSON objects.
	Manifest any `json:"manifest,omitempty"`
	Report   any `json:"report,omitempty"`
	// Upstream are the lineage nodes the dataset descends from (who dropped or released it,
	// what quarantined it); Downstream the runs, models and deployments made from it.
	Upstream   []LineageNode `json:"upstream"`
	Downstream []LineageNode `json:"downstream"`
	// QuarantineDir is where the batch and its REASON.json are, while quarantined.
	QuarantineDir string `json:"quarantine_dir,omitempty"`
}
