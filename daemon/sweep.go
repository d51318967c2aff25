package daemon

import (
	"context"
	"time"

	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// sweepInterval is how often kilnd looks for containers in its namespace
// that no record wants (left by a crash between creating a container and
// recording it, or by a pipeline removed while kilnd was down).
const sweepInterval = 10 * time.Minute

// sweepContainers removes kiln containers nobody wants once they were
// unwanted at two sweeps in a row: the interval is the grace that protects a
// container created just before its record is written.
func (d *Daemon) sweepContainers(ctx context.Context) {
	suspects := map[string]bool{}
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids, err := d.rt.Containers(ctx)
		if err != nil {
			d.log.Debug("sweep: list containers", "err", err)
			continue
		}
		want, err := d.wantedContainers()
		if err != nil {
			d.log.Warn("sweep: read records", "err", err)
			continue
		}
		next := map[string]bool{}
		for _, id := range ids {
			if want[id] {
				continue
			}
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
		suspects = next
	}
}

// wantedContainers is every container a record says should exist.
func (d *Daemon) wantedContainers() (map[string]bool, error) {
	want := map[string]bool{}
	err := d.store.View(func(tx *storage.Tx) error {
		runs, err := tx.Runs("")
		if err != nil {
			return err
		}
		for _, r := range runs {
			if r.State == storage.RunQueued || r.State == storage.RunRunning {
				want[runtime.ContainerID(runtime.KindTrain, r.ID)] = true
			}
		}
		models, err := tx.Models("")
		if err != nil {
			return err
		}
		for _, m := range models {
			switch m.State {
			case storage.ModelLive, storage.ModelStandby, storage.ModelCandidate, storage.ModelEvaluating:
				want[runtime.ContainerID(runtime.KindServe, m.ID)] = true
			}
		}
		return nil
	})
	return want, err
}
