package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// readyTimeout bounds how long a serving container may take to answer its
// readiness probe before the model is rejected (or, at restore, retried).
const readyTimeout = 2 * time.Minute

// ensureServing re-adopts the model's serving container when it still runs,
// else lays out its read-only model folder and starts one, and waits until
// it is ready.
func (c *controller) ensureServing(ctx context.Context, spec *config.Pipeline, m storage.Model) (Serving, error) {
	job, err := c.serveJob(ctx, spec, m)
	if err != nil {
		return nil, err
	}
	srv, err := c.deps.Runtime.AttachServing(ctx, job)
	if err != nil {
		if err := c.materialize(m, job.ModelDir); err != nil {
			return nil, err
		}
		if srv, err = c.deps.Runtime.StartServing(ctx, job); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := srv.Ready(rctx); err != nil {
		if ctx.Err() == nil {
			_ = srv.Stop(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("model %s not ready: %w", m.ID, err)
	}
	return srv, nil
}

func (c *controller) serveJob(ctx context.Context, spec *config.Pipeline, m storage.Model) (ServeJob, error) {
	image := m.ServeImage
	if image == "" {
		var err error
		if image, err = c.deps.Runtime.Resolve(ctx, spec.Serve.Image); err != nil {
			return ServeJob{}, fmt.Errorf("serving image %s: %w", spec.Serve.Image, err)
		}
	}
	dir := c.modelDir(m.ID)
	digest := ModelDigest(m)
	return ServeJob{
		ContainerID:  c.containerID(runtime.KindServe, m.ID, digest),
		Installation: c.installation(),
		Digest:       digest,
		Pipeline:     c.name,
		Model:        m.ID,
		Image:        image,
		ModelDir:     dir,
		Protocol:     spec.Serve.Protocol,
		Port:         spec.Serve.Port,
		Resources:    resources(spec.Serve.Resources),
		LogPath:      dir + ".serve.log",
	}, nil
}

// materialize lays the model's blobs out as its read-only /opt/ml/model.
func (c *controller) materialize(m storage.Model, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil // made before a restart; blobs are immutable
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	for _, f := range m.Files {
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := c.deps.Store.LinkBlob(f.Blob, dst); err != nil {
			return fmt.Errorf("model %s file %s: %w", m.ID, f.Path, err)
		}
	}
	return os.Rename(tmp, dir)
}

// standbyStart is the standby's serving container being started off the
// loop (EnsureStandby): done closes when srv or err is set.
type standbyStart struct {
	deployment string
	model      string
	done       chan struct{}
	srv        Serving
	err        error
	waiters    []command
}

// ensureStandby answers cmd with the standby's backend: at once when it is
// warm, else once a worker has started its container (serve.standby: stop).
// The container then stays warm until the next switch of the live model.
func (c *controller) ensureStandby(ctx context.Context, cmd command) error {
	if c.standby == nil {
		return fmt.Errorf("%w: %s has no standby model (one is kept from the second promotion on)", ErrConflict, c.name)
	}
	if c.standby.srv != nil {
		cmd.standby <- c.standby.srv
		cmd.reply <- nil
		return nil
	}
	if s := c.starting; s != nil {
		s.waiters = append(s.waiters, cmd)
		return nil
	}
	s := &standbyStart{deployment: c.standby.deployment, model: c.standby.model, done: make(chan struct{}), waiters: []command{cmd}}
	c.starting = s
	spec := c.currentSpec()
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		m, err := c.modelRecord(s.model)
		if err == nil {
			s.srv, err = c.ensureServing(ctx, spec, m)
		}
		s.err = err
		close(s.done)
		select {
		case c.results <- s:
		case <-ctx.Done():
		}
	}()
	return nil
}

// standbyDone takes the started container as the standby's, unless the
// standby changed meanwhile; waiters get it or the reason why not.
func (c *controller) standbyDone(ctx context.Context, s *standbyStart) {
	if c.starting == s {
		c.starting = nil
	}
	err := s.err
	switch {
	case err != nil:
		err = fmt.Errorf("start the standby %s: %w", s.model, err)
	case c.standby != nil && c.standby.deployment == s.deployment:
		if c.standby.srv == nil {
			c.standby.srv = s.srv
			c.event(ctx, actorKilnd, "standby.started", []string{s.model, s.deployment}, nil)
		}
	default:
		err = fmt.Errorf("%w: %s's standby changed while %s started", ErrStale, c.name, s.model)
		if !c.serves(s.model) {
			if stopErr := s.srv.Stop(context.WithoutCancel(ctx)); stopErr != nil {
				c.log.Warn("stop a standby no longer needed", "model", s.model, "err", stopErr)
			}
		}
	}
	for _, w := range s.waiters {
		if err == nil {
			w.standby <- c.standby.srv
		}
		w.reply <- err
	}
}

// serves reports whether model is the live or the standby model.
func (c *controller) serves(model string) bool {
	return (c.live != nil && c.live.model == model) || (c.standby != nil && c.standby.model == model)
}
