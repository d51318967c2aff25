// Package api holds the wire types and routes of kilnd's local API: HTTP/JSON
// over a unix socket under /v1/. It is standard library only so that the CLI,
// the daemon and tests agree on one vocabulary without pulling in the daemon.
//
// JSON lists are arrays of objects; every listed object carries id, pipeline,
// state and created where those words apply (see DESIGN.md, "Local API and CLI").
package api

import "time"

// Version is the API version prefix of every route.
const Version = "v1"

// Route paths, shared by the server's route table and the typed client.
const (
	PathStatus          = "/v1/status"
	PathVersion         = "/v1/version"
	PathDoctor          = "/v1/doctor"
	PathPipelines       = "/v1/pipelines"
	PathPipeline        = "/v1/pipelines/{name}"
	PathPipelinesReload = "/v1/pipelines/reload"
	PathGPU             = "/v1/gpu"
	PathGPUCordon       = "/v1/gpu/{gpu}/cordon"
	PathGPUUncordon     = "/v1/gpu/{gpu}/uncordon"
	PathEvents          = "/v1/events"
	PathBackup          = "/v1/backup"
	PathGC              = "/v1/gc"
	PathMetrics         = "/metrics"
)

// Access says what a route needs from its caller.
type Access string

const (
	// Read routes are open to members of the read or admin group, and root.
	Read Access = "read"
	// Write routes change kilnd's state: admin group members and root only.
	Write Access = "write"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// BuildInfo identifies a binary; set at link time.
type BuildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	GoVersion string `json:"go_version"`
}

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Daemon     BuildInfo `json:"daemon"`
	APIVersion string    `json:"api_version"`
}

// Status answers GET /v1/status: what kilnd is doing, in one look.
type Status struct {
	State      string          `json:"state"` // starting | ready | reloading | stopping
	Message    string          `json:"message"`
	Version    string          `json:"version"`
	Started    time.Time       `json:"started"`
	Uptime     string          `json:"uptime"`
	PID        int             `json:"pid"`
	Root       string          `json:"root"`
	StateDir   string          `json:"state_dir"`
	APISocket  string          `json:"api_socket"`
	Containerd ComponentStatus `json:"containerd"`
	GPU        ComponentStatus `json:"gpu"`
	Store      StoreStatus     `json:"store"`
	Ingest     IngestStatus    `json:"ingest"`
	Pipelines  int             `json:"pipelines"`
	Systemd    bool            `json:"systemd"`
	LastReload *ReloadResult   `json:"last_reload,omitempty"`
	// Monitor is one line per pipeline: live and standby, and the live
	// model's metric on labelled feedback since its promotion.
	Monitor []PipelineMonitor `json:"monitor,omitempty"`
}

// ComponentStatus is the health of one part kilnd depends on.
type ComponentStatus struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// StoreStatus summarises the lineage store.
type StoreStatus struct {
	Path      string `json:"path"`
	EventSeq  uint64 `json:"event_seq"`
	EventHead string `json:"event_head"`
	DiskFree  uint64 `json:"disk_free"`
	DiskTotal uint64 `json:"disk_total"`
}

// IngestStatus is what drop-folder ingest is doing.
type IngestStatus struct {
	// Paused says why ingest waits (free disk below disk.min_free, the
	// state disk full or read-only); "" while it runs.
	Paused string `json:"paused,omitempty"`
	// State is "running" or "paused", for scripts: Paused says why.
	State    string `json:"state"`
	Pending  int    `json:"pending"`  // entries waiting to settle or for a worker
	Busy     int    `json:"busy"`     // batches being read now
	Ingested int64  `json:"ingested"` // versions committed since kilnd started
	// MinFree is disk.min_free: ingest pauses while less is free on the
	// state disk (Store.DiskFree), and resumes on its own.
	MinFree int64 `json:"min_free"`
}

// Check outcomes.
const (
	CheckOK   = "ok"
	CheckWarn = "warn"
	CheckFail = "fail"
)

// Check is one line of `kiln doctor`: what was checked, how it went, and how to fix it.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // ok | warn | fail
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Doctor answers GET /v1/doctor.
type Doctor struct {
	Checks []Check `json:"checks"`
}

// Pipeline is a loaded pipeline spec as the API lists it.
type Pipeline struct {
	ID       string    `json:"id"`
	Pipeline string    `json:"pipeline"`
	State    string    `json:"state"` // loaded | rejected
	Created  time.Time `json:"created"`
	File     string    `json:"file"`
	Digest   string    `json:"digest"`
	// Error says why the last reload rejected this file (state rejected);
	// a loaded pipeline of the same name keeps running meanwhile.
	Error string `json:"error,omitempty"`
	// Spec is the decoded spec with defaults applied, as JSON.
	Spec any `json:"spec,omitempty"`
}

// ReloadResult answers POST /v1/pipelines/reload (and is kept for SIGHUP and
// folder-change reloads). On failure the old set keeps running.
type ReloadResult struct {
	OK        bool      `json:"ok"`
	Time      time.Time `json:"time"`
	Trigger   string    `json:"trigger"` // api | sighup | folder
	Error     string    `json:"error,omitempty"`
	Added     []string  `json:"added"`
	Removed   []string  `json:"removed"`
	Changed   []string  `json:"changed"`
	Unchanged []string  `json:"unchanged"`
	// Warnings are problems that do not reject the set, such as an image
	// not imported yet: the pipeline loads and says so until it is there.
	Warnings []string `json:"warnings,omitempty"`
	// Rejected names each bad file of a rejected reload with its errors.
	Rejected []RejectedSpec `json:"rejected,omitempty"`
}

// RejectedSpec is one pipeline file a reload refused and why.
type RejectedSpec struct {
	File  string `json:"file"`
	Error string `json:"error"` // "FILE:LINE:COL: field: what is wrong"; several joined by "; "
}

// CordonRequest is the body of POST /v1/gpu/{gpu}/cordon.
type CordonRequest struct {
	Reason string `json:"reason"`
}

// GCReport answers POST /v1/gc: what retention kept and released. KeepImages
// are the image digests kept models and unfinished runs need, which image
// garbage collection must leave alone.
type GCReport struct {
	DryRun            bool     `json:"dry_run"`
	KeptModels        []string `json:"kept_models"`
	PrunedModels      []string `json:"pruned_models"`
	Protected         int      `json:"protected"`
	DeletedBlobs      []string `json:"deleted_blobs"`
	FreedBytes        int64    `json:"freed_bytes"`
	ExpiredQuarantine []string `json:"expired_quarantine"`
	ExpiredRunLogs    int      `json:"expired_run_logs"`
	KeepImages        []string `json:"keep_images"`
	// RemovedImages are the images deleted (or, in a dry run, that would
	// be) by `kiln gc --images`.
	RemovedImages []string `json:"removed_images"`
	// Foreign are the containers of another installation (or none) removed
	// (or, in a dry run, that would be) by `kiln gc --foreign`.
	Foreign []string `json:"foreign"`
	Took    string   `json:"took"`
}

// Event is one record of the hash-chained audit log.
type Event struct {
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Actor    string            `json:"actor"`
	Kind     string            `json:"kind"`
	Pipeline string            `json:"pipeline,omitempty"`
	Refs     []string          `json:"refs,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	Hash     string            `json:"hash"`
}
