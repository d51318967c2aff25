package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// DefaultGrace is how long Stop waits after SIGTERM before SIGKILL.
const DefaultGrace = 10 * time.Second

// LabelGrace records a training task's grace period (a Go duration).
const LabelGrace = "io.kiln.grace"

// Exit is how a task ended.
type Exit struct {
	Code uint32    `json:"code"`
	At   time.Time `json:"at"`
	// OOM: the kernel's OOM killer ended it (the code is then 137).
	OOM bool `json:"oom,omitempty"`
	// TimedOut: kiln stopped it at its deadline.
	TimedOut bool `json:"timed_out,omitempty"`
	// Stopped: a caller's Stop (a cancel) ended it.
	Stopped bool `json:"stopped,omitempty"`
	// Failure is /opt/ml/output/failure of a training task (first 4 KiB).
	Failure string `json:"failure,omitempty"`
}

// OK is a clean, unforced exit 0.
func (e Exit) OK() bool { return e.Code == 0 && !e.OOM && !e.TimedOut && !e.Stopped }

// Reason is a one-line account of a non-OK exit, for a run record.
func (e Exit) Reason() string {
	switch {
	case e.OOM:
		return "killed by the OOM killer (memory limit), exit 137"
	case e.TimedOut:
		return fmt.Sprintf("stopped at its timeout, exit %d", e.Code)
	case e.Stopped:
		return fmt.Sprintf("stopped (cancelled), exit %d", e.Code)
	case e.Failure != "":
		return fmt.Sprintf("exit %d: %s", e.Code, firstLine(e.Failure))
	case e.Code != 0:
		return fmt.Sprintf("exit %d", e.Code)
	}
	return "exit 0"
}

// Task is a handle on one kiln container and its running task. Handles are
// cheap; dropping one (or Detach) leaves the task running.
type Task struct {
	r      *Runtime
	id     string
	kind   string
	labels map[string]string
	ctr    client.Container

	mu   sync.Mutex
	cur  *instance
	life context.Context // ends on Detach/Delete: watchers and log capping
	stop context.CancelFunc
	// capped is closed once log capping has made its last check after
	// life ended: Delete and Detach wait for it, so the log pair is within
	// its cap when they return.
	capped chan struct{}

	stopping atomic.Bool
	timedOut atomic.Bool
}

// instance is one run of the container's task; a restart makes a new one.
type instance struct {
	task client.Task
	pid  uint32
	done chan struct{}
	exit Exit
	oom  atomic.Bool
}

// ID is the container ID.
func (t *Task) ID() string { return t.id }

// Kind is KindTrain or KindServe.
func (t *Task) Kind() string { return t.kind }

// Labels are the container's labels (do not modify).
func (t *Task) Labels() map[string]string { return t.labels }

// LogFile is where the task's output goes.
func (t *Task) LogFile() string { return t.labels[LabelLog] }

// Pid is the host PID of the task's current init process.
func (t *Task) Pid() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur.pid
}

func (t *Task) instance() *instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// newHandle wraps a container; the task is attached or started separately.
func (r *Runtime) newHandle(ctx context.Context, ctr client.Container, labels map[string]string) *Task {
	// WithoutCancel: the handle outlives the call that makes it; its life ends at Detach or
	// Delete, not when the caller's ctx does.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	t := &Task{r: r, id: ctr.ID(), kind: labels[LabelKind], labels: labels, ctr: ctr, life: life, stop: stop, capped: make(chan struct{})}
	if limit, err := strconv.ParseInt(labels[LabelLogLimit], 10, 64); err == nil && limit > 0 && labels[LabelLog] != "" {
		go func() {
			defer close(t.capped)
			capLog(life, labels[LabelLog], limit, r.log.With("container", t.id))
		}()
	} else {
		close(t.capped)
	}
	return t
}

// start creates and starts a new task instance with output to the log file.
func (t *Task) start(ctx context.Context) error {
	logFile := t.labels[LabelLog]
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return fmt.Errorf("log folder for %s: %w", t.id, err)
	}
	task, err := t.ctr.NewTask(ctx, cio.LogFile(logFile))
	if err != nil {
		return fmt.Errorf("create task %s: %w", t.id, err)
	}
	inst, err := t.watch(task) //nolint:contextcheck // the watch lives as long as the handle (t.life), not this call's ctx
	if err != nil {
		_, _ = task.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return err
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return fmt.Errorf("start task %s: %w", t.id, err)
	}
	t.mu.Lock()
	t.cur = inst
	t.mu.Unlock()
	return nil
}

// attach re-attaches to the container's existing task.
func (t *Task) attach(ctx context.Context) error {
	task, err := t.ctr.Task(ctx, nil)
	if err != nil {
		return err
	}
	inst, err := t.watch(task) //nolint:contextcheck // the watch lives as long as the handle (t.life), not this call's ctx
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.cur = inst
	t.mu.Unlock()
	return nil
}

// watch subscribes to OOM events and waits for the exit of task, before it
// starts (a Wait after the exit would still answer, but an OOM event would be
// lost).
func (t *Task) watch(task client.Task) (*instance, error) {
	inst := &instance{task: task, pid: task.Pid(), done: make(chan struct{})}
	subCtx, unsubscribe := context.WithCancel(t.life)
	go t.watchOOM(subCtx, inst)
	exitCh, err := task.Wait(t.life)
	if err != nil {
		unsubscribe()
		return nil, fmt.Errorf("wait for task %s: %w", t.id, err)
	}
	go func() {
		defer close(inst.done)
		defer unsubscribe()
		code, at, ok := t.waitExit(task, exitCh)
		if !ok {
			// Detached: nobody waits any more.
			return
		}
		if code == 137 && !inst.oom.Load() {
			// The OOM event and the exit race; give the event a moment,
			// then ask the cgroup (it lives until the task is deleted).
			select {
			case <-time.After(300 * time.Millisecond):
			case <-t.life.Done():
			}
			if !inst.oom.Load() {
				mctx, cancel := context.WithTimeout(t.life, 2*time.Second)
				if m, err := t.r.taskMetrics(mctx, task); err == nil && m.OOMKills > 0 {
					inst.oom.Store(true)
				}
				cancel()
			}
		}
		inst.exit = Exit{Code: code, At: at, OOM: inst.oom.Load(), Stopped: t.stopping.Load(), TimedOut: t.timedOut.Load()}
		if inst.exit.TimedOut {
			inst.exit.Stopped = false
		}
		if t.kind == KindTrain {
			inst.exit.Failure = readFailure(t.labels[LabelOutput])
		}
	}()
	return inst, nil
}

// watchOOM marks inst when the kernel's OOM killer hits the container. The
// event stream breaks when containerd restarts; it is opened again (with
// backoff) until ctx ends, and Wait's cgroup check covers an event missed
// in between.
func (t *Task) watchOOM(ctx context.Context, inst *instance) {
	delay := 250 * time.Millisecond
	for ctx.Err() == nil {
		events, errs := t.r.c.Subscribe(ctx, `topic=="/tasks/oom"`)
	recv:
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				if ctx.Err() == nil {
					t.r.log.Debug("oom event stream broke; subscribing again", "container", t.id, "err", err, "in", delay)
				}
				break recv
			case env := <-events:
				delay = 250 * time.Millisecond
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if oom, ok := ev.(*apievents.TaskOOM); ok && oom.ContainerID == t.id {
					inst.oom.Store(true)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// waitExit returns the task's exit code and time once it exits; ok is false
// when the handle was detached first. A wait that fails is not an exit:
// when containerd stops, restarts or crashes, the task runs on under its
// shim and the client's Wait answers with an error and exit 255. That is
// retried with backoff until containerd answers again, so a containerd
// restart never fails a run or restarts a server. Only containerd's "not
// found" (the task is gone and its status with it) ends the wait with 255.
func (t *Task) waitExit(task client.Task, exitCh <-chan client.ExitStatus) (code uint32, at time.Time, ok bool) {
	delay := 250 * time.Millisecond
	for {
		st, open := <-exitCh
		if !open || t.life.Err() != nil {
			return 0, time.Time{}, false
		}
		code, at, err := st.Result()
		if err == nil {
			return code, at, true
		}
		if errdefs.IsNotFound(err) {
			t.r.log.Warn("task vanished from containerd; its exit status is unknown", "container", t.id, "err", err)
			return code, at, true
		}
		t.r.log.Warn("lost the wait on a task (containerd unreachable?); waiting again", "container", t.id, "err", err, "in", delay)
		select {
		case <-t.life.Done():
			return 0, time.Time{}, false
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		// Wait never fails at the call; its error arrives on the channel.
		exitCh, _ = task.Wait(t.life)
	}
}

// Exited returns a channel closed when the current task instance exits.
func (t *Task) Exited() <-chan struct{} { return t.instance().done }

// Wait blocks until the task exits and returns how. A training task past its
// deadline is stopped (SIGTERM, then SIGKILL after its grace) and reported
// TimedOut. Wait returns ctx's error when ctx ends first; the task runs on.
func (t *Task) Wait(ctx context.Context) (Exit, error) {
	inst := t.instance()
	var deadline <-chan time.Time
	if d, err := time.Parse(time.RFC3339Nano, t.labels[LabelDeadline]); err == nil {
		timer := time.NewTimer(time.Until(d))
		defer timer.Stop()
		deadline = timer.C
	}
	for {
		select {
		case <-inst.done:
			if t.life.Err() != nil && inst.exit.At.IsZero() {
				return Exit{}, fmt.Errorf("task %s: handle detached", t.id)
			}
			return inst.exit, nil
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-deadline:
			deadline = nil
			t.timedOut.Store(true)
			grace := DefaultGrace
			if g, err := time.ParseDuration(t.labels[LabelGrace]); err == nil {
				grace = g
			}
			t.r.log.Warn("task past its deadline; stopping", "container", t.id, "grace", grace)
			go func() { _, _ = t.stopInstance(t.life, inst, grace) }()
		}
	}
}

// Stop ends the task: SIGTERM, then SIGKILL to every process of the
// container once grace has passed (DefaultGrace when zero). The exit is
// reported Stopped. Stopping a task that already exited returns its exit.
func (t *Task) Stop(ctx context.Context, grace time.Duration) (Exit, error) {
	t.stopping.Store(true)
	return t.stopInstance(ctx, t.instance(), grace)
}

func (t *Task) stopInstance(ctx context.Context, inst *instance, grace time.Duration) (Exit, error) {
	if grace <= 0 {
		grace = DefaultGrace
	}
	select {
	case <-inst.done:
		return inst.exit, nil
	default:
	}
	if err := inst.task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return Exit{}, fmt.Errorf("SIGTERM %s: %w", t.id, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-inst.done:
		return inst.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	case <-timer.C:
	}
	t.r.log.Warn("task ignored SIGTERM; SIGKILL", "container", t.id, "grace", grace)
	if err := inst.task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return Exit{}, fmt.Errorf("SIGKILL %s: %w", t.id, err)
	}
	select {
	case <-inst.done:
		return inst.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Delete removes the container, its task (which must have exited; Stop it
// first) and its snapshot. The log file and workspace stay: they are the
// caller's.
func (t *Task) Delete(ctx context.Context) error {
	if inst := t.instance(); inst != nil {
		select {
		case <-inst.done:
		default:
			if st, err := inst.task.Status(ctx); err == nil && st.Status != client.Stopped {
				return fmt.Errorf("delete %s: its task is %s; stop it first", t.id, st.Status)
			}
		}
		if _, err := inst.task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", t.id, err)
		}
	}
	t.stop()
	<-t.capped
	// Its processes are gone and it still holds its id: hand the id's
	// folders back to root before the id is free for another container.
	if err := t.reclaim(); err != nil {
		t.r.log.Warn("folders of a deleted container stay with its workload id", "container", t.id, "err", err)
	}
	if err := t.ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", t.id, err)
	}
	return nil
}

// Detach stops watching the task and capping its log; the task runs on.
func (t *Task) Detach() {
	t.stop()
	<-t.capped
}

func readFailure(outputDir string) string {
	if outputDir == "" {
		return ""
	}
	f, err := os.Open(filepath.Join(outputDir, "failure"))
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }() // opened read-only
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	return string(b[:n])
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

// loadTask loads a kiln container by ID with its labels.
func (r *Runtime) loadContainer(ctx context.Context, id string) (client.Container, map[string]string, error) {
	ctr, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, nil, fmt.Errorf("%w: %s in containerd namespace %q", ErrNotFound, id, r.namespace)
		}
		return nil, nil, fmt.Errorf("load container %s: %w", id, err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("labels of %s: %w", id, err)
	}
	if labels[LabelKind] == "" {
		return nil, nil, fmt.Errorf("%w: %s has no %s label; not kiln's", ErrNotFound, id, LabelKind)
	}
	return ctr, labels, nil
}

// launch creates the container and starts its task; a task that fails to
// start takes its container with it. what names the kind in the log.
// Unless the spec relaxes RelaxRoot, the container runs under a workload id
// of its own (createWithID); prepare hands the container's host folders to
// that uid/gid before the container exists (0, 0 when relaxed).
func (r *Runtime) launch(ctx context.Context, what string, c *Common, img client.Image, digest string, labels map[string]string,
	specOpts []oci.SpecOpts, prepare func(uid, gid int) error) (*Task, error) {
	var ctr client.Container
	create := func(extra ...oci.SpecOpts) (containers.Container, error) {
		var err error
		ctr, err = r.createContainer(ctx, c, img, labels, append(slices.Clone(specOpts), extra...))
		if err != nil {
			return containers.Container{}, err
		}
		return ctr.Info(ctx, client.WithoutRefreshedMetadata)
	}
	uid := uint32(0)
	if c.relaxed(RelaxRoot) {
		if err := prepare(0, 0); err != nil {
			return nil, err
		}
		if _, err := create(); err != nil {
			return nil, err
		}
	} else {
		var err error
		uid, err = r.createWithID(ctx, c, labels, prepare, func() (containers.Container, error) {
			id, _ := strconv.ParseUint(labels[LabelUID], 10, 32)
			// Last, so neither the image's USER nor its /etc/group adds
			// an id: the process has exactly this uid, gid and group.
			return create(oci.WithUIDGID(uint32(id), uint32(id)))
		})
		if err != nil {
			return nil, err
		}
	}
	t := r.newHandle(ctx, ctr, labels)
	if err := t.start(ctx); err != nil {
		_ = t.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	// The pipeline and its run or model as attributes, so the journal's
	// PIPELINE, RUN and MODEL fields find this line too.
	attrs := []any{"container", c.ID, "image", digest, "pid", t.Pid(), "uid", uid, "pipeline", labels[LabelPipeline]}
	for _, k := range []string{LabelRun, LabelModel} {
		if v := labels[k]; v != "" {
			attrs = append(attrs, strings.TrimPrefix(k, "io.kiln."), v)
		}
	}
	r.log.Info(what+" started", attrs...)
	return t, nil
}

// createContainer makes a labelled container for img with spec options.
// The snapshot is writable even when the root filesystem is read-only: runc
// must create mount points (channels, CDI mounts) before it remounts the
// root read-only, which a read-only snapshot view would refuse.
func (r *Runtime) createContainer(ctx context.Context, c *Common, img client.Image, labels map[string]string, specOpts []oci.SpecOpts) (client.Container, error) {
	snap := client.WithNewSnapshot(c.ID, img)
	ctr, err := r.c.NewContainer(ctx, c.ID,
		client.WithImage(img),
		client.WithSnapshotter(r.snapshotter),
		snap,
		client.WithNewSpec(specOpts...),
		client.WithContainerLabels(labels),
	)
	if err != nil {
		// A failed create may leave the snapshot behind.
		_ = r.c.SnapshotService(r.snapshotter).Remove(context.WithoutCancel(ctx), c.ID)
		if errors.Is(err, ErrCDIDevice) {
			return nil, fmt.Errorf("create container %s: %w", c.ID, err)
		}
		if errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create container %s: it already exists (Reconcile adopts it, or Delete it): %w", c.ID, err)
		}
		return nil, fmt.Errorf("create container %s: %w", c.ID, err)
	}
	return ctr, nil
}

// Spec is the OCI runtime spec the task runs with (for diagnostics and for
// the benchmark's runc baseline, which runs the very same bundle).
func (t *Task) Spec(ctx context.Context) (*oci.Spec, error) {
	return t.ctr.Spec(ctx)
}
