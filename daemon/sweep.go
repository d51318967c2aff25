package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// sweepInterval is how often kilnd looks for containers in its namespace
// that no record wants (left by a crash between creating a container and
// recording it, or by a pipeline removed while kilnd was down).
const sweepInterval = 10 * time.Minute

// sweepContainers removes this installation's containers nobody wants once
// they were unwanted at two sweeps in a row: the interval is the grace that
// protects a container created just before its record is written. The first
// sweep runs at start, so foreign containers (another installation's, or
// ones without an identity) are reported at once; those are never removed
// here, only by `kiln gc --foreign`.
func (d *Daemon) sweepContainers(ctx context.Context) {
	suspects := map[string]bool{}
	reported := map[string]bool{}
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		suspects = d.sweepOnce(ctx, suspects, reported)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepOnce is one sweep: it removes the suspects still unwanted, records a
// container.foreign event for each foreign container not reported yet, and
// returns the next suspects.
func (d *Daemon) sweepOnce(ctx context.Context, suspects, reported map[string]bool) map[string]bool {
	own, foreign, err := d.classifyContainers(ctx)
	if err != nil {
		d.log.Debug("sweep: list containers", "err", err)
		return suspects
	}
	for _, f := range foreign {
		if reported[f.c.ID] {
			continue
		}
		reported[f.c.ID] = true
		d.log.Warn("a foreign container is in kiln's namespace; kilnd leaves it alone (kiln gc --foreign removes it)",
			"container", f.c.ID, "reason", f.why)
		// No pipeline: the name in its labels is another installation's.
		d.recordEvent(ctx, "container.foreign", "", []string{f.c.ID}, f.details())
	}
	next := map[string]bool{}
	for _, id := range own {
		if !suspects[id] {
			next[id] = true
			continue
		}
		if err := d.rt.Remove(ctx, id); err != nil {
			d.log.Warn("sweep: remove unwanted container", "container", id, "err", err)
			continue
		}
		d.log.Info("removed a container no record wants", "container", id)
		d.recordEvent(ctx, "container.removed", "", []string{id}, map[string]string{"reason": "no record wants it"})
	}
	return next
}

// foreignContainer is a container kilnd must not touch, and why.
type foreignContainer struct {
	c   runtime.Container
	why string
}

func (f foreignContainer) details() map[string]string {
	inst := f.c.Identity.Installation
	if inst == "" {
		inst = "none"
	}
	return map[string]string{"installation": inst, "digest": f.c.Identity.Digest, "kind": f.c.Kind, "pipeline": f.c.Pipeline, "reason": f.why}
}

// classifyContainers lists kiln's namespace: own are this installation's
// containers that no record wants (the sweep's suspects); foreign are those
// of another installation or none, and any under a wanted name whose
// identity is not the record's. Wanted containers of this installation are
// in neither.
func (d *Daemon) classifyContainers(ctx context.Context) (own []string, foreign []foreignContainer, err error) {
	ctrs, err := d.rt.Containers(ctx)
	if err != nil {
		return nil, nil, err
	}
	want, err := d.wantedContainers()
	if err != nil {
		return nil, nil, fmt.Errorf("read records: %w", err)
	}
	inst := d.store.InstallationID()
	for _, c := range ctrs {
		wanted, isWanted := want[c.ID]
		switch {
		case c.Identity.Installation == "":
			foreign = append(foreign, foreignContainer{c, "no installation label (made by an older or another kilnd)"})
		case c.Foreign(inst):
			foreign = append(foreign, foreignContainer{c, "installation " + c.Identity.Installation + ", not this one (" + inst + ")"})
		case isWanted && c.Identity != wanted:
			foreign = append(foreign, foreignContainer{c, "holds digest " + c.Identity.Digest + "; the record wants " + wanted.Digest})
		case !isWanted:
			own = append(own, c.ID)
		}
	}
	return own, foreign, nil
}

// foreignIDs lists the foreign containers' IDs with their installations,
// for doctor and gc.
func foreignIDs(fs []foreignContainer) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.c.ID)
	}
	return out
}

func describeForeign(fs []foreignContainer) string {
	byInst := map[string][]string{}
	for _, f := range fs {
		inst := f.c.Identity.Installation
		if inst == "" {
			inst = "none"
		}
		byInst[inst] = append(byInst[inst], f.c.ID)
	}
	var parts []string
	for _, inst := range slices.Sorted(maps.Keys(byInst)) {
		parts = append(parts, strings.Join(byInst[inst], ", ")+" (installation "+inst+")")
	}
	return strings.Join(parts, "; ")
}

// wantedContainers is every container a record says should exist, with the
// identity it must carry: this installation's ID and the record's digest.
func (d *Daemon) wantedContainers() (map[string]runtime.Identity, error) {
	want := map[string]runtime.Identity{}
	err := d.store.View(func(tx *storage.Tx) error {
		inst := tx.InstallationID()
		runs, err := tx.Runs("")
		if err != nil {
			return err
		}
		for _, r := range runs {
			if r.State == storage.RunQueued || r.State == storage.RunRunning {
				id := runtime.Identity{Installation: inst, Digest: pipeline.RunDigest(r)}
				want[runtime.ContainerID(runtime.KindTrain, inst, r.ID, id.Digest)] = id
			}
		}
		models, err := tx.Models("")
		if err != nil {
			return err
		}
		for _, m := range models {
			switch m.State {
			case storage.ModelLive, storage.ModelStandby, storage.ModelCandidate, storage.ModelEvaluating:
				id := runtime.Identity{Installation: inst, Digest: pipeline.ModelDigest(m)}
				want[runtime.ContainerID(runtime.KindServe, inst, m.ID, id.Digest)] = id
			}
		}
		return nil
	})
	return want, err
}
