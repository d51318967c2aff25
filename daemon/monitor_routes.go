package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/monitor"
	"github.com/kiln-edge/kiln/storage"
)

// This file is the read side of the monitor: the accuracy series, a model's
// monitored standing, the status lines and the figures the metrics collector
// exports, all computed from the scorings the monitor wrote (one per feedback
// version) and the deployments; and the feedback upload, which only drops a
// file where ingest looks for one.

// pipelineScores is what the store holds about one pipeline's monitoring,
// read in one transaction.
type pipelineScores struct {
	name        string
	spec        *config.Pipeline // nil when the pipeline is not loaded
	metric      string
	scorings    []storage.Scoring
	deployments []storage.Deployment
	live        string
	standby     string
	state       *storage.MonitorState
	// modelStates counts the pipeline's models by state (metrics).
	modelStates map[storage.ModelState]int
}

// readScores reads a pipeline's scorings and deployments. Scorings' per-row
// outcomes are dropped: nothing here reads them, and they are the bulk.
func readScores(tx *storage.Tx, name string, spec *config.Pipeline) (pipelineScores, error) {
	ps := pipelineScores{name: name, spec: spec}
	var err error
	if ps.scorings, err = tx.Scorings(name); err != nil {
		return ps, err
	}
	for i := range ps.scorings {
		ps.scorings[i].Outcomes = nil
	}
	if ps.deployments, err = tx.Deployments(name); err != nil {
		return ps, err
	}
	ps.live, ps.standby = servingModels(ps.deployments)
	ps.metric = metricOf(spec, ps.scorings)
	if st, ok, err := tx.MonitorState(name); err != nil {
		return ps, err
	} else if ok {
		ps.state = &st
	}
	models, err := tx.Models(name)
	if err != nil {
		return ps, err
	}
	ps.modelStates = map[storage.ModelState]int{}
	for _, m := range models {
		ps.modelStates[m.State]++
	}
	return ps, nil
}

// liveState is the monitor's state when it is about the live model (a
// newly promoted model has none until its first labels).
func (ps *pipelineScores) liveState() *storage.MonitorState {
	if ps.state != nil && ps.state.Model == ps.live {
		return ps.state
	}
	return nil
}

// servingModels are the models of the newest live and standby deployments.
func servingModels(deps []storage.Deployment) (live, standby string) {
	var liveAt, standbyAt time.Time
	for _, dep := range deps {
		switch {
		case dep.State == storage.DeployLive && !dep.Created.Before(liveAt):
			live, liveAt = dep.Model, dep.Created
		case dep.State == storage.DeployStandby && !dep.Created.Before(standbyAt):
			standby, standbyAt = dep.Model, dep.Created
		}
	}
	return live, standby
}

// metricOf is the metric to report: the spec's, else the one the newest
// scoring was measured with (a pipeline whose spec was removed), else accuracy.
// Values are recomputed from counts, so any of them applies to old scorings.
func metricOf(spec *config.Pipeline, scorings []storage.Scoring) string {
	if spec != nil && spec.Evaluate.Metric != "" {
		return spec.Evaluate.Metric
	}
	for _, sc := range slices.Backward(scorings) {
		if sc.Metric != "" {
			return sc.Metric
		}
	}
	return "accuracy"
}

// promotedAt is when model first went live; zero when it never did.
func promotedAt(deps []storage.Deployment, model string) time.Time {
	var at time.Time
	for _, dep := range deps {
		if dep.Model == model && (at.IsZero() || dep.Created.Before(at)) {
			at = dep.Created
		}
	}
	return at
}

// standing is a model's result as its role reads it: the live model since
// its promotion, any other model over every label scored through it.
func (ps *pipelineScores) standing(model string) (monitor.Standing, time.Time) {
	from := promotedAt(ps.deployments, model)
	return monitor.StandingOf(ps.scorings, model, ps.metric, from), from
}

// metricValue turns NaN (no labels) into null for JSON.
func metricValue(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// accuracyView is the API's answer for one pipeline.
func (ps *pipelineScores) accuracyView() api.Accuracy {
	a := api.Accuracy{Pipeline: ps.name, Metric: ps.metric, Live: ps.live, Standby: ps.standby,
		Models: []api.ModelSeries{}, Deployments: []api.DeploymentMark{}}
	series := monitor.Series(ps.scorings, ps.metric)
	for _, model := range slices.SortedFunc(maps.Keys(series), compareIDs) {
		ms := api.ModelSeries{Model: model, Points: make([]api.SeriesPoint, 0, len(series[model]))}
		for _, p := range series[model] {
			ms.Points = append(ms.Points, api.SeriesPoint{Time: p.Time, Feedback: p.Feedback, Role: p.Role,
				Rows: p.Rows, Value: metricValue(p.Value), Labels: p.Labels, Cumulative: metricValue(p.Cumulative)})
		}
		a.Models = append(a.Models, ms)
	}
	for _, dep := range ps.deployments {
		a.Deployments = append(a.Deployments, api.DeploymentMark{ID: dep.ID, Model: dep.Model,
			State: string(dep.State), Created: dep.Created, Rollback: dep.Rollback})
	}
	slices.SortStableFunc(a.Deployments, func(x, y api.DeploymentMark) int { return x.Created.Compare(y.Created) })
	return a
}

// compareIDs orders short IDs by pipeline, then number (m2 before m10).
func compareIDs(a, b string) int {
	pa, la, na, erra := storage.ParseID(a)
	pb, lb, nb, errb := storage.ParseID(b)
	if erra != nil || errb != nil || pa != pb || la != lb {
		return strings.Compare(a, b)
	}
	return cmp.Compare(na, nb)
}

// modelMonitor is the monitor's part of kiln models show; nil for a model
// never deployed nor scored (a candidate: its holdout metric says it all).
func (ps *pipelineScores) modelMonitor(m storage.Model) *api.ModelMonitor {
	st, from := ps.standing(m.ID)
	if from.IsZero() && st.Versions == 0 {
		return nil
	}
	mm := &api.ModelMonitor{Metric: ps.metric, Promoted: from, Value: metricValue(st.Value), Labels: st.Labels,
		Excluded: st.Excluded, Versions: st.Versions, Last: st.Last}
	if v, ok := m.Metrics[ps.metric]; ok {
		mm.Holdout = metricValue(v)
	}
	if st.Paired.Rows > 0 {
		p := api.Paired(st.Paired)
		mm.Paired = &p
	}
	return mm
}

// statusLine is the pipeline's line of kiln status.
func (ps *pipelineScores) statusLine() api.PipelineMonitor {
	pm := api.PipelineMonitor{Pipeline: ps.name, Live: ps.live, Standby: ps.standby, Metric: ps.metric}
	if ps.live != "" {
		st, _ := ps.standing(ps.live)
		pm.Value, pm.Labels = metricValue(st.Value), st.Labels
	}
	pm.StandbyStopped = ps.spec != nil && ps.spec.Serve.Standby == config.StandbyStop
	if ps.spec != nil && ps.live != "" {
		w := monitor.WatchOf(ps.scorings, ps.liveState(), ps.spec.Monitor.MinLabelRate, ps.spec.Monitor.TargetFalseAlarm, time.Now())
		pm.Watch = &api.Watch{LabelsPerDay: w.LabelsPerDay, LabelDelayP50S: w.DelayP50.Seconds(), Detector: w.Phase,
			WarmupLabels: w.WarmupLabels, WarmupMaxLabels: w.WarmupMaxLabels, WarmupMisses: w.WarmupMisses,
			WarmupMaxMisses: w.WarmupMaxMisses, Baseline: w.Baseline, Detect5PointS: w.Detect5.Seconds(),
			Blind: w.Blind, BlindWhy: w.BlindWhy, Alarm: w.Alarm}
	}
	return pm
}

// monitorStatus is one line per loaded pipeline for GET /v1/status. A store
// error leaves the lines out (the status answers anyway) and is logged.
func (d *Daemon) monitorStatus() []api.PipelineMonitor {
	specs := d.pipelines.Load().specs
	out := []api.PipelineMonitor{}
	err := d.store.View(func(tx *storage.Tx) error {
		for _, name := range slices.Sorted(maps.Keys(specs)) {
			ps, err := readScores(tx, name, specs[name])
			if err != nil {
				return err
			}
			out = append(out, ps.statusLine())
		}
		return nil
	})
	if err != nil {
		d.log.Warn("status: read monitor records", "err", err)
		return nil
	}
	return out
}

// handleAccuracy is GET /v1/pipelines/{name}/accuracy. A pipeline whose spec
// was removed still answers while the store has its history.
func (d *Daemon) handleAccuracy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	spec := d.pipelines.Load().specs[name]
	var ps pipelineScores
	err := d.store.View(func(tx *storage.Tx) (err error) { ps, err = readScores(tx, name, spec); return err })
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if spec == nil && len(ps.scorings) == 0 && len(ps.deployments) == 0 {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q is loaded (files in %s) and none has history here", name, d.cfg.Paths.PipelinesDir))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, ps.accuracyView())
}

// modelMonitorOf reads what handleModel adds to a model's view.
func (d *Daemon) modelMonitorOf(m storage.Model) (*api.ModelMonitor, error) {
	var ps pipelineScores
	err := d.store.View(func(tx *storage.Tx) (err error) {
		ps, err = readScores(tx, m.Pipeline, d.pipelines.Load().specs[m.Pipeline])
		return err
	})
	if err != nil {
		return nil, err
	}
	return ps.modelMonitor(m), nil
}

// feedbackSeq numbers the uploads of this process; with the time in the name
// it keeps names unique, and the no-replace rename guards the rest.
var feedbackSeq atomic.Uint64

// feedbackTempPrefix marks uploads in flight: ingest ignores dot names.
const feedbackTempPrefix = ".cli-"

// staleUpload is how old an upload's temp file must be to count as left by a
// crash.
const staleUpload = time.Hour

// handleFeedback is POST /v1/pipelines/{name}/feedback: the body becomes a
// file in feedback/<name>/ exactly as if a person had renamed it in there,
// so ingest validates, versions and hands it to the monitor like any other.
// The file is whole before its name is visible (temp, fsync, rename, fsync).
func (d *Daemon) handleFeedback(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	spec, ok := d.pipelines.Load().specs[name]
	if !ok {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q is loaded (files in %s)", name, d.cfg.Paths.PipelinesDir))
		return
	}
	var ext string
	switch spec.Data.Format {
	case config.FormatCSV:
		ext = ".csv"
	case config.FormatJSONL:
		ext = ".jsonl"
	default:
		localapi.WriteError(w, http.StatusUnprocessableEntity, fmt.Sprintf("pipeline %s takes data.format %s; feedback is labelled rows or late labels (csv or jsonl)", name, spec.Data.Format))
		return
	}
	limit := int64(spec.Data.MaxFileSize)
	if r.ContentLength > limit {
		localapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("feedback of %d bytes is over pipeline %s's data.max_file_size (%s)", r.ContentLength, name, spec.Data.MaxFileSize))
		return
	}
	if free, _, err := d.store.DiskFree(); err == nil {
		need := uint64(max(r.ContentLength, 0)) + uint64(max(d.cfg.Disk.MinFree, 0)) //nolint:gosec // both clamped non-negative
		if free < need {
			localapi.WriteError(w, http.StatusInsufficientStorage, fmt.Sprintf("feedback refused: %d bytes free under %s, disk.min_free keeps %d", free, d.cfg.Paths.StateDir, d.cfg.Disk.MinFree))
			return
		}
	}
	dir := filepath.Join(d.cfg.Paths.FeedbackDir, name)
	removeStaleUploads(dir, time.Now().Add(-staleUpload))
	file, n, err := writeUpload(dir, ext, http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		localapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("feedback is over pipeline %s's data.max_file_size (%s)", name, spec.Data.MaxFileSize))
		return
	case errors.Is(err, errEmptyUpload):
		localapi.WriteError(w, http.StatusBadRequest, "feedback body is empty: send labelled rows (with a header) or request_id,label lines")
		return
	case err != nil:
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.recordEvent(r.Context(), "feedback.queued", name, nil, map[string]string{"file": file, "bytes": strconv.FormatInt(n, 10)})
	localapi.WriteJSON(w, http.StatusOK, api.FeedbackResult{Pipeline: name, File: file, Bytes: n})
}

var errEmptyUpload = errors.New("empty body")

// writeUpload copies body into dir under a dot name, syncs it, and renames it
// to cli-<time>-<n><ext> without replacing anything. It returns the name.
func writeUpload(dir, ext string, body io.Reader) (string, int64, error) {
	tmp, err := os.CreateTemp(dir, feedbackTempPrefix+"*")
	if err != nil {
		return "", 0, fmt.Errorf("feedback into %s: %w", dir, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()           // already failed; the write error is the one to report
			_ = os.Remove(tmp.Name()) // best effort: a leftover is dot-named, ignored, and swept later
		}
	}()
	n, err := io.Copy(tmp, body)
	if err != nil {
		return "", n, fmt.Errorf("feedback into %s: %w", tmp.Name(), err)
	}
	if n == 0 {
		return "", 0, errEmptyUpload
	}
	if err := tmp.Sync(); err != nil {
		return "", n, fmt.Errorf("feedback into %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", n, fmt.Errorf("feedback into %s: %w", tmp.Name(), err)
	}
	stamp := time.Now().UTC().Format("20060102T150405.000Z")
	for {
		name := fmt.Sprintf("cli-%s-%d%s", stamp, feedbackSeq.Add(1), ext)
		err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, filepath.Join(dir, name), unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", n, fmt.Errorf("feedback: rename %s to %s: %w", tmp.Name(), name, err)
		}
		done = true
		if err := fsyncDir(dir); err != nil {
			return "", n, fmt.Errorf("feedback: sync %s: %w", dir, err)
		}
		return name, n, nil
	}
}

// removeStaleUploads deletes upload temp files a crash left behind.
func removeStaleUploads(dir string, before time.Time) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), feedbackTempPrefix) || !de.Type().IsRegular() {
			continue
		}
		if fi, err := de.Info(); err == nil && fi.ModTime().Before(before) {
			_ = os.Remove(filepath.Join(dir, de.Name())) // best effort; tried again next upload
		}
	}
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only handle: Sync's error is the one that counts
	return f.Sync()
}

// monitorCacheAge bounds how long the metrics collector trusts its copy of
// the records. Within it the copy is refreshed whenever the event chain
// moved (a scoring or a deployment comes with an event), so an idle kilnd's
// scrapes read nothing, and a record written without one is seen within it.
const monitorCacheAge = 30 * time.Second

// monitorCollector exports the monitor's records at scrape time: each
// serving model's metric and the pipeline's label counters. Labels carry
// pipeline, model, role, metric and reason only: never inputs or ids.
type monitorCollector struct {
	d                                   *Daemon
	metric, labels, unmatched, rejected *prometheus.Desc
	// What automation did and is doing: models by state (rolled_back
	// counts automatic and manual rollbacks), the detector's phase, the
	// label rate and the automatic retrains of the last 24 hours.
	models, phase, rate, retrains *prometheus.Desc

	mu     sync.Mutex
	seq    uint64
	at     time.Time
	cached map[string]pipelineScores
}

func newMonitorCollector(d *Daemon) *monitorCollector {
	return &monitorCollector{
		d: d,
		metric: prometheus.NewDesc("kiln_model_metric",
			"The pipeline's evaluate.metric on labelled feedback: the live model since its promotion, the standby over all its labels.",
			[]string{"pipeline", "model", "role", "metric"}, nil),
		labels: prometheus.NewDesc("kiln_feedback_labels_total",
			"Labelled rows scored: labelled feedback rows and late labels joined to the prediction log.",
			[]string{"pipeline"}, nil),
		unmatched: prometheus.NewDesc("kiln_feedback_unmatched_total",
			"Late labels whose request id is not in the prediction log.",
			[]string{"pipeline"}, nil),
		rejected: prometheus.NewDesc("kiln_feedback_rejected_total",
			"Late labels not scored, by reason: duplicate, expired (past the log's retention), no_input (nothing logged to replay), failed (the request had failed).",
			[]string{"pipeline", "reason"}, nil),
		models: prometheus.NewDesc("kiln_models",
			"Models by state (candidate, evaluating, rejected, live, standby, retired, rolled_back).",
			[]string{"pipeline", "state"}, nil),
		phase: prometheus.NewDesc("kiln_monitor_phase",
			"1 for the phase the live model's detector is in: warmup, armed, blind, or alarm (waiting for its decision).",
			[]string{"pipeline", "phase"}, nil),
		rate: prometheus.NewDesc("kiln_monitor_labels_per_day",
			"Labels a day over the last 7 days (or since the first).", []string{"pipeline"}, nil),
		retrains: prometheus.NewDesc("kiln_monitor_automatic_retrains_24h",
			"Retraining runs the monitor started in the last 24 hours (monitor.max_retrains_per_day caps them).",
			[]string{"pipeline"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *monitorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.metric
	ch <- c.labels
	ch <- c.unmatched
	ch <- c.rejected
	ch <- c.models
	ch <- c.phase
	ch <- c.rate
	ch <- c.retrains
}

// Collect implements prometheus.Collector.
func (c *monitorCollector) Collect(ch chan<- prometheus.Metric) {
	specs := c.d.pipelines.Load().specs
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(specs); err != nil {
		c.d.log.Warn("metrics: read monitor records", "err", err)
		return
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		ps := c.cached[name]
		ps.spec = specs[name]
		ps.metric = metricOf(ps.spec, ps.scorings)
		if ps.live != "" {
			if st, _ := ps.standing(ps.live); st.Labels > 0 && metricValue(st.Value) != nil {
				ch <- prometheus.MustNewConstMetric(c.metric, prometheus.GaugeValue, st.Value, name, ps.live, "live", ps.metric)
			}
		}
		if ps.standby != "" && ps.standby != ps.live {
			if st := monitor.StandingOf(ps.scorings, ps.standby, ps.metric, time.Time{}); st.Labels > 0 && metricValue(st.Value) != nil {
				ch <- prometheus.MustNewConstMetric(c.metric, prometheus.GaugeValue, st.Value, name, ps.standby, "standby", ps.metric)
			}
		}
		var labels int64
		var join storage.JoinReport
		for _, sc := range ps.scorings {
			labels += scoredLabels(sc)
			if j := sc.Join; j != nil {
				join.Unmatched += j.Unmatched
				join.Duplicates += j.Duplicates
				join.Expired += j.Expired
				join.NoInput += j.NoInput
				join.Failed += j.Failed
			}
		}
		ch <- prometheus.MustNewConstMetric(c.labels, prometheus.CounterValue, float64(labels), name)
		ch <- prometheus.MustNewConstMetric(c.unmatched, prometheus.CounterValue, float64(join.Unmatched), name)
		for _, r := range []struct {
			reason string
			n      int64
		}{{"duplicate", join.Duplicates}, {"expired", join.Expired}, {"no_input", join.NoInput}, {"failed", join.Failed}} {
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(r.n), name, r.reason)
		}
		for _, st := range slices.Sorted(maps.Keys(ps.modelStates)) {
			ch <- prometheus.MustNewConstMetric(c.models, prometheus.GaugeValue, float64(ps.modelStates[st]), name, string(st))
		}
		if ps.spec != nil {
			w := monitor.WatchOf(ps.scorings, ps.liveState(), ps.spec.Monitor.MinLabelRate, ps.spec.Monitor.TargetFalseAlarm, time.Now())
			ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, w.LabelsPerDay, name)
			if w.Phase != "" {
				ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, 1, name, w.Phase)
			}
		}
		var recent int
		if ps.state != nil {
			for _, at := range ps.state.Retrains {
				if time.Since(at) < 24*time.Hour {
					recent++
				}
			}
		}
		ch <- prometheus.MustNewConstMetric(c.retrains, prometheus.GaugeValue, float64(recent), name)
	}
}

// refresh re-reads the records when the event chain moved, the pipeline set
// changed, or the copy is older than monitorCacheAge. The head is read
// before the records, so a copy is never older than the sequence it is kept
// under.
func (c *monitorCollector) refresh(specs map[string]*config.Pipeline) error {
	seq, _ := c.d.store.Head()
	fresh := c.cached != nil && seq == c.seq && time.Since(c.at) < monitorCacheAge && len(c.cached) == len(specs)
	for name := range specs {
		if _, ok := c.cached[name]; !ok {
			fresh = false
		}
	}
	if fresh {
		return nil
	}
	next := make(map[string]pipelineScores, len(specs))
	err := c.d.store.View(func(tx *storage.Tx) error {
		for name, spec := range specs {
			ps, err := readScores(tx, name, spec)
			if err != nil {
				return err
			}
			next[name] = ps
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.cached, c.seq, c.at = next, seq, time.Now()
	return nil
}

// scoredLabels is how many labelled rows of a feedback version reached
// scoring: the most any of its models scored, counting the rows a model left
// out because it had trained on them.
func scoredLabels(sc storage.Scoring) int64 {
	var n int64
	for _, ms := range sc.Models {
		n = max(n, ms.Rows+ms.Excluded)
	}
	return n
}
