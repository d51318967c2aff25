package daemon

import (
	"context"
	"errors"
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
}

// Lease places count GPUs with minFree bytes free for run and records the
// leases; it returns their UUIDs and CDI names, or why they cannot be had
// now.
func (l *gpuLeaser) Lease(ctx context.Context, pipe, run string, count int, minFree int64) ([]pipeline.LeasedGPU, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
