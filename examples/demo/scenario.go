package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

const pipeline = "cancer"

// spec is the demo's pipeline: the example one with seconds for minutes.
//
//go:embed cancer.yaml
var spec []byte

// report is what each step saw, all read from `kiln ... -o json`; the test
// asserts on it.
type report struct {
	First, FirstState string // step 1's model
	FirstAccuracy     float64
	Predicted, Truth  []string
	Endpoint          string // the endpoint's answer for one row

	Quarantined, QuarantineReason string

	Corrupted, CorruptedState string // step 3's model: live when the gate could not see the fault

	Rollback        map[string]string // the model.rolled_back_to event's details
	RolledBackModel string
	Suspect         []string // datasets flagged by the rollback

	Corrected, CorrectedState string // step 5's clean batch's model
	Baseline                  float64
	Drift                     map[string]string // the monitor.drift_detected event's details
	Retrain, RetrainModel     string
	RetrainState              string
	RetrainAfter              float64 // the retrained model's accuracy on shifted feedback, when promoted

	Live    string
	Lineage api.Lineage
	Events  int
	SVG     string
	PNG     string
	UIPages []string // the dashboard's pages that showed what they should
	UIShots []string // their screenshots, when chromium is installed

	// Step 7, the PyTorch digits; DigitsSkipped says why it did not run.
	DigitsSkipped                   string
	DigitsLive                      string
	DigitsAccuracy                  float64 // kilnd's, on the holdout images
	DigitsHoldout                   int
	DigitsPredicted, DigitsTruth    []string
	DigitsQuarantined, DigitsReason string // the corrupt batch's state and reason
}

// demo is one run of the scenario on a box.
type demo struct {
	b    *box
	data cancer
	out  io.Writer
	rep  report
	file int // feedback files sent so far (their salt)
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, "  "+format+"\n", args...) }

func (d *demo) step(n int, title string) {
	fmt.Fprintf(d.out, "\n[%d/7 at %4.1fs] %s\n", n, time.Since(d.b.t0).Seconds(), title)
}

// runScenario runs the seven steps on a started box, stopping at the first
// that did not happen.
func runScenario(ctx context.Context, b *box, data cancer, out io.Writer) (report, error) {
	d := &demo{b: b, data: data, out: out}
	for _, s := range []func(context.Context) error{d.first, d.schemaError, d.corrupted, d.rollback, d.drift, d.story, d.digits} {
		if err := s(ctx); err != nil {
			return d.rep, err
		}
	}
	return d.rep, nil
}

// Reads, each one `kiln ... -o json`.

func (d *demo) models(ctx context.Context) ([]api.Model, error) {
	var ms []api.Model
	return ms, d.b.kilnJSON(ctx, &ms, "models", "-p", pipeline)
}

func (d *demo) model(ctx context.Context, id string) (api.Model, error) {
	var m api.Model
	return m, d.b.kilnJSON(ctx, &m, "models", "show", id)
}

func (d *demo) datasets(ctx context.Context) ([]api.Dataset, error) {
	var ds []api.Dataset
	return ds, d.b.kilnJSON(ctx, &ds, "datasets", "-p", pipeline)
}

func (d *demo) events(ctx context.Context) ([]api.Event, error) {
	var evs []api.Event
	return evs, d.b.kilnJSON(ctx, &evs, "events", "--limit", "100000")
}

func (d *demo) accuracy(ctx context.Context) (api.Accuracy, error) {
	var a api.Accuracy
	return a, d.b.kilnJSON(ctx, &a, "models", "accuracy", pipeline)
}

func (d *demo) watch(ctx context.Context) (api.PipelineMonitor, error) {
	var st api.Status
	if err := d.b.kilnJSON(ctx, &st, "status"); err != nil {
		return api.PipelineMonitor{}, err
	}
	for _, m := range st.Monitor {
		if m.Pipeline == pipeline {
			return m, nil
		}
	}
	return api.PipelineMonitor{}, fmt.Errorf("kiln status: no monitor line for %s", pipeline)
}

// datasetOf waits until the file named name has become a dataset version.
func (d *demo) datasetOf(ctx context.Context, name string) (api.Dataset, error) {
	var got api.Dataset
	err := d.b.until(ctx, time.Minute, name+" ingested", func() (bool, error) {
		ds, err := d.datasets(ctx)
		for _, v := range ds {
			for _, f := range v.Files {
				if filepath.Base(f.Path) == name {
					got = v
					return true, nil
				}
			}
		}
		return false, err
	})
	return got, err
}

// settledModel waits for the run that trained on dataset (or, with dataset
// "", the first run the monitor started) to end, and for its model to be
// evaluated: it returns the run and the model as the gate left it.
func (d *demo) settledModel(ctx context.Context, dataset string, byMonitor bool) (api.Run, api.Model, error) {
	var run api.Run
	var model api.Model
	err := d.b.until(ctx, 2*time.Minute, "the run and its evaluation", func() (bool, error) {
		var runs []api.Run
		if err := d.b.kilnJSON(ctx, &runs, "runs", "-p", pipeline); err != nil {
			return false, err
		}
		found := false
		for _, r := range runs {
			if (dataset != "" && slices.Contains(r.Datasets, dataset)) || (byMonitor && r.Labels["trigger"] == "monitor") {
				run, found = r, true
			}
		}
		switch {
		case !found:
			return false, nil
		case run.State == "failed" || run.State == "cancelled":
			return false, fmt.Errorf("run %s %s: %s", run.ID, run.State, run.Reason)
		case run.State != "succeeded":
			return false, nil
		}
		ms, err := d.models(ctx)
		for _, m := range ms {
			if m.Run == run.ID && m.State != "candidate" && m.State != "evaluating" {
				model = m
				return true, nil
			}
		}
		return false, err
	})
	return run, model, err
}

// gateWords is what the gate said of a model, from its history.
func (d *demo) gateWords(ctx context.Context, id string) string {
	m, err := d.model(ctx, id)
	if err != nil {
		return err.Error()
	}
	for _, e := range slices.Backward(m.History) {
		if r := e.Details["gate"]; r != "" && (e.Kind == "model.promoted" || e.Kind == "model.rejected") {
			return r
		}
	}
	return m.Reason
}

// Step 1: the first batch of real data, trained, evaluated, live, answering.
func (d *demo) first(ctx context.Context) error {
	d.step(1, "A first batch of real data: 300 rows of the UCI breast cancer set")
	for _, f := range []string{"tabular-trainer.tar", "tabular-server.tar"} {
		var res api.ImportResult
		if err := d.b.kilnJSON(ctx, &res, "images", "import", filepath.Join(d.b.opt.images, f)); err != nil {
			return fmt.Errorf("%w (make images)", err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.b.root, "etc/kiln/pipelines", pipeline+".yaml"), spec, 0o644); err != nil {
		return err
	}
	var rr api.ReloadResult
	if err := d.b.kilnJSON(ctx, &rr, "pipelines", "reload"); err != nil {
		return err
	}
	d.say("example images imported from %s; pipeline %s loaded (examples/demo/cancer.yaml)", d.b.opt.images, pipeline)
	if err := d.b.until(ctx, 10*time.Second, "the drop folder", func() (bool, error) {
		_, err := os.Stat(filepath.Join(d.b.root, "var/lib/kiln/drop", pipeline))
		return err == nil, nil
	}); err != nil {
		return err
	}
	if err := d.b.drop("drop/"+pipeline, "batch1.csv", d.data.batch(span(0, 300), shape{scale: 1})); err != nil {
		return err
	}
	ds, err := d.datasetOf(ctx, "batch1.csv")
	if err != nil {
		return err
	}
	if ds.State != "accepted" {
		return fmt.Errorf("batch 1: %s %s: %s", ds.ID, ds.State, ds.Reason)
	}
	var detail api.DatasetDetail
	if err := d.b.kilnJSON(ctx, &detail, "datasets", "show", ds.ID); err != nil {
		return err
	}
	var parts []string
	for _, p := range detail.Parts {
		parts = append(parts, fmt.Sprintf("%d %s", p.Rows, strings.TrimSuffix(filepath.Base(p.Path), filepath.Ext(p.Path))))
	}
	d.say("%s accepted: %d rows validated, split %s", ds.ID, ds.Rows, strings.Join(parts, " / "))
	run, m, err := d.settledModel(ctx, ds.ID, false)
	if err != nil {
		return err
	}
	d.rep.First, d.rep.FirstState, d.rep.FirstAccuracy = m.ID, m.State, m.Metrics["accuracy"]
	d.say("%s trained the example logistic regression in a container (%.1fs)", run.ID, run.Finished.Sub(run.Started).Seconds())
	d.say("%s scored by kilnd through its own serving container: %s -> %s", m.ID, d.gateWords(ctx, m.ID), m.State)
	if m.State != "live" {
		return fmt.Errorf("%s is %s, want live: %s", m.ID, m.State, m.Reason)
	}
	// Three rows no model saw, header and label column included: kiln
	// predict matches the header by name and leaves the label out.
	rows := []int{540, 552, 565}
	out, err := d.b.kiln(ctx, bytes.NewReader(d.data.batch(rows, shape{scale: 1})), "predict", pipeline, "-o", "json")
	if err != nil {
		return err
	}
	if err := jsonInto(out, &d.rep.Predicted); err != nil {
		return err
	}
	for _, i := range rows {
		d.rep.Truth = append(d.rep.Truth, d.data.labels[i])
	}
	if len(d.rep.Predicted) != len(rows) {
		return fmt.Errorf("kiln predict: %d answers for %d rows", len(d.rep.Predicted), len(rows))
	}
	d.say("kiln predict %s, 3 rows no model saw -> %s (truth: %s)", pipeline,
		strings.Join(d.rep.Predicted, ", "), strings.Join(d.rep.Truth, ", "))
	// And as any client: the endpoint's socket, the serving contract's CSV.
	row := d.data.batch([]int{568}, shape{scale: 1})
	row = row[bytes.IndexByte(row, '\n')+1:]
	row = row[:bytes.LastIndexByte(row, ',')]
	sock := filepath.Join(d.b.root, "run/kiln/serve", pipeline+".sock")
	hc := http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := hc.Post("http://endpoint/invocations", "text/csv", bytes.NewReader(row))
	if err != nil {
		return fmt.Errorf("the endpoint %s: %w", sock, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read whole
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the endpoint %s: %s %s %v", sock, resp.Status, body, err)
	}
	d.rep.Endpoint = strings.TrimSpace(string(body))
	d.say("POST /invocations on %s -> %s (truth: %s), logged as request %s", sock, d.rep.Endpoint, d.data.labels[568],
		resp.Header.Get("X-Kiln-Request-Id"))
	return nil
}

// Step 2: a batch whose schema is wrong goes to quarantine with a reason.
func (d *demo) schemaError(ctx context.Context) error {
	d.step(2, `A batch with a schema error: a new export writes area_mean with its unit ("1001 um2")`)
	text := d.data.batch(span(300, 400), shape{scale: 1})
	var b bytes.Buffer
	for i, line := range strings.SplitAfter(string(text), "\n") {
		f := strings.Split(line, ",")
		if i > 0 && len(f) > 3 {
			f[3] += " um2" // area_mean
		}
		b.WriteString(strings.Join(f, ","))
	}
	if err := d.b.drop("drop/"+pipeline, "batch2.csv", b.Bytes()); err != nil {
		return err
	}
	ds, err := d.datasetOf(ctx, "batch2.csv")
	if err != nil {
		return err
	}
	if ds.State != "quarantined" || ds.Reason == "" {
		return fmt.Errorf("the malformed batch %s is %s (reason %q), want quarantined with a reason", ds.ID, ds.State, ds.Reason)
	}
	var detail api.DatasetDetail
	if err := d.b.kilnJSON(ctx, &detail, "datasets", "show", ds.ID); err != nil {
		return err
	}
	d.rep.Quarantined, d.rep.QuarantineReason = ds.ID, ds.Reason
	d.say("%s quarantined: %s", ds.ID, ds.Reason)
	d.say("the batch and its REASON.json are in %s; no run started, %s still live", detail.QuarantineDir, d.rep.First)
	return nil
}

// Step 3: a batch whose labels are all swapped. Each run trains on the
// newest batch alone, so the gate scores on that batch's own holdout, as
// corrupted as its training rows.
func (d *demo) corrupted(ctx context.Context) error {
	d.step(3, "A batch whose labels are corrupted consistently: the other 269 rows, every label swapped")
	if err := d.b.drop("drop/"+pipeline, "batch3.csv", d.data.batch(span(300, 569), shape{scale: 1, salt: 1, flip: true})); err != nil {
		return err
	}
	ds, err := d.datasetOf(ctx, "batch3.csv")
	if err != nil {
		return err
	}
	if ds.State != "accepted" {
		return fmt.Errorf("batch 3: %s %s: %s", ds.ID, ds.State, ds.Reason)
	}
	d.say("%s accepted: %d rows; the labels are valid values, so validation cannot tell", ds.ID, ds.Rows)
	run, m, err := d.settledModel(ctx, ds.ID, false)
	if err != nil {
		return err
	}
	d.rep.Corrupted, d.rep.CorruptedState = m.ID, m.State
	d.say("%s trained %s; the gate compared it with %s on %s's own holdout: %s", run.ID, m.ID, d.rep.First, ds.ID, d.gateWords(ctx, m.ID))
	switch m.State {
	case "live":
		d.say("-> %s live, %s warm standby: the gate cannot see labels that are wrong the same way in training and holdout", m.ID, d.rep.First)
	case "rejected":
		d.say("-> %s rejected: the gate saw it", m.ID)
	default:
		return fmt.Errorf("%s is %s after its evaluation", m.ID, m.State)
	}
	return nil
}

// feedback sends labelled rows through `kiln feedback` and waits until the
// monitor scored them; it returns the feedback version.
func (d *demo) feedback(ctx context.Context, rows []int, s shape) (string, error) {
	d.file++
	s.salt = 100 + d.file
	f, err := os.CreateTemp(d.b.root, "feedback-*.csv")
	if err != nil {
		return "", err
	}
	_, err = f.Write(d.data.batch(rows, s))
	if err = errors.Join(err, f.Close()); err != nil {
		return "", err
	}
	var res api.FeedbackResult
	err = d.b.kilnJSON(ctx, &res, "feedback", pipeline, f.Name())
	_ = os.Remove(f.Name()) // sent
	if err != nil {
		return "", err
	}
	ds, err := d.datasetOf(ctx, filepath.Base(res.File))
	if err != nil {
		return "", err
	}
	if ds.State != "accepted" {
		return "", fmt.Errorf("feedback %s %s: %s", ds.ID, ds.State, ds.Reason)
	}
	err = d.b.until(ctx, time.Minute, "feedback "+ds.ID+" scored", func() (bool, error) {
		evs, err := d.events(ctx)
		return slices.ContainsFunc(evs, func(e api.Event) bool {
			return e.Kind == "feedback.scored" && len(e.Refs) > 0 && e.Refs[0] == ds.ID
		}), err
	})
	return ds.ID, err
}

// lastEvent is the newest event of kind, or nil.
func (d *demo) lastEvent(ctx context.Context, kind string) (*api.Event, error) {
	evs, err := d.events(ctx)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind == kind {
			return &evs[i], err
		}
	}
	return nil, err
}

// count is how many events of kind there are.
func (d *demo) count(ctx context.Context, kind string) (int, error) {
	evs, err := d.events(ctx)
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n, err
}

// seriesValue is a model's metric over the feedback versions in fb.
func seriesValue(a api.Accuracy, model string, fb []string) (value float64, labels int64) {
	right := 0.0
	for _, s := range a.Models {
		if s.Model != model {
			continue
		}
		for _, p := range s.Points {
			if slices.Contains(fb, p.Feedback) && p.Value != nil {
				right += *p.Value * float64(p.Rows)
				labels += p.Rows
			}
		}
	}
	if labels == 0 {
		return 0, 0
	}
	return right / float64(labels), labels
}

func jsonInto(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("kiln predict -o json: %w: %.80q", err, b)
	}
	return nil
}

func fmtP(s string) string {
	if p, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.FormatFloat(p, 'g', 2, 64)
	}
	return s
}
