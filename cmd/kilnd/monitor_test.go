package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// monitorSpec is the example pipeline with its label set declared, so a
// label outside it can be sent as feedback.
var monitorSpec = strings.Replace(cancerSpec, "data: {format: csv, label: diagnosis, settle: 0s}",
	"data: {format: csv, label: diagnosis, settle: 0s, validate: {labels: [benign, malignant]}}", 1)

// containerOf finds the container whose name holds part (a model's ID).
func containerOf(t *testing.T, addr, ns, part string) string {
	t.Helper()
	out, err := exec.Command("ctr", "-a", addr, "-n", ns, "containers", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("ctr containers ls: %v", err)
	}
	for _, id := range strings.Fields(string(out)) {
		if strings.Contains(id, "serve") && strings.HasSuffix(id, part) {
			return id
		}
	}
	t.Fatalf("no serving container for %s among %q", part, out)
	return ""
}

func ctr(t *testing.T, addr, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ctr", append([]string{"-a", addr, "-n", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ctr %v: %v: %s", args, err, out)
	}
}

// cancerRows is the example data as header, feature rows and labels.
type cancerRows struct {
	header []string // features only
	rows   [][]string
	labels []string
}

func loadCancer(t *testing.T) cancerRows {
	t.Helper()
	f, err := os.Open("../../examples/tabular/data/breast_cancer.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	li := len(recs[0]) - 1 // diagnosis is the last column
	c := cancerRows{header: recs[0][:li]}
	for _, r := range recs[1:] {
		c.rows = append(c.rows, r[:li])
		c.labels = append(c.labels, r[li])
	}
	return c
}

// perturbed returns row with its first value nudged, so it is a row no
// model trained on (the monitor leaves trained-on rows out of scores).
func perturbed(row []string) []string {
	out := slices.Clone(row)
	v, _ := strconv.ParseFloat(out[0], 64)
	out[0] = strconv.FormatFloat(v*1.0007, 'g', -1, 64)
	return out
}

func csvText(header []string, rows [][]string) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	if header != nil {
		_ = w.Write(header)
	}
	_ = w.WriteAll(rows)
	return b.String()
}

// endpointClient talks to a pipeline's endpoint socket as any client would.
func endpointClient(sock string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

// invoke sends rows to the endpoint and returns the request id and the answers.
func invoke(t *testing.T, hc *http.Client, rows [][]string) (string, []string) {
	t.Helper()
	return invokeBody(t, hc, "text/csv", csvText(nil, rows))
}

// invokeBody posts body as contentType to the endpoint's /invocations and
// returns the request id and the answer's lines.
func invokeBody(t *testing.T, hc *http.Client, contentType, body string) (string, []string) {
	t.Helper()
	resp, err := hc.Post("http://kiln/invocations", contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("endpoint answered %s to %s: %s", resp.Status, contentType, answer)
	}
	id := resp.Header.Get("X-Kiln-Request-Id")
	if id == "" {
		t.Fatal("endpoint answer has no X-Kiln-Request-Id")
	}
	return id, strings.Split(strings.TrimSpace(string(answer)), "\n")
}

func datasetsOf(t *testing.T, k *kilnd) []api.Dataset {
	out, _, err := k.kiln(nil, "datasets", "-p", "cancer", "-o", "json")
	if err != nil {
		return nil
	}
	var ds []api.Dataset
	_ = json.Unmarshal([]byte(out), &ds)
	return ds
}

// dropFeedback renames text into feedback/cancer/ and returns the feedback
// version ingest made of it.
func dropFeedback(t *testing.T, k *kilnd, root, name, text string) api.Dataset {
	t.Helper()
	known := map[string]bool{}
	for _, d := range datasetsOf(t, k) {
		known[d.ID] = true
	}
	dir := filepath.Join(root, "var/lib/kiln/feedback/cancer")
	writeFile(t, filepath.Join(dir, "."+name+".part"), text)
	if err := os.Rename(filepath.Join(dir, "."+name+".part"), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	var got api.Dataset
	waitLong(t, time.Minute, "feedback "+name+" ingested", func() bool {
		for _, d := range datasetsOf(t, k) {
			if !known[d.ID] && d.Kind == "feedback" {
				got = d
				return true
			}
		}
		return false
	})
	return got
}

// scoredEvents returns the feedback.scored events of a feedback version.
func scoredEvents(t *testing.T, k *kilnd, id string) []api.Event {
	out, _, err := k.kiln(nil, "events", "-o", "json")
	if err != nil {
		return nil
	}
	var evs []api.Event
	_ = json.Unmarshal([]byte(out), &evs)
	var mine []api.Event
	for _, e := range evs {
		if e.Kind == "feedback.scored" && len(e.Refs) > 0 && e.Refs[0] == id {
			mine = append(mine, e)
		}
	}
	return mine
}

func waitScored(t *testing.T, k *kilnd, id string) map[string]string {
	t.Helper()
	var ev api.Event
	waitLong(t, time.Minute, "feedback "+id+" scored", func() bool {
		evs := scoredEvents(t, k, id)
		if len(evs) > 0 {
			ev = evs[0]
		}
		return len(evs) > 0
	})
	return ev.Details
}

func modelsOf(t *testing.T, k *kilnd) map[string]api.Model {
	out, _, err := k.kiln(nil, "models", "-p", "cancer", "-o", "json")
	if err != nil {
		return nil
	}
	var ms []api.Model
	_ = json.Unmarshal([]byte(out), &ms)
	by := map[string]api.Model{}
	for _, m := range ms {
		by[m.ID] = m
	}
	return by
}

func accuracy(pred, truth []string) float64 {
	right := 0
	for i := range truth {
		if strings.TrimSpace(pred[i]) == truth[i] {
			right++
		}
	}
	return float64(right) / float64(len(truth))
}

func other(label string) string {
	if label == "benign" {
		return "malignant"
	}
	return "benign"
}

func wantDetail(t *testing.T, what string, details map[string]string, key, want string) {
	t.Helper()
	if got := details[key]; got != want {
		t.Errorf("%s: %s = %q, want %q (details %v)", what, key, got, want, details)
	}
}

// TestMonitorScoresFeedback is issue 11's loop with real containerd, the
// real endpoint and the example images: a live model and a warm standby;
// rows sent through the endpoint; late labels for some logged ids joined to
// the log, scored with the accuracy computed here by hand and replayed
// through the standby; labelled rows scored through both on the same rows;
// rows the models trained on left out and counted; kilnd killed between a
// feedback file's acceptance and its score still counts each label once;
// hostile feedback reported or quarantined while kilnd stays up.
func TestMonitorScoresFeedback(t *testing.T) {
	k, root := startLoop(t, "kiln-test-monitor", monitorSpec)
	data := loadCancer(t)
	waitLong(t, 3*time.Minute, "m1 live", func() bool { return modelsOf(t, k)["cancer/m1"].State == "live" })

	// A second model from the same data; it goes live (through the gate or
	// by force) and m1 becomes the warm standby.
	if _, stderr, err := k.kiln(nil, "runs", "start", "cancer"); err != nil {
		t.Fatalf("kiln runs start: %v: %s", err, stderr)
	}
	waitLong(t, 3*time.Minute, "m2 evaluated", func() bool {
		s := modelsOf(t, k)["cancer/m2"].State
		return s == "live" || s == "rejected"
	})
	if modelsOf(t, k)["cancer/m2"].State == "rejected" {
		if _, stderr, err := k.kiln(nil, "promote", "cancer/m2", "--force"); err != nil {
			t.Fatalf("kiln promote --force: %v: %s", err, stderr)
		}
	}
	waitLong(t, time.Minute, "m2 live, m1 standby", func() bool {
		ms := modelsOf(t, k)
		return ms["cancer/m2"].State == "live" && ms["cancer/m1"].State == "standby"
	})

	// Late labels: 20 two-row requests through the endpoint, labels for all
	// their rows, plus an unknown id, a repeated id and a label outside the set.
	hc := endpointClient(filepath.Join(root, "run/kiln/serve/cancer.sock"))
	var labels strings.Builder
	labels.WriteString("request_id,label\n")
	var answers, truth []string
	for i := range 21 {
		a, b := 300+2*i, 301+2*i
		id, got := invoke(t, hc, [][]string{perturbed(data.rows[a]), perturbed(data.rows[b])})
		if len(got) != 2 {
			t.Fatalf("request %s answered %v", id, got)
		}
		if i == 20 {
			fmt.Fprintf(&labels, "%s:0,maybe\n", id) // outside the spec's labels
			continue
		}
		// Every third label is the wrong one, so the recorded accuracy
		// is a number only a correct join produces.
		la, lb := data.labels[a], data.labels[b]
		if i%3 == 0 {
			la = other(la)
		}
		fmt.Fprintf(&labels, "%s:0,%s\n%s:1,%s\n", id, la, id, lb)
		answers = append(answers, got...)
		truth = append(truth, la, lb)
		if i == 0 {
			fmt.Fprintf(&labels, "%s:1,%s\n", id, data.labels[b]) // a second label for one id
		}
	}
	labels.WriteString("nope-never-logged,benign\n")
	lv := dropFeedback(t, k, root, "late.csv", labels.String())
	if lv.State != "accepted" {
		t.Fatalf("late labels version %s is %s: %s", lv.ID, lv.State, lv.Reason)
	}
	d := waitScored(t, k, lv.ID)
	wantDetail(t, "late labels", d, "live_model", "cancer/m2")
	wantDetail(t, "late labels", d, "live_rows", "40")
	wantDetail(t, "late labels", d, "live_accuracy", strconv.FormatFloat(accuracy(answers, truth), 'f', 4, 64))
	wantDetail(t, "late labels", d, "standby_model", "cancer/m1")
	wantDetail(t, "late labels", d, "standby_rows", "40")
	wantDetail(t, "late labels", d, "matched", "40")
	wantDetail(t, "late labels", d, "unmatched", "1")
	if d["joined"] == "" {
		t.Errorf("late labels: no joined version recorded: %v", d)
	}
	t.Logf("late labels scored: %v", d)

	// Labelled rows nobody trained on: both models, the same 100 rows; the
	// live model's accuracy is what the endpoint answers for them.
	var fresh [][]string
	var freshLabels []string
	for i := 100; i < 200; i++ {
		fresh = append(fresh, perturbed(data.rows[i]))
		l := data.labels[i]
		if i%4 == 0 {
			l = other(l)
		}
		freshLabels = append(freshLabels, l)
	}
	_, liveAnswers := invoke(t, hc, fresh)
	rowsWithLabel := func(rows [][]string, lab []string) string {
		out := make([][]string, len(rows))
		for i := range rows {
			out[i] = append(slices.Clone(rows[i]), lab[i])
		}
		return csvText(append(slices.Clone(data.header), "diagnosis"), out)
	}
	rv := dropFeedback(t, k, root, "rows.csv", rowsWithLabel(fresh, freshLabels))
	d = waitScored(t, k, rv.ID)
	wantDetail(t, "labelled rows", d, "live_rows", "100")
	wantDetail(t, "labelled rows", d, "standby_rows", "100")
	wantDetail(t, "labelled rows", d, "paired", "100")
	wantDetail(t, "labelled rows", d, "live_accuracy", strconv.FormatFloat(accuracy(liveAnswers, freshLabels), 'f', 4, 64))

	// The models' own training rows are left out and counted.
	tv := dropFeedback(t, k, root, "seen.csv", rowsWithLabel(data.rows[:100], data.labels[:100]))
	d = waitScored(t, k, tv.ID)
	scoredRows, _ := strconv.Atoi(d["live_rows"])
	excluded, _ := strconv.Atoi(d["live_excluded"])
	if excluded == 0 || scoredRows+excluded != 100 {
		t.Errorf("training rows as feedback: live_rows %d + live_excluded %d; want some excluded and 100 in all (%v)", scoredRows, excluded, d)
	}

	// kill -9 between a feedback version's acceptance and its score: the
	// live model's container is paused, so scoring hangs on its answer
	// when kilnd dies. After the restart the version is scored exactly once.
	addr := containerdAddr(t)
	live := containerOf(t, addr, "kiln-test-monitor", "m2")
	ctr(t, addr, "kiln-test-monitor", "tasks", "pause", live)
	var killed [][]string
	for i := 200; i < 260; i++ {
		killed = append(killed, perturbed(data.rows[i]))
	}
	kv := dropFeedback(t, k, root, "killed.csv", rowsWithLabel(killed, data.labels[200:260]))
	time.Sleep(300 * time.Millisecond) // the monitor is now waiting on the paused model
	if n := len(scoredEvents(t, k, kv.ID)); n != 0 {
		t.Fatalf("%s scored through a paused model", kv.ID)
	}
	if err := k.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = k.wait()
	ctr(t, addr, "kiln-test-monitor", "tasks", "resume", live)
	k = startKilnd(t, root)
	k.expect("READY=1")
	d = waitScored(t, k, kv.ID)
	time.Sleep(time.Second) // a second, wrong scoring would land now
	if n := len(scoredEvents(t, k, kv.ID)); n != 1 {
		t.Errorf("%s scored %d times across the kill; want once", kv.ID, n)
	}
	wantDetail(t, "after kill -9", d, "live_rows", "60")

	// Hostile feedback: wrong columns, an empty file and a 2 GB file are
	// quarantined with a reason; kilnd stays up.
	wrong := dropFeedback(t, k, root, "wrong.csv", "colour,size\nred,1\n")
	if wrong.State != "quarantined" || !strings.Contains(wrong.Reason, "wrong.csv") {
		t.Errorf("wrong columns: %s %q; want quarantined naming the file", wrong.State, wrong.Reason)
	}
	empty := dropFeedback(t, k, root, "empty.csv", "")
	if empty.State != "quarantined" {
		t.Errorf("empty feedback: %s %q; want quarantined", empty.State, empty.Reason)
	}
	dir := filepath.Join(root, "var/lib/kiln/feedback/cancer")
	big, err := os.Create(filepath.Join(dir, ".big.part"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(2 << 30); err != nil {
		t.Fatal(err)
	}
	big.Close()
	known := len(datasetsOf(t, k))
	if err := os.Rename(filepath.Join(dir, ".big.part"), filepath.Join(dir, "big.csv")); err != nil {
		t.Fatal(err)
	}
	waitLong(t, time.Minute, "the 2 GB file rejected", func() bool {
		ds := datasetsOf(t, k)
		return len(ds) > known && ds[len(ds)-1].State == "quarantined"
	})
	if _, stderr, err := k.kiln(nil, "status"); err != nil {
		t.Fatalf("kiln status after hostile feedback: %v: %s", err, stderr)
	}
}

// TestV2PipelinePredictAndLateLabels: a pipeline serving the Open Inference
// Protocol v2: `kiln predict` rows are encoded as its FP64 tensor and the
// answer parsed by -o json; requests sent to the endpoint in v2 are logged,
// and late labels for their rows are joined, their logged tensors decoded
// back into rows (a joined version) and scored to the hand-computed value.
func TestV2PipelinePredictAndLateLabels(t *testing.T) {
	spec := strings.Replace(monitorSpec, "  image: kiln.local/tabular-server:1\n", "  image: kiln.local/tabular-server:1\n  protocol: v2\n", 1)
	k, root := startLoop(t, "kiln-test-v2", spec)
	data := loadCancer(t)
	waitLong(t, 3*time.Minute, "m1 live", func() bool { return modelsOf(t, k)["cancer/m1"].State == "live" })

	rows := make([][]string, 0, 30)
	for i := 400; i < 430; i++ {
		rows = append(rows, perturbed(data.rows[i]))
	}
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer", "-o", "json")
	cmd.Stdin = strings.NewReader(csvText(nil, rows))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kiln predict -o json on a v2 pipeline: %v", err)
	}
	var preds []string
	if err := json.Unmarshal(out, &preds); err != nil || len(preds) != len(rows) {
		t.Fatalf("kiln predict -o json = %s (%v); want %d predictions", out, err, len(rows))
	}
	if a := accuracy(preds, data.labels[400:430]); a < 0.85 {
		t.Errorf("v2 predictions agree %.2f with the labels; want >= 0.85", a)
	}

	// Two-row v2 requests straight to the endpoint, then late labels.
	hc := endpointClient(filepath.Join(root, "run/kiln/serve/cancer.sock"))
	var labels strings.Builder
	labels.WriteString("request_id,label\n")
	var answers, truth []string
	for i := range 10 {
		a, b := 440+2*i, 441+2*i
		var data2 []float64
		for _, r := range [][]string{perturbed(data.rows[a]), perturbed(data.rows[b])} {
			for _, v := range r {
				f, _ := strconv.ParseFloat(v, 64)
				data2 = append(data2, f)
			}
		}
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "input", "datatype": "FP64",
			"shape": []int{2, len(data.header)}, "data": data2}}})
		resp, err := hc.Post("http://kiln/v2/models/cancer/infer", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		ans, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var v2 struct {
			Outputs []struct {
				Name string `json:"name"`
				Data []any  `json:"data"`
			} `json:"outputs"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(ans, &v2) != nil || len(v2.Outputs) == 0 || len(v2.Outputs[0].Data) != 2 {
			t.Fatalf("v2 infer answered %d %s", resp.StatusCode, ans)
		}
		id := resp.Header.Get("X-Kiln-Request-Id")
		la, lb := data.labels[a], data.labels[b]
		if i%4 == 0 {
			la = other(la)
		}
		fmt.Fprintf(&labels, "%s:0,%s\n%s:1,%s\n", id, la, id, lb)
		answers = append(answers, fmt.Sprint(v2.Outputs[0].Data[0]), fmt.Sprint(v2.Outputs[0].Data[1]))
		truth = append(truth, la, lb)
	}
	lv := dropFeedback(t, k, root, "late.csv", labels.String())
	d := waitScored(t, k, lv.ID)
	wantDetail(t, "v2 late labels", d, "live_rows", "20")
	wantDetail(t, "v2 late labels", d, "live_accuracy", strconv.FormatFloat(accuracy(answers, truth), 'f', 4, 64))
	if d["joined"] == "" || d["no_input"] != "" {
		t.Errorf("v2 late labels: joined %q, no_input %q; want the logged tensors decoded into a joined version", d["joined"], d["no_input"])
	}
}
