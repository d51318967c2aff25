package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cancerJSONLSpec is the example pipeline on JSON Lines data: the same
// trainer and server images, which read and answer JSON Lines.
var cancerJSONLSpec = strings.Replace(cancerSpec, "data: {format: csv, label: diagnosis, settle: 0s}",
	"data: {format: jsonl, label: diagnosis, settle: 0s, validate: {labels: [benign, malignant]}}", 1)

// jsonObject writes one flat JSON object, keys in the order given, values
// that read as numbers as JSON numbers (their CSV text unchanged), others
// as strings.
func jsonObject(b *bytes.Buffer, keys, vals []string) {
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteString(": ")
		if _, err := strconv.ParseFloat(vals[i], 64); err == nil {
			b.WriteString(vals[i])
		} else {
			vb, _ := json.Marshal(vals[i])
			b.Write(vb)
		}
	}
	b.WriteString("}\n")
}

// jsonLines writes rows as JSON Lines. With rng, every line puts its keys in
// an order of its own (JSON objects are unordered: readers must go by key);
// without, every line keeps keys' order.
func jsonLines(keys []string, rows [][]string, rng *rand.Rand) string {
	var b bytes.Buffer
	for _, r := range rows {
		k, v := slices.Clone(keys), slices.Clone(r)
		if rng != nil {
			rng.Shuffle(len(k), func(i, j int) { k[i], k[j], v[i], v[j] = k[j], k[i], v[j], v[i] })
		}
		jsonObject(&b, k, v)
	}
	return b.String()
}

// withLabel is rows with their label as one more value.
func withLabel(rows [][]string, labels []string) [][]string {
	out := make([][]string, len(rows))
	for i := range rows {
		out[i] = append(slices.Clone(rows[i]), labels[i])
	}
	return out
}

// invokeJSONL sends rows to the endpoint as application/jsonlines and
// returns the request id and the answers.
func invokeJSONL(t *testing.T, hc *http.Client, keys []string, rows [][]string, rng *rand.Rand) (string, []string) {
	t.Helper()
	return invokeBody(t, hc, "application/jsonlines", jsonLines(keys, rows, rng))
}

// TestLoopJSONL is issue 17's loop for JSON Lines data on the example
// images: the breast cancer data as JSON Lines (the label key first, so the
// trainer must take it from data.label) renamed into the drop folder ->
// trained from cancer-d1.jsonl in a container -> scored by kilnd through
// the server with application/jsonlines -> live -> `kiln predict cancer
// FILE.jsonl` (keys in any order) -> requests sent to the endpoint as JSON
// Lines, joined to late labels ({"id", "label"} lines) and scored to the
// accuracy computed here; labelled JSON Lines rows scored likewise.
func TestLoopJSONL(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t) // containers, mounts and leases need root
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	const ns = "kiln-test-jsonl"
	root := newRoot(t, "containerd: {address: "+addr+", namespace: "+ns+"}\n")
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), cancerJSONLSpec)
	k := startKilnd(t, root)
	k.expect("READY=1")
	t.Cleanup(func() { removeContainers(t, addr, ns) })
	k.importExamples(t, imgDir)

	data := loadCancer(t)
	rng := rand.New(rand.NewPCG(17, 17)) //nolint:gosec // test data
	// The data: every row but the last 60 (kept for predict), label first.
	keys := append([]string{"diagnosis"}, data.header...)
	train := len(data.rows) - 60
	var rows [][]string
	for i := range train {
		rows = append(rows, append([]string{data.labels[i]}, data.rows[i]...))
	}
	drop := filepath.Join(root, "var/lib/kiln/drop/cancer")
	waitFor(t, "the drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	writeFile(t, filepath.Join(drop, ".cancer.jsonl.part"), jsonLines(keys, rows, nil))
	t0 := time.Now()
	if err := os.Rename(filepath.Join(drop, ".cancer.jsonl.part"), filepath.Join(drop, "cancer.jsonl")); err != nil {
		t.Fatal(err)
	}

	live := waitLive(t, k, "cancer", 3*time.Minute)
	t.Logf("JSON Lines renamed in -> model live in %s; metrics %v", time.Since(t0).Round(time.Millisecond), live.Metrics)
	if live.Metrics["accuracy"] < 0.9 || live.Metrics["holdout_rows"] < 50 {
		t.Errorf("live model measured by kilnd: accuracy %v on %v holdout rows; want >= 0.9 on >= 50", live.Metrics["accuracy"], live.Metrics["holdout_rows"])
	}
	ds := datasetsOf(t, k)
	if len(ds) != 1 || ds[0].Format != "jsonl" || ds[0].Rows != int64(train) {
		t.Fatalf("datasets = %+v; want one jsonl version of %d rows", ds, train)
	}
	runs := runsOf(t, k)
	if len(runs) != 1 || runs[0].State != "succeeded" {
		t.Fatalf("runs = %+v; want one, succeeded", runs)
	}

	// kiln predict with a JSON Lines file: the 60 rows nobody trained on,
	// keys shuffled line by line, the label left out.
	file := filepath.Join(t.TempDir(), "unseen.jsonl")
	writeFile(t, file, jsonLines(data.header, data.rows[train:], rng))
	out, err := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer", file).Output()
	if err != nil {
		t.Fatalf("kiln predict cancer %s: %v: %s", file, err, stderrOf(err))
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != 60 || agreement(got, data.labels[train:]) < 0.9 {
		t.Errorf("kiln predict answered %d lines agreeing %.2f with the labels; want 60, >= 0.9:\n%s", len(got), agreement(got, data.labels[train:]), out)
	}

	// Late labels: 15 two-row JSON Lines requests through the endpoint
	// (rows no model trained on), then labels for their rows by request id,
	// as JSON Lines. Every third label is wrong, so the recorded accuracy is
	// a number only a correct join gives.
	hc := endpointClient(filepath.Join(root, "run/kiln/serve/cancer.sock"))
	var labels bytes.Buffer
	var answers, truth []string
	for i := range 15 {
		a, b := 200+2*i, 201+2*i
		id, ans := invokeJSONL(t, hc, data.header, [][]string{perturbed(data.rows[a]), perturbed(data.rows[b])}, rng)
		if len(ans) != 2 {
			t.Fatalf("request %s answered %v", id, ans)
		}
		la, lb := data.labels[a], data.labels[b]
		if i%3 == 0 {
			la = other(la)
		}
		jsonObject(&labels, []string{"id", "label"}, []string{id + ":0", la})
		jsonObject(&labels, []string{"label", "id"}, []string{lb, id + ":1"})
		answers = append(answers, ans...)
		truth = append(truth, la, lb)
	}
	jsonObject(&labels, []string{"id", "label"}, []string{"nope-never-logged", "benign"})
	lv := dropFeedback(t, k, root, "late.jsonl", labels.String())
	if lv.State != "accepted" {
		t.Fatalf("late labels version %s is %s: %s", lv.ID, lv.State, lv.Reason)
	}
	d := waitScored(t, k, lv.ID)
	t.Logf("late labels scored: %v", d)
	wantDetail(t, "late labels", d, "live_model", live.ID)
	wantDetail(t, "late labels", d, "live_rows", "30")
	wantDetail(t, "late labels", d, "matched", "30")
	wantDetail(t, "late labels", d, "unmatched", "1")
	wantDetail(t, "late labels", d, "live_accuracy", strconv.FormatFloat(accuracy(answers, truth), 'f', 4, 64))
	if d["joined"] == "" || d["no_input"] != "" {
		t.Errorf("late labels: joined %q, no_input %q; want the logged JSON Lines read back into a joined version", d["joined"], d["no_input"])
	}

	// Labelled rows as a JSON Lines feedback file (keys in any order): the
	// live model's score is what the endpoint answers for the same rows.
	var fresh [][]string
	var freshLabels []string
	for i := 300; i < 380; i++ {
		fresh = append(fresh, perturbed(data.rows[i]))
		l := data.labels[i]
		if i%4 == 0 {
			l = other(l)
		}
		freshLabels = append(freshLabels, l)
	}
	_, liveAnswers := invokeJSONL(t, hc, data.header, fresh, nil)
	rv := dropFeedback(t, k, root, "rows.jsonl", jsonLines(append(slices.Clone(data.header), "diagnosis"), withLabel(fresh, freshLabels), rng))
	if rv.State != "accepted" {
		t.Fatalf("labelled rows version %s is %s: %s", rv.ID, rv.State, rv.Reason)
	}
	d = waitScored(t, k, rv.ID)
	t.Logf("labelled rows scored: %v", d)
	wantDetail(t, "labelled rows", d, "live_model", live.ID)
	wantDetail(t, "labelled rows", d, "live_rows", "80")
	wantDetail(t, "labelled rows", d, "live_accuracy", strconv.FormatFloat(accuracy(liveAnswers, freshLabels), 'f', 4, 64))
	if a, _ := strconv.ParseFloat(d["live_accuracy"], 64); a < 0.6 || a > 0.85 {
		// A quarter of the labels are flipped: a sound model scores about 0.75.
		t.Errorf("labelled rows: live_accuracy %v; want about 0.75 (a quarter of the labels are wrong)", a)
	}
}

// stderrOf is a failed command's stderr, when it kept one.
func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return fmt.Sprint(err)
}
