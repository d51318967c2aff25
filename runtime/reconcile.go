package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// Identity is what makes a container kiln's own: the installation that
// created it (a random ID made with kiln.db) and the digest of the model or
// run it holds. Both travel as labels (LabelInstallation, LabelDigest).
type Identity struct {
	Installation string
	Digest       string
}

// Labels are the container labels that carry id.
func (id Identity) Labels() map[string]string {
	return map[string]string{LabelInstallation: id.Installation, LabelDigest: id.Digest}
}

// IdentityOf reads a container's identity from its labels; a container
// made before kiln labelled identities has an empty one.
func IdentityOf(labels map[string]string) Identity {
	return Identity{Installation: labels[LabelInstallation], Digest: labels[LabelDigest]}
}

// ErrForeign: a container that does not carry the identity its caller
// expects. kiln never serves, evaluates through, stops or deletes one on
// its own; `kiln gc --foreign` removes them.
var ErrForeign = errors.New("foreign container")

// Container is one container in kiln's namespace, as Containers lists it.
type Container struct {
	ID       string
	Kind     string // LabelKind
	Pipeline string
	Identity Identity
	Created  time.Time
}

// Foreign reports whether c belongs to another installation than
// installation (or to none: made by a kilnd that did not label identity).
func (c Container) Foreign(installation string) bool {
	return installation == "" || c.Identity.Installation != installation
}

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
	// Foreign are containers of another installation (or none), and
	// wanted IDs held by a container whose identity does not match: left
	// alone, never adopted.
	Foreign []string
}

// Reconcile makes containerd match what the caller says should exist. For
// each wanted container ID it re-attaches to the running task (log capping,
// exit and OOM watching resume from the labels) when the container carries
// the wanted identity, or reports it vanished with its exit status when
// known. Every other container of this installation is stopped and removed
// with its snapshot, once older than grace. Containers of another
// installation, without an identity, or under a wanted name with another
// identity are reported Foreign and never touched; neither are containers
// without kiln's labels.
func (r *Runtime) Reconcile(ctx context.Context, installation string, want map[string]Identity, grace time.Duration) (ReconcileReport, error) {
	var rep ReconcileReport
	ctrs, err := r.c.Containers(ctx, `labels."`+LabelKind+`"`)
	if err != nil {
		return rep, fmt.Errorf("list containers: %w", err)
	}
	present := map[string]client.Container{}
	for _, c := range ctrs {
		present[c.ID()] = c
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		ctr, ok := present[id]
		if !ok {
			rep.Vanished = append(rep.Vanished, Vanished{ID: id, Reason: "container not found in containerd (the machine rebooted, or it was removed)"})
			continue
		}
		labels, err := ctr.Labels(ctx)
		if err != nil {
			return rep, fmt.Errorf("labels of %s: %w", id, err)
		}
		if got := IdentityOf(labels); got != want[id] {
			rep.Foreign = append(rep.Foreign, id)
			rep.Vanished = append(rep.Vanished, Vanished{ID: id, Reason: foreignReason(id, got, want[id])})
			continue
		}
		t, v, err := r.adopt(ctx, ctr, labels)
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
		if _, ok := want[id]; ok {
			continue
		}
		info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			return rep, fmt.Errorf("info of %s: %w", id, err)
		}
		if (Container{Identity: IdentityOf(info.Labels)}).Foreign(installation) {
			rep.Foreign = append(rep.Foreign, id)
			continue
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
	slices.Sort(rep.Foreign)
	r.log.Info("reconciled containers", "running", len(rep.Running), "vanished", len(rep.Vanished),
		"removed", len(rep.Removed), "kept_for_grace", len(rep.Kept), "foreign", len(rep.Foreign))
	return rep, nil
}

// foreignReason says why a container under a wanted name is not adopted.
func foreignReason(id string, got, want Identity) string {
	switch {
	case got.Installation == "":
		return fmt.Sprintf("container %s carries no installation label (made by another or an older kilnd); kilnd is installation %s", id, want.Installation)
	case got.Installation != want.Installation:
		return fmt.Sprintf("container %s belongs to installation %s; kilnd is installation %s", id, got.Installation, want.Installation)
	}
	return fmt.Sprintf("container %s holds digest %s; the record wants %s", id, got.Digest, want.Digest)
}

// adopt re-attaches to ctr's running task, or collects a dead one.
func (r *Runtime) adopt(ctx context.Context, ctr client.Container, labels map[string]string) (*Task, Vanished, error) {
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
// whole set), only when it carries want: a container under the name with
// another identity gets ErrForeign and is left exactly as it is.
func (r *Runtime) Adopt(ctx context.Context, id string, want Identity) (*Task, error) {
	ctr, labels, err := r.loadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	if got := IdentityOf(labels); got != want || want.Installation == "" {
		return nil, fmt.Errorf("%w: %s", ErrForeign, foreignReason(id, got, want))
	}
	t, v, err := r.adopt(ctx, ctr, labels)
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
	// As Task.Delete does: the id's folders go back to root before the id
	// (held by this container's label) is free for another container.
	if labels, err := ctr.Labels(ctx); err == nil {
		if err := reclaim(ctr.ID(), labels); err != nil {
			r.log.Warn("folders of a removed container stay with its workload id", "container", ctr.ID(), "err", err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", ctr.ID(), err)
	}
	return nil
}

// Containers lists kiln's containers (those with LabelKind), with their
// identity, ordered by ID. Callers sort own from foreign with
// Container.Foreign.
func (r *Runtime) Containers(ctx context.Context) ([]Container, error) {
	ctrs, err := r.c.Containers(ctx, `labels."`+LabelKind+`"`)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Container, 0, len(ctrs))
	for _, c := range ctrs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("info of %s: %w", c.ID(), err)
		}
		out = append(out, Container{ID: c.ID(), Kind: info.Labels[LabelKind], Pipeline: info.Labels[LabelPipeline],
			Identity: IdentityOf(info.Labels), Created: info.CreatedAt})
	}
	slices.SortFunc(out, func(a, b Container) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
