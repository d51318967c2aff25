package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// Vanished is a wanted task that is no longer running.
type Vanished struct {
	ID string
	// Exit is how it ended, when containerd still knew (the container and
	// its stopped task existed); nil when the container itself was gone.
	Exit   *Exit
	Reason string
}

// ReconcileReport is what Reconcile found and did.
type ReconcileReport struct {
	// Running are the re-attached handles of wanted tasks still running.
	Running []*Task
	// Vanished wanted tasks; their containers have been removed.
	Vanished []Vanished
	// Removed are unwanted kiln containers deleted (older than grace).
	Removed []string
	// Kept are unwanted kiln containers spared because they are younger
	// than grace (a kilnd that just created them may not have recorded
	// them yet); a later Reconcile removes them.
	Kept []string
}

// Reconcile makes containerd match what the caller says should exist. For
// each wanted container ID it re-attaches to the running task (log capping,
// exit and OOM watching resume from the labels), or reports it vanished
// with its exit status when known. Every other container carrying kiln's
// labels is stopped and removed with its snapshot, once older than grace.
// It never touches containers without kiln's labels.
func (r *Runtime) Reconcile(ctx context.Context, want []string, grace time.Duration) (ReconcileReport, error) {
	var rep ReconcileReport
	ctrs, err := r.c.Containers(ctx, `labels."`+LabelKind+`"`)
	if err != nil {
		return rep, fmt.Errorf("list containers: %w", err)
	}
	present := map[string]client.Container{}
	for _, c := range ctrs {
		present[c.ID()] = c
	}
	for _, id := range want {
		ctr, ok := present[id]
		if !ok {
			rep.Vanished = append(rep.Vanished, Vanished{ID: id, Reason: "container not found in containerd (the machine rebooted, or it was removed)"})
			continue
		}
		t, v, err := r.adopt(ctx, ctr)
		if err != nil {
			return rep, err
		}
		if t != nil {
			rep.Running = append(rep.Running, t)
		} else {
			rep.Vanished = append(rep.Vanished, v)
		}
	}
	for id, ctr := range present {
		if slices.Contains(want, id) {
			continue
		}
		info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			return rep, fmt.Errorf("info of %s: %w", id, err)
		}
		if time.Since(info.CreatedAt) < grace {
			rep.Kept = append(rep.Kept, id)
			continue
		}
		if err := r.remove(ctx, ctr); err != nil {
			return rep, err
		}
		rep.Removed = append(rep.Removed, id)
	}
	slices.Sort(rep.Removed)
	slices.Sort(rep.Kept)
	r.log.Info("reconciled containers", "running", len(rep.Running), "vanished", len(rep.Vanished),
		"removed", len(rep.Removed), "kept_for_grace", len(rep.Kept))
	return rep, nil
}

// adopt re-attaches to ctr's running task, or collects a dead one.
func (r *Runtime) adopt(ctx context.Context, ctr client.Container) (*Task, Vanished, error) {
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return nil, Vanished{}, fmt.Errorf("labels of %s: %w", ctr.ID(), err)
	}
	t := r.newHandle(ctx, ctr, labels)
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		_ = t.Delete(ctx)
		return nil, Vanished{ID: ctr.ID(), Reason: "its task is gone (containerd or the machine restarted)"}, nil
	}
	if err != nil {
		t.Detach()
		return nil, Vanished{}, fmt.Errorf("task of %s: %w", ctr.ID(), err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		t.Detach()
		return nil, Vanished{}, fmt.Errorf("status of %s: %w", ctr.ID(), err)
	}
	if st.Status == client.Stopped {
		exit := Exit{Code: st.ExitStatus, At: st.ExitTime}
		if exit.Code == 137 {
			if m, err := r.taskMetrics(ctx, task); err == nil && m.OOMKills > 0 {
				exit.OOM = true
			}
		}
		if labels[LabelKind] == KindTrain {
			exit.Failure = readFailure(labels[LabelOutput])
		}
		if err := t.attach(ctx); err == nil {
			_ = t.Delete(ctx)
		} else {
			t.Detach()
		}
		return nil, Vanished{ID: ctr.ID(), Exit: &exit, Reason: "exited while kilnd was away: " + exit.Reason()}, nil
	}
	if err := t.attach(ctx); err != nil {
		t.Detach()
		return nil, Vanished{}, fmt.Errorf("re-attach %s: %w", ctr.ID(), err)
	}
	return t, Vanished{}, nil
}

// Adopt re-attaches to one kiln container by ID (Reconcile does it for a
// whole set).
func (r *Runtime) Adopt(ctx context.Context, id string) (*Task, error) {
	ctr, _, err := r.loadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	t, v, err := r.adopt(ctx, ctr)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, id, v.Reason)
	}
	return t, nil
}

// Remove stops (SIGKILL) and deletes a kiln container with its snapshot.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	ctr, _, err := r.loadContainer(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return r.remove(ctx, ctr)
}

func (r *Runtime) remove(ctx context.Context, ctr client.Container) error {
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("kill and delete task %s: %w", ctr.ID(), err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", ctr.ID(), err)
	}
	return nil
}

// Containers lists the IDs of kiln's containers.
func (r *Runtime) Containers(ctx context.Context) ([]string, error) {
	ctrs, err := r.c.Containers(ctx, `labels."`+LabelKind+`"`)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, 0, len(ctrs))
	for _, c := range ctrs {
		ids = append(ids, c.ID())
	}
	slices.Sort(ids)
	return ids, nil
}
