package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/storage"
)

// gpuLeaser places runs on GPUs and persists the leases, so they survive a
// restart and two runs never share a GPU. It is the pipeline package's GPUs.
type gpuLeaser struct {
	mu    sync.Mutex // placement and the lease write are one step
	gpus  *gpu.Manager
	store *storage.Store
	// waiting are the runs whose last Lease was refused, for kiln status.
	waiting map[string]bool
}

// Lease places count GPUs with minFree bytes free for run and records the
// leases; it returns their UUIDs and CDI names, or why they cannot be had
// now.
func (l *gpuLeaser) Lease(ctx context.Context, pipe, run string, count int, minFree int64) ([]pipeline.LeasedGPU, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	leased, err := l.lease(ctx, pipe, run, count, minFree)
	if err != nil {
		if l.waiting == nil {
			l.waiting = map[string]bool{}
		}
		l.waiting[run] = true
	} else {
		delete(l.waiting, run)
	}
	return leased, err
}

// Waiting are the runs refused a GPU at their last try, sorted; a run that
// ended since may be among them (callers check its record).
func (l *gpuLeaser) Waiting() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.waiting {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// noGPUReason is why a run that needs GPUs waits on a machine where kilnd
// found none: NVML is read once at start, so nothing changes until a driver
// and GPU are installed and kilnd restarted. why is the inventory's reason.
func noGPUReason(req gpu.Request, why string) string {
	if why == "" {
		why = gpu.ReasonNoDriver
	}
	return fmt.Sprintf("need %s, but this machine has no NVIDIA GPU kilnd can use (%s): "+
		"the run waits until a GPU and its driver are installed and kilnd is restarted; set train.gpus: 0 to train on the CPU", req, why)
}

func (l *gpuLeaser) lease(ctx context.Context, pipe, run string, count int, minFree int64) ([]pipeline.LeasedGPU, error) {
	var leases []gpu.Lease
	cordoned := map[string]string{}
	err := l.store.View(func(tx *storage.Tx) error {
		ls, err := tx.Leases()
		for _, x := range ls {
			leases = append(leases, gpu.Lease{GPU: x.GPU, Holder: x.Run})
		}
		if err != nil {
			return err
		}
		cs, err := tx.Cordons()
		for _, c := range cs {
			cordoned[c.GPU] = c.Reason
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	snap := l.gpus.Snapshot()
	req := gpu.Request{Count: count}
	if minFree > 0 {
		req.MinFree = uint64(minFree)
	}
	if !snap.Available && count > 0 {
		return nil, errors.New(noGPUReason(req, snap.Reason))
	}
	uuids, err := gpu.Place(snap, leases, cordoned, req)
	if err != nil {
		return nil, err
	}
	err = l.store.Update(ctx, func(tx *storage.Tx) error {
		for _, u := range uuids {
			if err := tx.PutLease(storage.Lease{GPU: u, Run: run, Pipeline: pipe}); err != nil {
				return err
			}
		}
		_, err := tx.Append(storage.Event{Actor: actorKilnd, Kind: "gpu.leased", Pipeline: pipe, Refs: append([]string{run}, uuids...)})
		return err
	})
	if err != nil {
		return nil, err
	}
	leased := make([]pipeline.LeasedGPU, 0, len(uuids))
	for _, u := range uuids {
		for _, d := range snap.Devices {
			if d.UUID == u {
				leased = append(leased, pipeline.LeasedGPU{UUID: u, CDIName: d.CDIName()})
			}
		}
	}
	if len(leased) != len(uuids) {
		return nil, errors.New("placed GPUs vanished from the inventory")
	}
	return leased, nil
}

// Release drops every lease run holds.
func (l *gpuLeaser) Release(ctx context.Context, run string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.waiting, run)
	return l.store.Update(ctx, func(tx *storage.Tx) error {
		ls, err := tx.Leases()
		if err != nil {
			return err
		}
		for _, x := range ls {
			if x.Run == run {
				if err := tx.ReleaseLease(x.GPU); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// gpuWaitingStatus is kiln status's word on runs queued for a GPU
// ("1 run waiting for a GPU: digits/r3 (kiln runs -p digits says why)"),
// or "" when none is. Runs that ended since their last try are left out.
func (d *Daemon) gpuWaitingStatus() string {
	ids := d.leaser.Waiting()
	if len(ids) == 0 {
		return ""
	}
	var waiting []string
	pipes := map[string]bool{}
	err := d.store.View(func(tx *storage.Tx) error {
		for _, id := range ids {
			r, err := tx.Run(id)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if r.State == storage.RunQueued {
				waiting = append(waiting, id)
				pipes[r.Pipeline] = true
			}
		}
		return nil
	})
	if err != nil || len(waiting) == 0 {
		return ""
	}
	see := "kiln runs says why"
	if len(pipes) == 1 {
		for p := range pipes {
			see = "kiln runs -p " + p + " says why"
		}
	}
	return fmt.Sprintf("%s waiting for a GPU: %s (%s)", plural(len(waiting), "run"), strings.Join(waiting, ", "), see)
}
