package pipeline

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Store is what the state machine needs of kiln's store.
type Store interface {
	Update(ctx context.Context, fn func(*storage.Tx) error) error
	View(fn func(*storage.Tx) error) error
	PutBlob(ctx context.Context, r io.Reader) (storage.BlobRef, error)
	OpenBlob(ref storage.BlobRef) (*os.File, error)
	LinkBlob(ref storage.BlobRef, dst string) error
	Subscribe(ctx context.Context, fromSeq uint64) <-chan storage.Event
	Head() (seq uint64, hash string)
}

// Resources are a container's limits; zero means none.
type Resources struct {
	Memory int64
	CPUs   float64
	Pids   int64
}

// TrainJob is one training container to run.
type TrainJob struct {
	ContainerID     string
	Pipeline        string
	Run             string
	Image           string // digest
	Workspace       string // the run's host folder; the runtime builds /opt/ml in it
	Channels        map[string]string
	ContentType     string // the channels' SageMaker ContentType (contract.ContentType*)
	Hyperparameters map[string]string
	Env             map[string]string
	Resources       Resources
	Timeout         time.Duration
	GPUs            []string // CDI device names
	LogPath         string
	// Installation and Digest (RunDigest) are the container's identity
	// labels; re-attaching requires both to match.
	Installation string
	Digest       string
}

// TrainResult is how a training container ended.
type TrainResult struct {
	ExitCode int
	OOM      bool
	TimedOut bool
	// Failure is /opt/ml/output/failure, when the trainer wrote one.
	Failure string
	// ModelDir and OutputDir are the host folders /opt/ml/model and
	// /opt/ml/output were.
	ModelDir  string
	OutputDir string
}

// Training is a started or re-attached training container.
type Training interface {
	// Wait returns when the container ends, or with ctx's error when ctx
	// ends first (the container keeps running: kilnd stopping is no reason
	// to stop it).
	Wait(ctx context.Context) (TrainResult, error)
	// Cancel stops the container: SIGTERM, then SIGKILL after a grace.
	Cancel(ctx context.Context) error
}

// ServeJob is one serving container to run.
type ServeJob struct {
	ContainerID string
	Pipeline    string
	Model       string
	Image       string // digest
	ModelDir    string // read-only /opt/ml/model
	Protocol    string
	// Port is 0 for a server on the unix socket $KILN_SOCKET, else its TCP
	// port inside its own network namespace.
	Port      int
	Resources Resources
	GPUs      []string
	LogPath   string
	// Installation and Digest (ModelDigest) are the container's identity
	// labels; re-attaching requires both to match.
	Installation string
	Digest       string
}

// Serving is a started or re-attached serving container.
type Serving interface {
	Backend
	// Ready waits until the server answers its readiness probe.
	Ready(ctx context.Context) error
	// Stop stops and removes the container.
	Stop(ctx context.Context) error
}

// Runtime is the container side: kilnd's adapter over package runtime.
type Runtime interface {
	Resolve(ctx context.Context, ref string) (digest string, err error)
	StartTraining(ctx context.Context, job TrainJob) (Training, error)
	// AttachTraining re-adopts a training container after a kilnd restart.
	AttachTraining(ctx context.Context, job TrainJob) (Training, error)
	StartServing(ctx context.Context, job ServeJob) (Serving, error)
	// AttachServing re-adopts a serving container; an error means it is gone.
	AttachServing(ctx context.Context, job ServeJob) (Serving, error)
}

// Endpoint is a pipeline's stable endpoint (package serve).
type Endpoint interface {
	// Start begins accepting connections. restore calls it once the live
	// model is back, so clients that connected across a kilnd restart wait
	// in the listen backlog instead of getting "no model"; it is idempotent.
	Start()
	// Flip sends new requests to b at once; requests in flight finish on
	// the previous backend, which it returns.
	Flip(b Backend) Backend
	Live() Backend
	// WaitIdle returns once no request is in flight on model's backend
	// after it was flipped away, so its container can stop failing nothing.
	WaitIdle(ctx context.Context, model string) error
}

// Endpoints opens and closes pipelines' endpoints.
type Endpoints interface {
	Open(spec *config.Pipeline) (Endpoint, error)
	Close(pipeline string) error
}

// LeasedGPU is one GPU leased to a run.
type LeasedGPU struct {
	UUID    string // recorded on the run: which GPU it trained on
	CDIName string // injected into the container, e.g. nvidia.com/gpu=0
}

// GPUs leases GPUs to runs; the lease is persisted by the implementation.
type GPUs interface {
	// Lease returns count GPUs with minFree bytes free, leased to run, or
	// an error saying why not (the run then waits).
	Lease(ctx context.Context, pipeline, run string, count int, minFree int64) ([]LeasedGPU, error)
	// Release drops run's leases.
	Release(ctx context.Context, run string) error
}

// Deps are what a Manager is built from.
type Deps struct {
	Store     Store
	Runtime   Runtime
	Endpoints Endpoints
	GPUs      GPUs
	Paths     config.Paths
	Log       *slog.Logger
	// Version labels containers.
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}
