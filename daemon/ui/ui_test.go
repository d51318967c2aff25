package ui

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
)

// source is a kilnd with one pipeline: enough for every template's
// branches the browser test's real kilnd does not reach (a leased GPU, a
// pipeline with nothing yet, a Source error).
type source struct {
	gpuErr error
	empty  bool
}

var t0 = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

func (s source) Status(context.Context) api.Status {
	v := 0.9
	return api.Status{State: "ready", Containerd: api.ComponentStatus{Detail: "containerd at /x: refused"},
		Monitor: []api.PipelineMonitor{{Pipeline: "pumps", Live: "pumps/m2", Metric: "accuracy", Value: &v, Labels: 10,
			Watch: &api.Watch{Detector: "alarm", Alarm: "cusum:overall"}}}}
}

func (s source) GPU() (api.GPUReport, error) {
	return api.GPUReport{Available: true, GPUs: []api.GPU{{Index: 0, Name: "H100", Healthy: true, State: api.GPULeased,
		Lease: &api.GPULease{Holder: "pumps/r3"}, Memory: api.GPUMemory{Used: 1 << 30, Total: 80 << 30},
		Utilization: &api.GPUUtilization{GPU: 97, Memory: 40}}}}, s.gpuErr
}

func (s source) Pipelines() []string {
	if s.empty {
		return nil
	}
	return []string{"pumps"}
}

func (s source) Datasets(string) ([]api.Dataset, error) {
	return []api.Dataset{{ID: "pumps/d1", Pipeline: "pumps", Kind: "data", State: "quarantined", Rows: 1, Created: t0, Reason: "schema <bad>"}}, nil
}

func (s source) Report(string) (any, error) { return map[string]any{"rows": 1}, nil }

func (s source) QuarantineReason(string) ([]byte, error) {
	return nil, errors.New("open REASON.json: no such file")
}

func (s source) Runs(string) ([]api.Run, error) {
	return []api.Run{{ID: "pumps/r3", Pipeline: "pumps", State: "running", Created: t0, Labels: map[string]string{"trigger": "monitor"}}}, nil
}

func (s source) RunLog(id string, w io.Writer) error {
	if id != "pumps/r3" {
		return ErrNotFound
	}
	_, err := io.WriteString(w, strings.Repeat("x", maxLog)+"<end>")
	return err
}

func (s source) Models(string) ([]api.Model, error) { return nil, nil }

func (s source) Accuracy(p string) (api.Accuracy, error) {
	return api.Accuracy{Pipeline: p, Metric: "accuracy", Models: []api.ModelSeries{}, Deployments: []api.DeploymentMark{}}, nil
}

func (s source) Detector(string) ([]chart.DetectorPoint, string, error) { return nil, "", nil }

func (s source) Lineage(id, dir string) (api.Lineage, error) {
	if id != "pumps/m2" {
		return api.Lineage{}, ErrNotFound
	}
	if dir == "down" {
		return api.Lineage{ID: id}, nil
	}
	// m2 from r2 from d1 and d2; d2 also came from d1 (a joined version):
	// d1 is reached twice.
	return api.Lineage{ID: id, Nodes: make([]api.LineageNode, 4), Edges: []api.LineageEdge{
		{From: "pumps/r2", To: "pumps/m2", Type: "produced"},
		{From: "pumps/d1", To: "pumps/r2", Type: "trained_on"},
		{From: "pumps/d2", To: "pumps/r2", Type: "trained_on"},
		{From: "pumps/d1", To: "pumps/d2", Type: "joined"},
		{From: "uid:0", To: "pumps/d1", Type: "dropped"},
	}}, nil
}

func (s source) Events(since uint64, limit int) ([]api.Event, error) {
	return []api.Event{{Seq: 1, Time: t0, Actor: "kilnd", Kind: "image.imported", Refs: []string{"kiln.local/x:1", "pumps/d1"}}}, nil
}

func (s source) Subscribe(ctx context.Context, since uint64) <-chan api.Event {
	ch := make(chan api.Event, 1)
	ch <- api.Event{Seq: since, Kind: "run.queued"}
	close(ch)
	return ch
}

func (s source) Head() uint64 { return 1 }

func get(t *testing.T, src Source, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	New(src, slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

// TestPages renders every page over a Source and checks what each says,
// the headers every answer carries, and the answers for unknown things.
func TestPages(t *testing.T) {
	for _, tc := range []struct {
		src    Source
		path   string
		status int
		wants  []string
	}{
		{source{}, "/ui/", 200, []string{`<a href="/ui/lineage/pumps/r3">pumps/r3</a>`, "97% gpu", "1.0 GiB / 80.0 GiB (1%)",
			"<b>unreachable</b>", `<b class="value">0.9000</b>`, "cusum:overall", "1 row,", "1 waiting for a person:"}},
		{source{empty: true, gpuErr: errors.New("nvml gone")}, "/ui/", 200, []string{"No pipeline is loaded", "nvml gone"}},
		{source{}, "/ui/pipelines/pumps", 200, []string{"no labelled feedback yet", "no model yet", "REASON.json unreadable: open REASON.json",
			"schema &lt;bad&gt;", `<pre class="report">{`, "monitor</td>"}},
		{source{}, "/ui/pipelines/nope", 404, []string{`no pipeline &#34;nope&#34; is loaded`}},
		{source{}, "/ui/lineage/pumps/m2", 200, []string{`data-id="pumps/d1"`, "(above)", `<span>uid:0</span>`}},
		{source{}, "/ui/lineage/pumps/m9", 404, []string{"not found"}},
		{source{}, "/ui/events", 200, []string{`data-next="2"`, "kiln.local/x:1 <a", `<a href="/ui/lineage/pumps/d1">pumps/d1</a>`, `<noscript><meta http-equiv="refresh"`}},
		{source{}, "/ui/runs/pumps/r3/log", 200, []string{"the first 5 bytes are left out", "&lt;end&gt;"}},
		{source{}, "/ui/runs/pumps/r4/log", 404, nil},
		{source{}, "/ui/static/events.js", 200, []string{"EventSource"}},
		{source{}, "/ui/nothing", 404, []string{"no page /ui/nothing"}},
	} {
		status, hdr, body := get(t, tc.src, tc.path)
		if status != tc.status {
			t.Errorf("GET %s = %d, want %d\n%s", tc.path, status, tc.status, body)
		}
		for _, w := range tc.wants {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s lacks %q", tc.path, w)
			}
		}
		if got := hdr.Get("Content-Security-Policy"); got != contentPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, got)
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: headers %v", tc.path, hdr)
		}
	}
	// The lineage tree: d1 is listed twice and expanded once.
	_, _, body := get(t, source{}, "/ui/lineage/pumps/m2")
	if n := strings.Count(body, `data-id="uid:0"`); n != 1 {
		t.Errorf("uid:0 listed %d times; want once (d1 expanded once)", n)
	}
}

// TestStream: events from ?since=, or after Last-Event-ID, as SSE.
func TestStream(t *testing.T) {
	for _, tc := range []struct {
		last, want string
	}{{"", "id: 7\n"}, {"9", "id: 10\n"}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/ui/events/stream?since=7", nil)
		if tc.last != "" {
			req.Header.Set("Last-Event-ID", tc.last)
		}
		New(source{}, slog.New(slog.DiscardHandler)).ServeHTTP(rec, req)
		if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("Content-Type %q", ct)
		}
		if !strings.Contains(rec.Body.String(), tc.want+`data: {"seq":`) {
			t.Errorf("Last-Event-ID %q: stream %q; want %q", tc.last, rec.Body.String(), tc.want)
		}
	}
}

func TestShortIDLinks(t *testing.T) {
	link := funcs["link"].(func(string) string)
	got := map[string]string{}
	for _, id := range []string{"pumps/m7", "a-b/d12", "kiln.local/x:1", "uid:0", "pumps/m7/x", "Pumps/m1", "pumps/7"} {
		got[id] = link(id)
	}
	want := map[string]string{"pumps/m7": "/ui/lineage/pumps/m7", "a-b/d12": "/ui/lineage/a-b/d12",
		"kiln.local/x:1": "", "uid:0": "", "pumps/m7/x": "", "Pumps/m1": "", "pumps/7": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
}
