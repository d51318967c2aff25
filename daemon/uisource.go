package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/monitor/detect"
	"github.com/kiln-edge/kiln/daemon/ui"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// uiSource is what the dashboard reads of kilnd: the same views the API
// routes answer with, read from the store directly (never over HTTP).
type uiSource struct{ d *Daemon }

var _ ui.Source = uiSource{}

// uiRoute serves the dashboard under ui.Prefix, as a read route: the same
// peer-credential check as every other read.
func (d *Daemon) uiRoute() localapi.Route {
	log := slog.Default() // a Daemon built bare (the route table's test) has none
	if d.log != nil {
		log = d.log.With("part", "ui")
	}
	return localapi.Route{Method: http.MethodGet, Path: ui.Prefix, Access: api.Read, Handler: ui.New(uiSource{d}, log).ServeHTTP}
}

// notFound marks the store's "no such record" as the dashboard's.
func notFound(err error) error {
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalid) {
		return fmt.Errorf("%w: %v", ui.ErrNotFound, err)
	}
	return err
}

func (s uiSource) Status(ctx context.Context) api.Status { return s.d.status(ctx) }

func (s uiSource) GPU() (api.GPUReport, error) {
	leases, cordoned, err := s.d.gpuState()
	if err != nil {
		return api.GPUReport{}, fmt.Errorf("read leases and cordons: %w", err)
	}
	return gpuReport(s.d.gpus.Snapshot(), leases, cordoned), nil
}

func (s uiSource) Pipelines() []string {
	return slices.Sorted(maps.Keys(s.d.pipelines.Load().specs))
}

func (s uiSource) Datasets(p string) ([]api.Dataset, error) {
	var out []api.Dataset
	err := s.d.store.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets(p)
		for _, x := range ds {
			out = append(out, datasetView(x))
		}
		return err
	})
	return out, err
}

func (s uiSource) Report(id string) (any, error) {
	x, err := s.d.store.Dataset(id)
	if err != nil {
		return nil, notFound(err)
	}
	meta, err := ingest.ReadMeta(s.d.store, x)
	if err != nil {
		return nil, err
	}
	return meta.Report, nil
}

func (s uiSource) QuarantineReason(id string) ([]byte, error) {
	if _, _, _, err := storage.ParseID(id); err != nil {
		return nil, notFound(err)
	}
	return os.ReadFile(filepath.Join(s.d.cfg.Paths.QuarantineDir, id, "REASON.json")) //nolint:gosec // G304: kiln's own quarantine folder, under a parsed ID
}

func (s uiSource) Runs(p string) ([]api.Run, error) {
	var out []api.Run
	err := s.d.store.View(func(tx *storage.Tx) error {
		runs, err := tx.Runs(p)
		for _, r := range runs {
			out = append(out, runView(r))
		}
		return err
	})
	return out, err
}

func (s uiSource) RunLog(id string, w io.Writer) error {
	run, err := s.d.store.Run(id)
	if err != nil {
		return notFound(err)
	}
	switch {
	case run.LogPath == "":
		return fmt.Errorf("%w: run %s has no log yet (state %s)", ui.ErrNotFound, id, run.State)
	case run.LogGone:
		return fmt.Errorf("%w: the log of run %s expired (gc.run_log_age)", ui.ErrNotFound, id)
	}
	return runtime.ReadLog(run.LogPath, w)
}

func (s uiSource) Models(p string) ([]api.Model, error) {
	var out []api.Model
	err := s.d.store.View(func(tx *storage.Tx) error {
		models, err := tx.Models(p)
		for _, m := range models {
			out = append(out, modelView(m))
		}
		return err
	})
	return out, err
}

func (s uiSource) Accuracy(p string) (api.Accuracy, error) {
	spec := s.d.pipelines.Load().specs[p]
	var ps pipelineScores
	err := s.d.store.View(func(tx *storage.Tx) (err error) { ps, err = readScores(tx, p, spec); return err })
	if err != nil {
		return api.Accuracy{}, err
	}
	return ps.accuracyView(), nil
}

// Detector replays the live model's overall stream through a detector
// configured as the monitor's is (from its persisted state), one point per
// feedback version since the model went live: the statistic the monitor's
// own detector went through. Class streams (macro_f1) are left out.
func (s uiSource) Detector(p string) ([]chart.DetectorPoint, string, error) {
	var scorings []storage.Scoring
	var st storage.MonitorState
	var ok bool
	err := s.d.store.View(func(tx *storage.Tx) (err error) {
		if scorings, err = tx.Scorings(p); err != nil {
			return err
		}
		st, ok, err = tx.MonitorState(p)
		return err
	})
	if err != nil || !ok || st.Detector == nil {
		return nil, "", err
	}
	saved, err := detect.Restore(st.Detector)
	if err != nil {
		return nil, "", err
	}
	cfg := saved.Config()
	cfg.Classes = nil
	det, err := detect.New(cfg)
	if err != nil {
		return nil, "", err
	}
	points := []chart.DetectorPoint{}
	for _, sc := range scorings {
		if len(sc.Models) == 0 || sc.Models[0].Model != st.Model || sc.Arrived.Before(st.Since) {
			continue
		}
		for _, o := range sc.Outcomes {
			if _, err := det.Observe(o&storage.OutcomeLiveRight != 0, ""); err != nil {
				return nil, "", err
			}
		}
		o := det.Status()[0]
		stat := o.Statistic
		if det.Alarmed() != nil {
			stat = max(stat, 1)
		}
		points = append(points, chart.DetectorPoint{Time: sc.Arrived, Statistic: stat, Phase: o.Phase})
	}
	o := saved.Status()[0]
	note := st.Model + " " + o.Phase
	if o.Phase == detect.PhaseWarmup {
		note += " (" + strconv.Itoa(o.WarmupLabels) + "/" + strconv.Itoa(o.WarmupMaxLabels) + " labels, " +
			strconv.Itoa(o.WarmupMisses) + "/" + strconv.Itoa(o.WarmupMaxMisses) + " misses)"
	}
	if st.Alarm != nil {
		note += "; alarm " + st.Alarm.By
		if st.Alarm.Decided != "" {
			note += ", decided " + st.Alarm.Decided
		}
	}
	return points, note, nil
}

func (s uiSource) Lineage(id, direction string) (api.Lineage, error) {
	l, err := s.d.lineageOf(id, direction, 0)
	return l, notFound(err)
}

func (s uiSource) Events(since uint64, limit int) ([]api.Event, error) {
	evs, err := s.d.store.Events(since, limit)
	out := make([]api.Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, eventView(e))
	}
	return out, err
}

func (s uiSource) Subscribe(ctx context.Context, since uint64) <-chan api.Event {
	out := make(chan api.Event)
	go func() {
		defer close(out)
		for e := range s.d.store.Subscribe(ctx, since) {
			select {
			case out <- eventView(e):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (s uiSource) Head() uint64 {
	seq, _ := s.d.store.Head()
	return seq
}
