package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/storage"
)

// routes is kilnd's whole API. Every route declares the access it needs; a
// test enumerates this table, so a new route cannot slip in unclassified.
func (d *Daemon) routes() []localapi.Route {
	return append([]localapi.Route{
		{Method: http.MethodGet, Path: api.PathStatus, Access: api.Read, Handler: d.handleStatus},
		{Method: http.MethodGet, Path: api.PathVersion, Access: api.Read, Handler: d.handleVersion},
		{Method: http.MethodGet, Path: api.PathDoctor, Access: api.Read, Handler: d.handleDoctor},
		{Method: http.MethodGet, Path: api.PathPipelines, Access: api.Read, Handler: d.handlePipelines},
		{Method: http.MethodGet, Path: api.PathPipeline, Access: api.Read, Handler: d.handlePipeline},
		{Method: http.MethodPost, Path: api.PathPipelinesReload, Access: api.Write, Handler: d.handleReload},
		{Method: http.MethodGet, Path: api.PathGPU, Access: api.Read, Handler: d.handleGPU},
		{Method: http.MethodPost, Path: api.PathGPUCordon, Access: api.Write, Handler: d.handleCordon},
		{Method: http.MethodPost, Path: api.PathGPUUncordon, Access: api.Write, Handler: d.handleUncordon},
		{Method: http.MethodGet, Path: api.PathEvents, Access: api.Read, Handler: d.handleEvents},
		{Method: http.MethodGet, Path: api.PathBackup, Access: api.Write, Handler: d.handleBackup},
		{Method: http.MethodPost, Path: api.PathGC, Access: api.Write, ReadIf: gcDryRun, Handler: d.handleGC},
		{Method: http.MethodGet, Path: api.PathMetrics, Access: api.Read, Handler: d.metrics.handler().ServeHTTP},
		{Method: http.MethodGet, Path: api.PathDatasets, Access: api.Read, Handler: d.handleDatasets},
		{Method: http.MethodGet, Path: api.PathDataset, Access: api.Read, Handler: d.handleDataset},
		{Method: http.MethodPost, Path: api.PathDatasetRelease, Access: api.Write, Handler: d.handleDatasetRelease},
		{Method: http.MethodGet, Path: api.PathImages, Access: api.Read, Handler: d.handleImages},
		{Method: http.MethodPost, Path: api.PathImagesImport, Access: api.Write, Handler: d.handleImagesImport},
		{Method: http.MethodPost, Path: api.PathPredict, Access: api.Read, Handler: d.handlePredict},
		{Method: http.MethodPost, Path: api.PathPredictionsPurge, Access: api.Write, Handler: d.handlePredictionsPurge},
		{Method: http.MethodGet, Path: api.PathPredictionsBackup, Access: api.Write, Handler: d.handlePredictionsBackup},
		{Method: http.MethodGet, Path: api.PathAccuracy, Access: api.Read, Handler: d.handleAccuracy},
		{Method: http.MethodPost, Path: api.PathFeedback, Access: api.Write, Handler: d.handleFeedback},
		d.uiRoute(),
	}, d.modelRoutes()...)
}

// handlePredict is `kiln predict P`: the rows go through P's endpoint, as
// any client's would. Reading a prediction is a read.
func (d *Daemon) handlePredict(w http.ResponseWriter, r *http.Request) {
	name, protocol := r.PathValue("name"), ""
	if spec := d.pipelines.Load().specs[name]; spec != nil {
		protocol = spec.Serve.Protocol
	}
	d.eps.predict(w, r, name, protocol)
}

func (d *Daemon) handler() (http.Handler, error) {
	groups := func() localapi.Groups {
		return localapi.Groups{Read: d.cfg.Groups.Read, Admin: d.cfg.Groups.Admin}
	}
	return localapi.NewHandler(d.routes(), groups, d.log.With("part", "api"))
}

// actorFrom names who asked for a change: the API caller's uid, else kilnd.
func actorFrom(ctx context.Context) string {
	if id, err := localapi.IdentityFrom(ctx); err == nil {
		return id.Actor()
	}
	return actorKilnd
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	localapi.WriteJSON(w, http.StatusOK, d.status(r.Context()))
}

func (d *Daemon) status(ctx context.Context) api.Status {
	state, _ := d.state.Load().(string)
	seq, head := d.store.Head()
	s := api.Status{
		State:     state,
		Version:   d.build.Version,
		Started:   d.started.UTC(),
		Uptime:    time.Since(d.started).Round(time.Second).String(),
		PID:       os.Getpid(),
		Root:      d.cfg.Paths.Root,
		StateDir:  d.cfg.Paths.StateDir,
		APISocket: d.cfg.Paths.APISocket,
		Store:     api.StoreStatus{Path: d.store.Path(), EventSeq: seq, EventHead: head},
		Pipelines: len(d.pipelines.Load().specs),
		Systemd:   d.notify.Enabled(),
		GPU:       api.ComponentStatus{OK: d.gpus.Available(), Detail: d.gpus.Snapshot().Summary()},
	}
	if free, total, err := d.store.DiskFree(); err == nil {
		s.Store.DiskFree, s.Store.DiskTotal = free, total
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if v, err := d.rt.Version(cctx); err != nil {
		s.Containerd = api.ComponentStatus{Detail: err.Error()}
		if o := d.ctrdOutage.Load(); o != nil {
			s.Containerd.Detail = "containerd at " + d.rt.Address() + " " + o.String()
		}
	} else {
		s.Containerd = api.ComponentStatus{OK: true, Detail: "containerd " + v + " at " + d.rt.Address()}
	}
	is := d.ingest.Status()
	s.Ingest = api.IngestStatus{Paused: is.Paused, State: "running", Pending: is.Pending, Busy: is.Busy, Ingested: is.Ingested, MinFree: int64(d.cfg.Disk.MinFree)}
	if is.Paused != "" {
		s.Ingest.State = "paused"
	}
	s.LastReload = d.lastReload.Load()
	s.Monitor = d.monitorStatus()
	s.Message = d.readyStatus()
	if s.Ingest.Paused != "" {
		s.Message += "; ingest paused: " + s.Ingest.Paused
	}
	if w := d.gpuWaitingStatus(); w != "" {
		s.Message += "; " + w
	}
	if s.LastReload != nil && !s.LastReload.OK {
		s.Message += "; last pipeline reload rejected: " + firstLine(s.LastReload.Error)
	}
	return s
}

func (d *Daemon) handleVersion(w http.ResponseWriter, _ *http.Request) {
	localapi.WriteJSON(w, http.StatusOK, api.VersionInfo{Daemon: d.build, APIVersion: api.Version})
}

func (d *Daemon) handleDoctor(w http.ResponseWriter, r *http.Request) {
	localapi.WriteJSON(w, http.StatusOK, api.Doctor{Checks: d.doctor(r.Context())})
}

func (d *Daemon) handlePipelines(w http.ResponseWriter, _ *http.Request) {
	set := d.pipelines.Load()
	out := make([]api.Pipeline, 0, len(set.specs))
	for _, name := range slices.Sorted(maps.Keys(set.specs)) {
		out = append(out, d.pipelineView(set, name, false))
	}
	out = append(out, d.rejectedPipelines()...)
	localapi.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handlePipeline(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	set := d.pipelines.Load()
	if _, ok := set.specs[name]; !ok {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q is loaded (files in %s)", name, d.cfg.Paths.PipelinesDir))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, d.pipelineView(set, name, true))
}

func (d *Daemon) pipelineView(set *pipelineSet, name string, withSpec bool) api.Pipeline {
	p := set.specs[name]
	loaded, ok := set.since[name]
	if !ok {
		loaded = set.loaded
	}
	v := api.Pipeline{ID: name, Pipeline: name, State: "loaded", Created: loaded, File: p.File, Digest: p.Digest}

	if withSpec {
		v.Spec = p
	}
	return v
}

func (d *Daemon) handleReload(w http.ResponseWriter, r *http.Request) {
	res, err := d.reload(r.Context(), "api")
	if err != nil {
		localapi.WriteError(w, http.StatusUnprocessableEntity, "reload rejected, old pipelines keep running: "+err.Error())
		return
	}
	localapi.WriteJSON(w, http.StatusOK, res)
}

// handleEvents lists events from ?since= on, or with ?follow=1 streams them
// as JSON lines until the client goes away or kilnd stops.
func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := parseUint(q.Get("since"), 0)
	if err != nil {
		localapi.WriteError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if q.Get("follow") == "" {
		limit, err := parseUint(q.Get("limit"), 1000)
		if err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "limit: "+err.Error())
			return
		}
		n := math.MaxInt // a limit beyond int is no limit
		if limit < math.MaxInt {
			n = int(limit)
		}
		evs, err := d.store.Events(since, n)
		if err != nil {
			localapi.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		out := make([]api.Event, 0, len(evs))
		for _, e := range evs {
			out = append(out, eventView(e))
		}
		localapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for e := range d.store.Subscribe(r.Context(), since) {
		if err := enc.Encode(eventView(e)); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func eventView(e storage.Event) api.Event {
	return api.Event{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Kind: e.Kind, Pipeline: e.Pipeline,
		Refs: e.Refs, Details: e.Details, Hash: e.Hash}
}

// handleBackup streams a consistent copy of the database; the CLI writes it
// to a temp file, fsyncs and renames. It is a write route because it hands
// out the whole store.
func (d *Daemon) handleBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	n, err := d.store.Backup(w, func(size int64) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	})
	if err != nil {
		// Headers are gone once bytes flowed; the body falls short of its
		// Content-Length, which the client reports as a cut stream.
		d.log.Error("backup stream", "bytes", n, "err", err)
		return
	}
	d.recordEvent(r.Context(), "store.backup", "", nil, map[string]string{"bytes": strconv.FormatInt(n, 10)})
}

func parseUint(s string, def uint64) (uint64, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("want a non-negative integer, got " + strconv.Quote(s))
	}
	return v, nil
}
