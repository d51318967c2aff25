package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/storage"
)

// gpuState reads the persisted leases and cordons in the shapes gpu.Place
// and gpuReport take.
func (d *Daemon) gpuState() (leases []gpu.Lease, cordoned map[string]string, err error) {
	cordoned = map[string]string{}
	err = d.store.View(func(tx *storage.Tx) error {
		ls, err := tx.Leases()
		if err != nil {
			return err
		}
		for _, l := range ls {
			leases = append(leases, gpu.Lease{GPU: l.GPU, Holder: l.Run})
		}
		cs, err := tx.Cordons()
		for _, c := range cs {
			cordoned[c.GPU] = c.Reason
		}
		return err
	})
	return leases, cordoned, err
}

func (d *Daemon) handleGPU(w http.ResponseWriter, _ *http.Request) {
	leases, cordoned, err := d.gpuState()
	if err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, "read leases and cordons: "+err.Error())
		return
	}
	localapi.WriteJSON(w, http.StatusOK, gpuReport(d.gpus.Snapshot(), leases, cordoned))
}

// resolveGPU finds a GPU by index ("0") or UUID.
func (d *Daemon) resolveGPU(ref string) (gpu.Device, error) {
	s := d.gpus.Snapshot()
	if !s.Available {
		return gpu.Device{}, fmt.Errorf("no GPU %q: %s", ref, s.Reason)
	}
	for _, dev := range s.Devices {
		if dev.UUID == ref || strconv.Itoa(dev.Index) == ref {
			return dev, nil
		}
	}
	return gpu.Device{}, fmt.Errorf("no GPU %q (want an index or UUID from `kiln gpu`)", ref)
}

func (d *Daemon) handleCordon(w http.ResponseWriter, r *http.Request) {
	dev, err := d.resolveGPU(r.PathValue("gpu"))
	if err != nil {
		localapi.WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	var req api.CordonRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		localapi.WriteError(w, http.StatusBadRequest, "cordon request body: "+err.Error())
		return
	}
	if req.Reason == "" {
		req.Reason = "cordoned by an operator"
	}
	actor := actorFrom(r.Context())
	err = d.store.Update(r.Context(), func(tx *storage.Tx) error {
		if err := tx.PutCordon(storage.Cordon{GPU: dev.UUID, Reason: req.Reason, Actor: actor}); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: actor, Kind: "gpu.cordoned", Refs: []string{dev.UUID},
			Details: map[string]string{"reason": req.Reason, "index": strconv.Itoa(dev.Index)}})
		return err
	})
	if err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.handleGPU(w, r)
}

func (d *Daemon) handleUncordon(w http.ResponseWriter, r *http.Request) {
	dev, err := d.resolveGPU(r.PathValue("gpu"))
	if err != nil {
		localapi.WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	actor := actorFrom(r.Context())
	err = d.store.Update(r.Context(), func(tx *storage.Tx) error {
		if err := tx.DeleteCordon(dev.UUID); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: actor, Kind: "gpu.uncordoned", Refs: []string{dev.UUID},
			Details: map[string]string{"index": strconv.Itoa(dev.Index)}})
		return err
	})
	switch {
	case errors.Is(err, storage.ErrNotFound):
		localapi.WriteError(w, http.StatusConflict, fmt.Sprintf("gpu%d (%s) is not cordoned", dev.Index, dev.UUID))
		return
	case err != nil:
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !dev.Health.Healthy {
		d.log.Warn("gpu uncordoned while NVML still reports it unhealthy; placement keeps skipping it",
			"gpu_uuid", dev.UUID, "reason", dev.Health.Reason)
	}
	d.handleGPU(w, r)
}

// cordonFaultyGPU records, in one transaction, the cordon, the failure of
// the run that held the GPU (its lease released), and the events.
func (d *Daemon) cordonFaultyGPU(ctx context.Context, ev gpu.HealthEvent) error {
	return d.store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutCordon(storage.Cordon{GPU: ev.UUID, Reason: ev.Reason, Actor: actorKilnd}); err != nil {
			return err
		}
		details := map[string]string{"reason": ev.Reason, "index": strconv.Itoa(ev.Index)}
		if ev.XID != 0 {
			details["xid"] = strconv.FormatUint(ev.XID, 10)
		}
		if _, err := tx.Append(storage.Event{Actor: actorKilnd, Kind: "gpu.unhealthy", Refs: []string{ev.UUID}, Details: details}); err != nil {
			return err
		}
		leases, err := tx.Leases()
		if err != nil {
			return err
		}
		for _, l := range leases {
			if l.GPU != ev.UUID {
				continue
			}
			run, err := tx.Run(l.Run)
			if err != nil {
				return err
			}
			if run.State == storage.RunQueued || run.State == storage.RunRunning {
				run.State = storage.RunFailed
				run.Reason = fmt.Sprintf("GPU %s failed: %s", ev.UUID, ev.Reason)
				run.Finished = ev.Time
				if err := tx.PutRun(run); err != nil {
					return err
				}
				if _, err := tx.Append(storage.Event{Actor: actorKilnd, Kind: "run.failed", Pipeline: run.Pipeline,
					Refs: []string{run.ID, ev.UUID}, Details: map[string]string{"reason": run.Reason}}); err != nil {
					return err
				}
			}
			if err := tx.ReleaseLease(l.GPU); err != nil {
				return err
			}
		}
		return nil
	})
}
