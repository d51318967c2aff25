package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/serve"
	"github.com/kiln-edge/kiln/storage"
)

// The prediction logs live in StateDir/predictions/<pipeline>/ (layout in
// daemon/serve's package doc). Endpoints write them; this file purges them,
// applies their retention at GC and streams their backup.

func predLogDir(p config.Paths) string { return filepath.Join(p.StateDir, "predictions") }

// logPolicy is what a spec's monitor.log asks of the endpoint.
func logPolicy(l config.MonitorLog) serve.LogPolicy {
	pol := serve.LogPolicy{Keep: l.Keep.Duration.Duration, MaxBytes: int64(l.MaxSize)}
	switch f := l.InputFraction(); {
	case f <= 0:
		pol.Inputs.None = true
	case f < 1:
		pol.Inputs.Sample = f
	}
	return pol
}

// handlePredictionsPurge is `kiln predictions purge P --before T | --id ID`.
// The endpoint's open segment is closed first so every record logged so far
// can be reached. The event names the bound and the count, never an input.
func (d *Daemon) handlePredictionsPurge(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("name")
	if !storage.ValidPipeline(p) {
		localapi.WriteError(w, http.StatusBadRequest, "pipeline "+p+": not a pipeline name")
		return
	}
	var req api.PurgeRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			localapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("purge request body is over %d bytes", tooBig.Limit))
			return
		}
		localapi.WriteError(w, http.StatusBadRequest, "purge request body: "+err.Error())
		return
	}
	if req.Before.IsZero() == (req.ID == "") {
		localapi.WriteError(w, http.StatusBadRequest, "purge: give exactly one of before and id")
		return
	}
	if _, err := os.Stat(filepath.Join(predLogDir(d.cfg.Paths), p)); err != nil {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("pipeline %s has no prediction log in %s", p, predLogDir(d.cfg.Paths)))
		return
	}
	if err := d.eps.rotateLog(r.Context(), p); err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	rep, err := serve.Purge(predLogDir(d.cfg.Paths), p, serve.PurgeFilter{Before: req.Before, ID: req.ID}, d.eps.adminGID())
	details := map[string]string{
		"records":     strconv.Itoa(rep.Records),
		"segments":    strconv.Itoa(rep.Segments),
		"input_files": strconv.Itoa(rep.RemovedInputs),
	}
	if req.ID != "" {
		details["id"] = req.ID
	} else {
		details["before"] = req.Before.UTC().Format(time.RFC3339Nano)
	}
	if rep.Records > 0 || rep.Segments > 0 || err == nil {
		d.recordEvent(r.Context(), "predictions.purged", p, nil, details)
	}
	if err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, fmt.Sprintf("purge %s (%d records deleted before the failure): %v", p, rep.Records, err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, api.PurgeResult{Pipeline: p, Records: rep.Records, Segments: rep.Segments, InputFiles: rep.RemovedInputs})
}

// handlePredictionsBackup streams the prediction logs as a tar archive
// (segments and indexes; the inputs kept as files are left out).
func (d *Daemon) handlePredictionsBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-tar")
	n, err := serve.WriteBackup(predLogDir(d.cfg.Paths), w)
	if err != nil {
		// Headers are gone once bytes flowed; a cut tar is detectable (no
		// end-of-archive blocks).
		d.log.Error("prediction log backup stream", "files", n, "err", err)
		return
	}
	d.recordEvent(r.Context(), "predictions.backup", "", nil, map[string]string{"files": strconv.Itoa(n)})
}

// collectPredictions applies each prediction log's retention: the loaded
// spec's monitor.log, or the defaults for a pipeline no longer loaded (its
// log ages out as any other). A max_size too small for keep at the rate
// the log grows is logged at each GC and recorded as an event once per
// pipeline and kilnd start.
func (d *Daemon) collectPredictions(ctx context.Context, specs map[string]*config.Pipeline) error {
	root := predLogDir(d.cfg.Paths)
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gc: prediction logs %s: %w", root, err)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !storage.ValidPipeline(e.Name()) {
			continue
		}
		p := e.Name()
		l := config.DefaultMonitorLog()
		if spec := specs[p]; spec != nil {
			l = spec.Monitor.Log
		}
		pol := logPolicy(l)
		rep, err := serve.ApplyRetention(root, p, serve.Retention{Keep: pol.Keep, MaxBytes: pol.MaxBytes, GID: d.eps.adminGID()})
		if err != nil {
			errs = append(errs, fmt.Errorf("gc: prediction log %s: %w", p, err))
		}
		if rep.RemovedSegments > 0 || rep.RemovedInputs > 0 {
			d.log.Info("prediction log retention", "pipeline", p, "segments", rep.RemovedSegments, "by_size", rep.BySize,
				"input_files", rep.RemovedInputs, "freed_bytes", rep.FreedBytes)
		}
		if rep.ShortOfKeep {
			d.log.Warn("prediction log: monitor.log.max_size cannot hold monitor.log.keep at the rate the log grows",
				"pipeline", p, "max_size", l.MaxSize.String(), "keep", l.Keep.String(),
				"holds", rep.HoldsFor.Round(time.Minute).String(), "bytes_per_hour", int64(rep.BytesPerHour))
			if d.eps.warnRetentionOnce(p) {
				d.recordEvent(ctx, "predictions.retention", p, nil, map[string]string{
					"max_size":       l.MaxSize.String(),
					"keep":           l.Keep.String(),
					"holds":          rep.HoldsFor.Round(time.Minute).String(),
					"bytes_per_hour": strconv.FormatInt(int64(rep.BytesPerHour), 10),
				})
			}
		}
	}
	return errors.Join(errs...)
}
