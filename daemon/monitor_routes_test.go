//go:build cgo

package daemon

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

// startMonitorDaemon runs kilnd with two pipelines: iris (accuracy, standby
// kept warm) and pumps (standby stopped, feedback files up to 1 KiB).
func startMonitorDaemon(t *testing.T) (*testDaemon, config.Paths) {
	t.Helper()
	root := shortRoot(t)
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	specs := map[string]string{
		"iris.yaml": "data: {format: csv, label: y, settle: 0s}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\nevaluate: {metric: accuracy}\n",
		"pumps.yaml": "data: {format: csv, label: y, settle: 0s, max_file_size: 1Ki}\ntrain: {image: kiln.local/t:1}\n" +
			"serve: {image: kiln.local/s:1, standby: stop}\n",
	}
	for name, spec := range specs {
		if err := os.WriteFile(filepath.Join(paths.PipelinesDir, name), []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return startTestDaemon(t, root, gputest.New(1, gpus.A100_SXM4_40GB)), paths
}

// TestMonitorReadSide writes what the monitor would (scorings, one per
// feedback version) and deployments into kilnd's real store, then reads
// them back through the real client over the real socket: the accuracy
// series, kiln models show, kiln status and the Prometheus figures.
func TestMonitorReadSide(t *testing.T) {
	ctx := context.Background()
	td, _ := startMonitorDaemon(t)
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	hour := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }

	var m1, m2 storage.Model
	err := td.d.store.Update(ctx, func(tx *storage.Tx) error {
		run, err := tx.CreateRun(storage.Run{Pipeline: "iris", State: storage.RunSucceeded})
		if err != nil {
			return err
		}
		if m1, err = tx.CreateModel(storage.Model{Pipeline: "iris", Run: run.ID, State: storage.ModelStandby, Metrics: map[string]float64{"accuracy": 0.9}}); err != nil {
			return err
		}
		if m2, err = tx.CreateModel(storage.Model{Pipeline: "iris", Run: run.ID, State: storage.ModelLive, Metrics: map[string]float64{"accuracy": 0.95}}); err != nil {
			return err
		}
		if _, err := tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: m1.ID, State: storage.DeployStandby, Created: hour(0)}); err != nil {
			return err
		}
		if _, err := tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: m2.ID, State: storage.DeployLive, Created: hour(2)}); err != nil {
			return err
		}
		for _, sc := range []storage.Scoring{
			// Before m2: m1 live alone.
			{Feedback: "iris/d1", Type: storage.FeedbackRows, Arrived: hour(1),
				Models: []storage.ModelScore{{Model: m1.ID, Role: "live", Rows: 10, Right: 8, Value: 0.8}}},
			// m2 live, m1 standby, on the same rows.
			{Feedback: "iris/d2", Type: storage.FeedbackRows, Arrived: hour(3),
				Models: []storage.ModelScore{{Model: m2.ID, Role: "live", Rows: 10, Right: 9, Value: 0.9},
					{Model: m1.ID, Role: "standby", Rows: 10, Right: 7, Value: 0.7}},
				Paired: &storage.Paired{Rows: 10, Both: 6, LiveOnly: 3, StandbyOnly: 1}, Outcomes: make([]byte, 10)},
			// Late labels: one row m2 trained on is left out of its score.
			{Feedback: "iris/d3", Type: storage.FeedbackLabels, Arrived: hour(5),
				Models: []storage.ModelScore{{Model: m2.ID, Role: "live", Rows: 4, Excluded: 1, Right: 2, Value: 0.5},
					{Model: m1.ID, Role: "standby", Rows: 5, Right: 5, Value: 1}},
				Paired: &storage.Paired{Rows: 4, Both: 2, StandbyOnly: 2},
				Join:   &storage.JoinReport{Labels: 12, Matched: 5, Unmatched: 3, Expired: 1, Duplicates: 2, Failed: 1}},
		} {
			sc.Pipeline, sc.Metric = "iris", "accuracy"
			if err := tx.PutScoring(sc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }

	t.Run("accuracy", func(t *testing.T) {
		a, err := td.client.Accuracy(ctx, "iris")
		if err != nil {
			t.Fatal(err)
		}
		want := api.Accuracy{Pipeline: "iris", Metric: "accuracy", Live: m2.ID, Standby: m1.ID,
			Models: []api.ModelSeries{
				{Model: m1.ID, Points: []api.SeriesPoint{
					{Time: hour(1), Feedback: "iris/d1", Role: "live", Rows: 10, Value: f(0.8), Labels: 10, Cumulative: f(0.8)},
					{Time: hour(3), Feedback: "iris/d2", Role: "standby", Rows: 10, Value: f(0.7), Labels: 20, Cumulative: f(0.75)},
					{Time: hour(5), Feedback: "iris/d3", Role: "standby", Rows: 5, Value: f(1), Labels: 25, Cumulative: f(0.8)},
				}},
				{Model: m2.ID, Points: []api.SeriesPoint{
					{Time: hour(3), Feedback: "iris/d2", Role: "live", Rows: 10, Value: f(0.9), Labels: 10, Cumulative: f(0.9)},
					{Time: hour(5), Feedback: "iris/d3", Role: "live", Rows: 4, Value: f(0.5), Labels: 14, Cumulative: f(11.0 / 14)},
				}},
			},
			Deployments: []api.DeploymentMark{
				{ID: "iris/e1", Model: m1.ID, State: "standby", Created: hour(0)},
				{ID: "iris/e2", Model: m2.ID, State: "live", Created: hour(2)},
			},
		}
		if diff := cmp.Diff(want, a, cmp.Comparer(approx)); diff != "" {
			t.Errorf("accuracy (-want +got):\n%s", diff)
		}
		// No history, no spec: 404. A loaded pipeline without scores: empty.
		var apiErr *apiclient.Error
		if _, err := td.client.Accuracy(ctx, "nosuch"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
			t.Errorf("unknown pipeline: %v, want 404", err)
		}
		empty, err := td.client.Accuracy(ctx, "pumps")
		if err != nil || len(empty.Models) != 0 || empty.Metric != "accuracy" {
			t.Errorf("pumps accuracy = %+v, %v; want no series", empty, err)
		}
	})

	t.Run("models show", func(t *testing.T) {
		got, err := td.client.Model(ctx, m2.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := &api.ModelMonitor{Metric: "accuracy", Holdout: f(0.95), Promoted: hour(2), Value: f(11.0 / 14), Labels: 14,
			Excluded: 1, Versions: 2, Last: hour(5), Paired: &api.Paired{Rows: 14, Both: 8, LiveOnly: 3, StandbyOnly: 3}}
		if diff := cmp.Diff(want, got.Monitor, cmp.Comparer(approx)); diff != "" {
			t.Errorf("%s monitor (-want +got):\n%s", m2.ID, diff)
		}
		// m1 went live at hour 0: every label since counts; it was never
		// live beside a standby, so it has no paired outcomes.
		got, err = td.client.Model(ctx, m1.ID)
		if err != nil {
			t.Fatal(err)
		}
		want = &api.ModelMonitor{Metric: "accuracy", Holdout: f(0.9), Promoted: hour(0), Value: f(0.8), Labels: 25, Versions: 3, Last: hour(5)}
		if diff := cmp.Diff(want, got.Monitor, cmp.Comparer(approx)); diff != "" {
			t.Errorf("%s monitor (-want +got):\n%s", m1.ID, diff)
		}
	})

	t.Run("status", func(t *testing.T) {
		s, err := td.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []api.PipelineMonitor{
			// The scorings are older than the label-rate window: 0 a day,
			// below monitor.min_label_rate, so the monitor says it is blind.
			{Pipeline: "iris", Live: m2.ID, Standby: m1.ID, Metric: "accuracy", Value: f(11.0 / 14), Labels: 14,
				Watch: &api.Watch{Blind: true, BlindWhy: "fewer labels a day than monitor.min_label_rate"}},
			{Pipeline: "pumps", Metric: "accuracy", StandbyStopped: true},
		}
		if diff := cmp.Diff(want, s.Monitor, cmp.Comparer(approx)); diff != "" {
			t.Errorf("status monitor (-want +got):\n%s", diff)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		got := scrape(t, td)
		want := map[string]float64{
			`kiln_model_metric{metric="accuracy",model="iris/m2",pipeline="iris",role="live"}`:    11.0 / 14,
			`kiln_model_metric{metric="accuracy",model="iris/m1",pipeline="iris",role="standby"}`: 0.8,
			`kiln_feedback_labels_total{pipeline="iris"}`:                                         25,
			`kiln_feedback_unmatched_total{pipeline="iris"}`:                                      3,
			`kiln_feedback_rejected_total{pipeline="iris",reason="duplicate"}`:                    2,
			`kiln_feedback_rejected_total{pipeline="iris",reason="expired"}`:                      1,
			`kiln_feedback_rejected_total{pipeline="iris",reason="no_input"}`:                     0,
			`kiln_feedback_rejected_total{pipeline="iris",reason="failed"}`:                       1,
			`kiln_feedback_labels_total{pipeline="pumps"}`:                                        0,
			`kiln_feedback_unmatched_total{pipeline="pumps"}`:                                     0,
			`kiln_models{pipeline="iris",state="live"}`:                                           1,
			`kiln_models{pipeline="iris",state="standby"}`:                                        1,
			`kiln_monitor_labels_per_day{pipeline="iris"}`:                                        0,
			`kiln_monitor_automatic_retrains_24h{pipeline="iris"}`:                                0,
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || !approx(g, v) {
				t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
			}
		}
		for k := range got {
			if strings.HasPrefix(k, "kiln_model_metric") && strings.Contains(k, "pumps") {
				t.Errorf("pumps has no model but exports %s", k)
			}
		}
		// A new scoring with its event shows at the next scrape.
		err := td.d.store.Update(ctx, func(tx *storage.Tx) error {
			if err := tx.PutScoring(storage.Scoring{Feedback: "iris/d4", Pipeline: "iris", Type: storage.FeedbackRows, Metric: "accuracy",
				Arrived: hour(6), Models: []storage.ModelScore{{Model: m2.ID, Role: "live", Rows: 6, Right: 6, Value: 1}}}); err != nil {
				return err
			}
			_, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "feedback.scored", Pipeline: "iris", Refs: []string{"iris/d4"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		got = scrape(t, td)
		if g := got[`kiln_feedback_labels_total{pipeline="iris"}`]; g != 31 {
			t.Errorf("labels after one more version = %v, want 31", g)
		}
		if g := got[`kiln_model_metric{metric="accuracy",model="iris/m2",pipeline="iris",role="live"}`]; !approx(g, 17.0/20) {
			t.Errorf("live metric after one more version = %v, want %v", g, 17.0/20)
		}
	})
}

// TestFeedbackUpload sends feedback through the API: it lands in the
// pipeline's feedback folder under a cli- name, whole, and ingest takes it
// as a feedback version; unknown pipelines, empty bodies and bodies over
// data.max_file_size (sized or streamed) are refused and leave nothing behind.
func TestFeedbackUpload(t *testing.T) {
	ctx := context.Background()
	td, paths := startMonitorDaemon(t)
	dir := filepath.Join(paths.FeedbackDir, "pumps")
	waitUntil(t, "feedback folder", func() bool { _, err := os.Stat(dir); return err == nil })

	// A temp file a crash left an hour ago is swept by the next upload.
	stale := filepath.Join(dir, feedbackTempPrefix+"crashed")
	if err := os.WriteFile(stale, []byte("half a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * staleUpload)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}

	body := "a,b,y\n1,2,c0\n3,4,c1\n5,6,c0\n"
	res, err := td.client.Feedback(ctx, "pumps", strings.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^cli-\d{8}T\d{6}\.\d{3}Z-\d+\.csv$`).MatchString(res.File) || res.Bytes != int64(len(body)) || res.Pipeline != "pumps" {
		t.Fatalf("feedback = %+v", res)
	}
	// Streamed (chunked, size unknown) too.
	res2, err := td.client.Feedback(ctx, "pumps", strings.NewReader(body+"7,8,c1\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale upload temp file still there: %v", err)
	}
	if res2.File == res.File {
		t.Fatalf("two uploads share the name %s", res.File)
	}
	var seen []string
	waitUntil(t, "two feedback versions", func() bool {
		ds, err := td.client.Datasets(ctx, "pumps")
		seen = seen[:0]
		for _, d := range ds {
			if d.Kind == "feedback" && len(d.Files) == 1 {
				seen = append(seen, filepath.Base(d.Files[0].Path))
			}
		}
		return err == nil && len(seen) == 2
	})
	if !strings.Contains(strings.Join(seen, " "), res.File) || !strings.Contains(strings.Join(seen, " "), res2.File) {
		t.Errorf("feedback versions hold %v, want %s and %s", seen, res.File, res2.File)
	}
	if !strings.Contains(eventKinds(t, td), "feedback.queued") {
		t.Errorf("no feedback.queued event: %s", eventKinds(t, td))
	}

	big := strings.Repeat("1,2,c0\n", 200) // 1400 bytes, over 1Ki
	for _, tc := range []struct {
		name     string
		pipeline string
		body     string
		size     int64
		status   int
	}{
		{"unknown pipeline", "nosuch", body, int64(len(body)), http.StatusNotFound},
		{"empty", "pumps", "", 0, http.StatusBadRequest},
		{"over max_file_size, sized", "pumps", big, int64(len(big)), http.StatusRequestEntityTooLarge},
		{"over max_file_size, streamed", "pumps", big, -1, http.StatusRequestEntityTooLarge},
	} {
		_, err := td.client.Feedback(ctx, tc.pipeline, strings.NewReader(tc.body), tc.size)
		var apiErr *apiclient.Error
		if !errors.As(err, &apiErr) || apiErr.Status != tc.status {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.status)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		// The accepted uploads may still be on their way to the blob store.
		if de.Name() != res.File && de.Name() != res2.File {
			t.Errorf("left in %s after refusals: %s", dir, de.Name())
		}
	}
}

// scrape reads kilnd's /metrics through the client: series -> value.
func scrape(t *testing.T, td *testDaemon) map[string]float64 {
	t.Helper()
	text, err := td.client.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
