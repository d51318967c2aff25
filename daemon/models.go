package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// modelRoutes are the runs, models and manual pipeline controls.
func (d *Daemon) modelRoutes() []localapi.Route {
	return []localapi.Route{
		{Method: http.MethodGet, Path: api.PathRuns, Access: api.Read, Handler: d.handleRuns},
		{Method: http.MethodGet, Path: api.PathRun, Access: api.Read, Handler: d.handleRun},
		{Method: http.MethodPost, Path: api.PathRunCancel, Access: api.Write, Handler: d.handleRunCancel},
		{Method: http.MethodGet, Path: api.PathRunLogs, Access: api.Read, Handler: d.handleRunLogs},
		{Method: http.MethodGet, Path: api.PathModels, Access: api.Read, Handler: d.handleModels},
		{Method: http.MethodGet, Path: api.PathModel, Access: api.Read, Handler: d.handleModel},
		{Method: http.MethodPost, Path: api.PathModelPromote, Access: api.Write, Handler: d.handlePromote},
		{Method: http.MethodPost, Path: api.PathTrain, Access: api.Write, Handler: d.handleTrain},
		{Method: http.MethodPost, Path: api.PathRollback, Access: api.Write, Handler: d.handleRollback},
		{Method: http.MethodPost, Path: api.PathPin, Access: api.Write, Handler: d.handlePin},
		{Method: http.MethodPost, Path: api.PathUnpin, Access: api.Write, Handler: d.handleUnpin},
		{Method: http.MethodGet, Path: api.PathLineage, Access: api.Read, Handler: d.handleLineage},
	}
}

// personRequest is the pipeline command of the person calling: their uid,
// trigger manual, and the optional ?reason= (one line, kept in the events).
func personRequest(r *http.Request, pipe string) pipeline.Request {
	reason, _, _ := strings.Cut(r.URL.Query().Get("reason"), "\n")
	return pipeline.Request{Pipeline: pipe, Actor: actorFrom(r.Context()), Trigger: pipeline.TriggerManual, Reason: reason}
}

// idFrom joins the {pipeline}/{id} path values into a short ID.
func idFrom(r *http.Request) string { return r.PathValue("pipeline") + "/" + r.PathValue("id") }

// writeStoreError maps store and pipeline errors to statuses.
func writeStoreError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, pipeline.ErrNoPipeline):
		localapi.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, pipeline.ErrConflict):
		localapi.WriteError(w, http.StatusConflict, err.Error())
	case errors.Is(err, storage.ErrInvalid):
		localapi.WriteError(w, http.StatusBadRequest, err.Error())
	default:
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
	}
}

func runView(r storage.Run) api.Run {
	return api.Run{ID: r.ID, Pipeline: r.Pipeline, State: string(r.State), Created: r.Created, Reason: r.Reason,
		Datasets: nonNil(r.Datasets), Image: r.Image, GPU: r.GPU, Container: r.Container, LogPath: r.LogPath,
		Labels: r.Labels, Started: r.Started, Finished: r.Finished}
}

func modelView(m storage.Model) api.Model {
	v := api.Model{ID: m.ID, Pipeline: m.Pipeline, State: string(m.State), Created: m.Created, Run: m.Run,
		Metrics: m.Metrics, TrainerMetrics: m.Trainer, Reason: m.Reason, Pruned: m.Pruned}
	if v.Metrics == nil {
		v.Metrics = map[string]float64{}
	}
	for _, f := range m.Files {
		v.Files = append(v.Files, f.Path)
	}
	return v
}

// listRecords runs list with the ?pipeline= filter ("" lists every pipeline).
func (d *Daemon) listRecords(r *http.Request, list func(tx *storage.Tx, p string) error) error {
	return d.store.View(func(tx *storage.Tx) error { return list(tx, r.URL.Query().Get("pipeline")) })
}

func (d *Daemon) handleRuns(w http.ResponseWriter, r *http.Request) {
	out := []api.Run{}
	err := d.listRecords(r, func(tx *storage.Tx, p string) error {
		runs, err := tx.Runs(p)
		for _, run := range runs {
			out = append(out, runView(run))
		}
		return err
	})
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleRun(w http.ResponseWriter, r *http.Request) {
	run, err := d.store.Run(idFrom(r))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, runView(run))
}

func (d *Daemon) handleRunCancel(w http.ResponseWriter, r *http.Request) {
	if err := d.pipes.Cancel(r.Context(), personRequest(r, ""), idFrom(r)); err != nil {
		writeStoreError(w, err)
		return
	}
	d.handleRun(w, r)
}

func (d *Daemon) handleModels(w http.ResponseWriter, r *http.Request) {
	out := []api.Model{}
	err := d.listRecords(r, func(tx *storage.Tx, p string) error {
		models, err := tx.Models(p)
		for _, m := range models {
			out = append(out, modelView(m))
		}
		return err
	})
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, out)
}

// handleModel shows one model with its state history and ancestry.
func (d *Daemon) handleModel(w http.ResponseWriter, r *http.Request) {
	id := idFrom(r)
	m, err := d.store.Model(id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	v := modelView(m)
	anc, err := d.store.Ancestors(id, 0)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	for _, n := range anc {
		v.Lineage = append(v.Lineage, api.LineageNode{ID: n.ID, Depth: n.Depth, Edge: string(n.Edge)})
	}
	evs, err := d.store.EventsFor(id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	for _, e := range evs {
		v.History = append(v.History, eventView(e))
	}
	if v.Monitor, err = d.modelMonitorOf(m); err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, v)
}

func (d *Daemon) handlePromote(w http.ResponseWriter, r *http.Request) {
	force := r.URL.Query().Get("force") == "1"
	if err := d.pipes.Promote(r.Context(), personRequest(r, ""), idFrom(r), force); err != nil {
		writeStoreError(w, err)
		return
	}
	d.handleModel(w, r)
}

func (d *Daemon) handleTrain(w http.ResponseWriter, r *http.Request) {
	t, err := d.pipes.Train(r.Context(), personRequest(r, r.PathValue("name")))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, api.TrainResult{Run: t.Run, Queued: t.Queued, Behind: t.Behind})
}

func (d *Daemon) handleRollback(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("name")
	req := personRequest(r, p)
	var err error
	if to := r.URL.Query().Get("to"); to != "" {
		err = d.pipes.RollbackTo(r.Context(), req, to)
	} else {
		err = d.pipes.Rollback(r.Context(), req, "")
	}
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, map[string]string{"pipeline": p, "live": d.pipes.Live(p)})
}

func (d *Daemon) handlePin(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("name")
	var req api.PinRequest
	if err := decodeBody(r, &req); errors.Is(err, errBodyTooLarge) {
		localapi.WriteError(w, http.StatusRequestEntityTooLarge, "pin: "+err.Error())
		return
	} else if err != nil || req.Model == "" {
		localapi.WriteError(w, http.StatusBadRequest, "pin wants a body {\"model\": \"P/mN\"}")
		return
	}
	if err := d.pipes.Pin(r.Context(), personRequest(r, p), req.Model); err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, map[string]string{"pipeline": p, "live": d.pipes.Live(p), "pinned": req.Model})
}

func (d *Daemon) handleUnpin(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("name")
	if err := d.pipes.Unpin(r.Context(), personRequest(r, p)); err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, map[string]string{"pipeline": p, "live": d.pipes.Live(p)})
}

// handleLineage answers ?direction=up|down&depth=N with the nodes and the
// edges among them, so the CLI can draw DOT.
// recordExists says whether id names a dataset, run, model or deployment
// kilnd has: lineage of an ID nobody made is "not found", not an empty
// graph (a typo must not read as "descends from nothing").
func (d *Daemon) recordExists(id string) error {
	_, letter, _, err := storage.ParseID(id)
	if err != nil {
		return err
	}
	switch letter {
	case storage.LetterDataset:
		_, err = d.store.Dataset(id)
	case storage.LetterRun:
		_, err = d.store.Run(id)
	case storage.LetterModel:
		_, err = d.store.Model(id)
	case storage.LetterDeployment:
		_, err = d.store.Deployment(id)
	}
	return err
}

func (d *Daemon) handleLineage(w http.ResponseWriter, r *http.Request) {
	id := idFrom(r)
	q := r.URL.Query()
	dir := q.Get("direction")
	if dir == "" {
		dir = "up"
	}
	depth, err := strconv.Atoi(q.Get("depth"))
	if q.Get("depth") == "" {
		depth, err = 0, nil
	}
	if err != nil || depth < 0 || (dir != "up" && dir != "down") {
		localapi.WriteError(w, http.StatusBadRequest, "want ?direction=up|down and ?depth=N (0: all)")
		return
	}
	out, err := d.lineageOf(id, dir, depth)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, out)
}

// lineageOf is the graph up (ancestors) or down (descendants) of id to
// depth (0: all): the nodes and the edges among them. The lineage route and
// the dashboard answer with it.
func (d *Daemon) lineageOf(id, dir string, depth int) (api.Lineage, error) {
	if err := d.recordExists(id); err != nil {
		return api.Lineage{}, err
	}
	out := api.Lineage{ID: id, Direction: dir, Nodes: []api.LineageNode{}, Edges: []api.LineageEdge{}}
	walk := d.store.Ancestors
	if dir == "down" {
		walk = d.store.Descendants
	}
	nodes, err := walk(id, depth)
	if err != nil {
		return api.Lineage{}, err
	}
	in := map[string]bool{id: true}
	for _, n := range nodes {
		in[n.ID] = true
		out.Nodes = append(out.Nodes, api.LineageNode{ID: n.ID, Depth: n.Depth, Edge: string(n.Edge)})
	}
	// Edges: each node's direct parents that are in the set.
	for child := range in {
		parents, err := d.store.Ancestors(child, 1)
		if err != nil {
			return api.Lineage{}, err
		}
		for _, p := range parents {
			if in[p.ID] {
				out.Edges = append(out.Edges, api.LineageEdge{From: p.ID, To: child, Type: string(p.Edge)})
			}
		}
	}
	slices.SortFunc(out.Edges, func(a, b api.LineageEdge) int {
		return strings.Compare(a.From+"\x00"+a.To, b.From+"\x00"+b.To)
	})
	return out, nil
}

// errBodyTooLarge: a JSON request body over maxJSONBody; the handler answers 413.
var errBodyTooLarge = fmt.Errorf("request body is over %d bytes", maxJSONBody)

const maxJSONBody = 64 << 10

func decodeBody(r *http.Request, v any) error {
	// One byte past the limit tells a body over it from one that fits exactly (a silent cut
	// would surface as a puzzling "unexpected end of JSON input").
	b, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSONBody {
		return errBodyTooLarge
	}
	if len(b) == 0 {
		return errors.New("empty body")
	}
	return json.Unmarshal(b, v)
}

// handleRunLogs streams a run's training log; with ?follow=1 it keeps
// streaming until the run ends (or the client goes, or kilnd stops).
func (d *Daemon) handleRunLogs(w http.ResponseWriter, r *http.Request) {
	run, err := d.store.Run(idFrom(r))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if run.LogPath == "" {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("run %s has no log yet (state %s)", run.ID, run.State))
		return
	}
	if run.LogGone {
		localapi.WriteError(w, http.StatusGone, fmt.Sprintf("the log of run %s expired (gc.run_log_age)", run.ID))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fw := flushWriter{w}
	if r.URL.Query().Get("follow") == "" || finished(run.State) {
		if err := runtime.ReadLog(run.LogPath, fw); err != nil {
			d.log.Warn("read run log", "run", run.ID, "err", err)
		}
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // end the follow once the run is over
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if cur, err := d.store.Run(run.ID); err != nil || finished(cur.State) {
					time.Sleep(time.Second) // one last poll of the file picks up the tail
					cancel()
					return
				}
			}
		}
	}()
	if err := runtime.FollowLog(ctx, run.LogPath, fw); err != nil {
		d.log.Debug("follow run log", "run", run.ID, "err", err)
	}
}

func finished(s storage.RunState) bool {
	return s == storage.RunSucceeded || s == storage.RunFailed || s == storage.RunCancelled
}

// flushWriter pushes each write to the client at once, for following.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
