package api

import "time"

// Route paths of runs, models and the pipeline controls.
const (
	PathRuns         = "/v1/runs"
	PathRun          = "/v1/runs/{pipeline}/{id}"
	PathRunCancel    = "/v1/runs/{pipeline}/{id}/cancel"
	PathRunLogs      = "/v1/runs/{pipeline}/{id}/logs"
	PathModels       = "/v1/models"
	PathModel        = "/v1/models/{pipeline}/{id}"
	PathModelPromote = "/v1/models/{pipeline}/{id}/promote"
	PathTrain        = "/v1/pipelines/{name}/train"
	PathRollback     = "/v1/pipelines/{name}/rollback"
	PathPin          = "/v1/pipelines/{name}/pin"
	PathUnpin        = "/v1/pipelines/{name}/unpin"
	PathPredict      = "/v1/pipelines/{name}/predict"
	PathLineage      = "/v1/lineage/{pipeline}/{id}"
)

// Run is one training container execution.
type Run struct {
	ID        string            `json:"id"`
	Pipeline  string            `json:"pipeline"`
	State     string            `json:"state"`
	Created   time.Time         `json:"created"`
	Reason    string            `json:"reason,omitempty"`
	Datasets  []string          `json:"datasets"`
	Image     string            `json:"image,omitempty"`
	GPU       string            `json:"gpu,omitempty"`
	Container string            `json:"container,omitempty"`
	LogPath   string            `json:"log_path,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Started   time.Time         `json:"started,omitzero"`
	Finished  time.Time         `json:"finished,omitzero"`
}

// Model is a trained model with the metrics kilnd measured.
type Model struct {
	ID             string             `json:"id"`
	Pipeline       string             `json:"pipeline"`
	State          string             `json:"state"`
	Created        time.Time          `json:"created"`
	Run            string             `json:"run"`
	Metrics        map[string]float64 `json:"metrics"`
	TrainerMetrics map[string]float64 `json:"trainer_metrics,omitempty"`
	Reason         string             `json:"reason,omitempty"`
	Files          []string           `json:"files,omitempty"`
	Pruned         bool               `json:"pruned,omitempty"`
	// History is the model's events, oldest first (show only).
	History []Event `json:"history,omitempty"`
	// Lineage is what the model descends from (show only).
	Lineage []LineageNode `json:"lineage,omitempty"`
	// Monitor is the model's score on labelled feedback (show only).
	Monitor *ModelMonitor `json:"monitor,omitempty"`
}

// PinRequest is the body of POST /v1/pipelines/{name}/pin.
type PinRequest struct {
	Model string `json:"model"`
}

// TrainResult answers POST /v1/pipelines/{name}/train: the run recorded and,
// when a run or evaluation was in flight, that it waits behind it (Behind
// names what). Train, rollback, promote, pin, unpin and cancel take an
// optional ?reason= kept in their events.
type TrainResult struct {
	Run    string `json:"run"`
	Queued bool   `json:"queued,omitempty"`
	Behind string `json:"behind,omitempty"`
}

// LineageNode is one node reached from the asked-for ID.
type LineageNode struct {
	ID    string `json:"id"`
	Depth int    `json:"depth"`
	Edge  string `json:"edge"`
}

// LineageEdge is one typed edge, parent to child.
type LineageEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Type string `json:"type"`
}

// Lineage answers GET /v1/lineage/{pipeline}/{id}.
type Lineage struct {
	ID        string        `json:"id"`
	Direction string        `json:"direction"` // up (ancestors) | down (descendants)
	Nodes     []LineageNode `json:"nodes"`
	// Edges connect the ID and Nodes (for --dot).
	Edges []LineageEdge `json:"edges"`
}
