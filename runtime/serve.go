package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The serving socket inside the container, in the bind-mounted folder.
const (
	containerSocketDir = "/run/kiln-serve"
	socketName         = "serve.sock"
)

// DefaultPort is SageMaker's serving port.
const DefaultPort = 8080

// ServeSpec is one serving container.
type ServeSpec struct {
	Common
	// ModelDir is the model's host folder, mounted read-only at /opt/ml/model.
	ModelDir string
	// SocketDir, when set, is a host folder mounted into the container; the
	// server listens on $KILN_SOCKET, which is SocketDir/serve.sock on the
	// host. When empty the server must listen on TCP Port (default 8080)
	// inside its own network namespace, and kiln dials it there.
	SocketDir string
	Port      int
	// ModelID labels the container (e.g. "iris/m7").
	ModelID string
}

// SocketPath is the host path of the serving socket ("" in TCP mode).
func (s *ServeSpec) SocketPath() string {
	if s.SocketDir == "" {
		return ""
	}
	return filepath.Join(s.SocketDir, socketName)
}

// Serve creates the serving container and starts `<image> serve`. It does
// not wait for readiness: call WaitReady, and Supervise for restarts.
func (r *Runtime) Serve(ctx context.Context, s ServeSpec) (*Task, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if st, err := os.Stat(s.ModelDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: model folder %q is not a folder", ErrBadSpec, s.ModelDir)
	}
	img, digest, err := r.image(ctx, s.Image)
	if err != nil {
		return nil, err
	}
	labels := r.labels(&s.Common, KindServe, digest)
	if s.ModelID != "" {
		labels[LabelModel] = s.ModelID
	}
	mounts := []specs.Mount{bind(s.ModelDir, "/opt/ml/model", true)}
	extra := map[string]string{}
	if s.Pipeline != "" {
		extra["KILN_PIPELINE"] = s.Pipeline
	}
	if s.SocketDir != "" {
		if len(s.SocketPath()) > 107 {
			return nil, fmt.Errorf("%w: socket path %s is longer than a unix socket allows (107 bytes)", ErrBadSpec, s.SocketPath())
		}
		mounts = append(mounts, bind(s.SocketDir, containerSocketDir, false))
		extra["KILN_SOCKET"] = containerSocketDir + "/" + socketName
		labels[LabelSocket] = s.SocketPath()
		labels[LabelOwned] = ownedLabel(s.SocketDir)
	} else {
		port := s.Port
		if port == 0 {
			port = DefaultPort
		}
		extra["SAGEMAKER_BIND_TO_PORT"] = strconv.Itoa(port)
		labels[LabelPort] = strconv.Itoa(port)
	}
	args := s.Args
	if args == nil {
		args = []string{"serve"}
	}
	// The socket folder is the workload id's alone (0700): kilnd dials as
	// root; no local account can reach the model around the endpoint.
	prepare := func(uid, gid int) error {
		if s.SocketDir == "" {
			return nil
		}
		if err := ensureOwnedDir(s.SocketDir, uid, gid); err != nil {
			return fmt.Errorf("socket folder %s: %w", s.SocketDir, err)
		}
		if err := os.Remove(s.SocketPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stale socket %s: %w", s.SocketPath(), err)
		}
		return nil
	}
	return r.launch(ctx, "serving", &s.Common, img, digest, labels, r.specOpts(&s.Common, img, args, mounts, envList(s.Env, extra)), prepare)
}

// DialContext connects to the serving task: its socket, or TCP 127.0.0.1
// on its port inside its network namespace. It is the endpoint proxy's
// dialer (http.Transport.DialContext, ignoring network and address).
func (t *Task) DialContext(ctx context.Context) (net.Conn, error) {
	if sock := t.labels[LabelSocket]; sock != "" {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	port := t.labels[LabelPort]
	if port == "" {
		return nil, fmt.Errorf("%s is not a serving task", t.id)
	}
	pid := t.Pid()
	if pid == 0 {
		return nil, fmt.Errorf("%s has no running task", t.id)
	}
	return dialInNetns(ctx, pid, net.JoinHostPort("127.0.0.1", port))
}

// HTTPClient is an http.Client whose every connection goes to the task.
func (t *Task) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return t.DialContext(ctx) },
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// WaitReady polls GET path ("/ping" when empty; "/v2/health/ready" for the
// v2 protocol) until it answers 200, the task exits, or ctx ends.
func (t *Task) WaitReady(ctx context.Context, path string) error {
	if path == "" {
		path = "/ping"
	}
	hc := t.HTTPClient()
	defer hc.CloseIdleConnections()
	inst := t.instance()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://task"+path, nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		cancel()
		last = err
		select {
		case <-inst.done:
			return fmt.Errorf("%s exited before it was ready (%s): %w", t.id, inst.exit.Reason(), errTaskExited)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", t.id, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

var errTaskExited = errors.New("task exited")

// RestartPolicy says how Supervise restarts a crashed serving task.
type RestartPolicy struct {
	// MaxRestarts in a row before giving up; 0 means unlimited.
	MaxRestarts int
	// Backoff before the first restart (default 500ms), doubled each time
	// up to MaxBackoff (default 30s); reset once a task ran ResetAfter
	// (default 1m).
	Backoff, MaxBackoff, ResetAfter time.Duration
}

// Event reports a serving task's exit to Supervise's caller.
type Event struct {
	ID   string
	Exit Exit
	// Restarting: a restart follows after Delay; Restarts counts them in a row.
	Restarting bool
	Delay      time.Duration
	Restarts   int
	// Err is set when a restart failed, or when the policy gave up.
	Err error
}

// Supervise watches a serving task until ctx ends or the task is stopped
// with Stop: each unrequested exit is reported to on (a crash is an event for
// the caller's log and lineage) and the task is restarted with backoff.
// It returns when it stops supervising.
func (t *Task) Supervise(ctx context.Context, p RestartPolicy, on func(Event)) {
	if p.Backoff <= 0 {
		p.Backoff = 500 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 30 * time.Second
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = time.Minute
	}
	restarts := 0
	delay := p.Backoff
	started := time.Now()
	for {
		inst := t.instance()
		select {
		case <-ctx.Done():
			return
		case <-t.life.Done():
			return
		case <-inst.done:
		}
		if t.stopping.Load() {
			return
		}
		if time.Since(started) >= p.ResetAfter {
			restarts, delay = 0, p.Backoff
		}
		ev := Event{ID: t.id, Exit: inst.exit, Restarts: restarts}
		if p.MaxRestarts > 0 && restarts >= p.MaxRestarts {
			ev.Err = fmt.Errorf("%s crashed %d times in a row; not restarting", t.id, restarts+1)
			on(ev)
			return
		}
		ev.Restarting, ev.Delay = true, delay
		on(ev)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if t.stopping.Load() {
			return
		}
		restarts++
		delay = min(2*delay, p.MaxBackoff)
		if _, err := inst.task.Delete(ctx); err != nil {
			t.r.log.Warn("delete crashed task", "container", t.id, "err", err)
		}
		started = time.Now()
		if err := t.start(ctx); err != nil {
			on(Event{ID: t.id, Exit: inst.exit, Restarts: restarts, Err: fmt.Errorf("restart %s: %w", t.id, err)})
			return
		}
		t.r.log.Info("serving task restarted", "container", t.id, "restarts", restarts, "pid", t.Pid())
	}
}
