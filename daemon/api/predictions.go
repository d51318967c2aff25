package api

import "time"

// Prediction log routes (both write: the log holds what clients sent).
const (
	// PathPredictionsPurge deletes records from a pipeline's prediction log.
	PathPredictionsPurge = "/v1/pipelines/{name}/predictions/purge"
	// PathPredictionsBackup streams every prediction log as a tar archive:
	// records and indexes, without the inputs kept as files.
	PathPredictionsBackup = "/v1/predictions/backup"
)

// PurgeRequest is the body of POST /v1/pipelines/{name}/predictions/purge:
// exactly one of Before (records answered before it) and ID (a request id,
// without a ":row" suffix).
type PurgeRequest struct {
	Before time.Time `json:"before,omitzero"`
	ID     string    `json:"id,omitempty"`
}

// PurgeResult says what a purge deleted.
type PurgeResult struct {
	Pipeline string `json:"pipeline"`
	Records  int    `json:"records"`
	// Segments is how many log segments were rewritten or removed.
	Segments int `json:"segments"`
	// InputFiles is how many kept input files nothing refers to any more
	// were removed.
	InputFiles int `json:"input_files"`
}
