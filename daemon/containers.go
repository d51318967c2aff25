package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/runtime"
)

// containers adapts package runtime to the pipeline's Runtime interface:
// it maps jobs to container specs and keeps crashed servers restarted.
type containers struct {
	rt      *runtime.Runtime
	sockets string // host folder of serving containers' socket folders
	life    context.Context
	log     *slog.Logger
	onEvent func(kind string, ev runtime.Event)
}

var _ pipeline.Runtime = (*containers)(nil)

// cancelGrace is how long a cancelled or timed-out trainer has between
// SIGTERM and SIGKILL.
const cancelGrace = 10 * time.Second

func (c *containers) Resolve(ctx context.Context, ref string) (string, error) {
	return c.rt.Resolve(ctx, ref)
}

func (c *containers) trainSpec(job pipeline.TrainJob) runtime.TrainSpec {
	return runtime.TrainSpec{
		Common: runtime.Common{
			ID:        job.ContainerID,
			Image:     job.Image,
			Pipeline:  job.Pipeline,
			Env:       job.Env,
			Resources: runtime.Resources{MemoryBytes: job.Resources.Memory, CPUs: job.Resources.CPUs, Pids: job.Resources.Pids},
			GPUs:      job.GPUs,
			LogFile:   job.LogPath,
			Labels:    runtime.Identity{Installation: job.Installation, Digest: job.Digest}.Labels(),
		},
		Workspace:       job.Workspace,
		Channels:        job.Channels,
		ContentType:     job.ContentType,
		Hyperparameters: job.Hyperparameters,
		JobName:         job.Env["TRAINING_JOB_NAME"],
		RunID:           job.Run,
		Dataset:         job.Env["KILN_DATASET"],
		Timeout:         job.Timeout,
		Grace:           cancelGrace,
	}
}

func (c *containers) StartTraining(ctx context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	spec := c.trainSpec(job)
	t, err := c.rt.Train(ctx, spec)
	if err != nil {
		return nil, err
	}
	return training{t: t, spec: spec}, nil
}

func (c *containers) AttachTraining(ctx context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	// Only a container with this installation's ID and the run's digest is
	// the run's; anything else under the name (ErrForeign) is left alone.
	t, err := c.rt.Adopt(ctx, job.ContainerID, runtime.Identity{Installation: job.Installation, Digest: job.Digest})
	if err != nil {
		return nil, err
	}
	return training{t: t, spec: c.trainSpec(job)}, nil
}

type training struct {
	t    *runtime.Task
	spec runtime.TrainSpec
}

func (tr training) Wait(ctx context.Context) (pipeline.TrainResult, error) {
	exit, err := tr.t.Wait(ctx)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	res := pipeline.TrainResult{ExitCode: int(exit.Code), OOM: exit.OOM, TimedOut: exit.TimedOut, Failure: exit.Failure,
		ModelDir: tr.spec.ModelDir(), OutputDir: tr.spec.OutputDir()}
	// The run's record keeps the outcome; the finished container goes.
	if err := tr.t.Delete(context.WithoutCancel(ctx)); err != nil {
		return res, fmt.Errorf("remove finished training container: %w", err)
	}
	return res, nil
}

func (tr training) Cancel(ctx context.Context) error {
	_, err := tr.t.Stop(ctx, cancelGrace)
	return err
}

func (c *containers) serveSpec(job pipeline.ServeJob) runtime.ServeSpec {
	s := runtime.ServeSpec{
		Common: runtime.Common{
			ID:        job.ContainerID,
			Image:     job.Image,
			Pipeline:  job.Pipeline,
			Resources: runtime.Resources{MemoryBytes: job.Resources.Memory, CPUs: job.Resources.CPUs, Pids: job.Resources.Pids},
			GPUs:      job.GPUs,
			LogFile:   job.LogPath,
			Labels:    runtime.Identity{Installation: job.Installation, Digest: job.Digest}.Labels(),
		},
		ModelDir: job.ModelDir,
		ModelID:  job.Model,
		Port:     job.Port,
	}
	if job.Port == 0 {
		s.SocketDir = filepath.Join(c.sockets, job.ContainerID)
	}
	return s
}

func (c *containers) StartServing(ctx context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	spec := c.serveSpec(job)
	if spec.SocketDir != "" {
		if err := os.MkdirAll(spec.SocketDir, 0o755); err != nil {
			return nil, err
		}
	}
	t, err := c.rt.Serve(ctx, spec)
	if err != nil {
		return nil, err
	}
	return c.supervise(t, job), nil
}

func (c *containers) AttachServing(ctx context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	// A name is no proof: a container of another installation, or holding
	// another model, is never served or evaluated through (ErrForeign).
	t, err := c.rt.Adopt(ctx, job.ContainerID, runtime.Identity{Installation: job.Installation, Digest: job.Digest})
	if err != nil {
		return nil, err
	}
	select {
	case <-t.Exited():
		// Dead since kilnd went: not worth adopting; the caller starts anew.
		_ = t.Delete(context.WithoutCancel(ctx))
		return nil, errors.New("serving container exited while kilnd was down")
	default:
	}
	return c.supervise(t, job), nil
}

// supervise restarts the server when it crashes, for as long as kilnd runs
// (the next kilnd supervises it again after re-adopting it).
func (c *containers) supervise(t *runtime.Task, job pipeline.ServeJob) serving {
	s := serving{t: t, model: job.Model, protocol: job.Protocol}
	go t.Supervise(c.life, runtime.RestartPolicy{}, func(ev runtime.Event) {
		c.log.Warn("serving container exited", "model", job.Model, "container", ev.ID, "exit", ev.Exit.Reason(),
			"restarting", ev.Restarting, "restarts", ev.Restarts, "err", ev.Err)
		if c.onEvent != nil {
			c.onEvent(job.Model, ev)
		}
	})
	return s
}

type serving struct {
	t        *runtime.Task
	model    string
	protocol string
}

func (s serving) Model() string { return s.model }

func (s serving) DialContext(ctx context.Context) (net.Conn, error) { return s.t.DialContext(ctx) }

func (s serving) Ready(ctx context.Context) error {
	path := "/ping"
	if s.protocol == "v2" {
		path = "/v2/health/ready"
	}
	return s.t.WaitReady(ctx, path)
}

func (s serving) Stop(ctx context.Context) error {
	if _, err := s.t.Stop(ctx, cancelGrace); err != nil {
		return err
	}
	return s.t.Delete(ctx)
}
