package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/examples/tabular/images"
)

// exampleImages builds the example trainer and server archives once.
var exampleImages = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(binDir, "images")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := images.BuildAll(ctx, dir, images.Examples)
	return dir, err
})

const cancerSpec = `name: cancer
data: {format: csv, label: diagnosis, settle: 0s}
train:
  image: kiln.local/tabular-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
serve:
  image: kiln.local/tabular-server:1
  resources: {memory: 256Mi}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0.9}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

// importExamples imports the example images built under imgDir, as a
// person would, through the CLI.
func (k *kilnd) importExamples(t *testing.T, imgDir string) {
	t.Helper()
	for _, f := range []string{"tabular-trainer.tar", "tabular-server.tar"} {
		out, stderr, err := k.kiln(nil, "images", "import", filepath.Join(imgDir, f))
		if err != nil {
			t.Fatalf("kiln images import %s: %v: %s", f, err, stderr)
		}
		checkImagesOnce(t, "kiln images import "+f, out)
	}
}

// cancerCSV is the example data: the breast cancer CSV, header first.
func cancerCSV(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../../examples/tabular/data/breast_cancer.csv")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestLoopDropToServing is kiln's whole job on one box: images imported
// over the socket, a CSV renamed into the drop folder, a model trained in a
// container, scored by kilnd through its own serving container, promoted
// behind the endpoint, predicting there, and still answering after kilnd
// restarts (the serving container re-adopted, not restarted).
func TestLoopDropToServing(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t) // containers, mounts and leases need root
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	root := newRoot(t, "containerd: {address: "+addr+", namespace: kiln-test-loop}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	k.importExamples(t, imgDir)
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), cancerSpec)
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	t.Cleanup(func() { removeContainers(t, addr, "kiln-test-loop") })

	data := cancerCSV(t)
	drop := filepath.Join(root, "var/lib/kiln/drop/cancer")
	waitFor(t, "the drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	tmp := filepath.Join(drop, ".cancer.csv.part")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := os.Rename(tmp, filepath.Join(drop, "cancer.csv")); err != nil {
		t.Fatal(err)
	}

	live := waitLive(t, k, "cancer", 3*time.Minute)
	t.Logf("data renamed in -> model live in %s; metrics %v", time.Since(t0).Round(time.Millisecond), live.Metrics)
	if live.Metrics["accuracy"] < 0.9 {
		t.Errorf("live model accuracy %v measured by kilnd; want >= 0.9", live.Metrics["accuracy"])
	}

	rows, labels := featureRows(t, data, "diagnosis", 40)
	predict := func() []string {
		cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer")
		cmd.Stdin = strings.NewReader(rows)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kiln predict: %v", err)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	if got := predict(); len(got) != len(labels) || agreement(got, labels) < 0.85 {
		t.Errorf("kiln predict answered %d lines agreeing %.2f with the labels; want %d lines, >= 0.85", len(got), agreement(got, labels), len(labels))
	}
	checkPredictHeader(t, k, data, "diagnosis")
	if out, _, err := k.kiln(nil, "images"); err != nil {
		t.Errorf("kiln images: %v", err)
	} else {
		checkImagesOnce(t, "kiln images", out)
	}

	// Image GC keeps what the live model and the loaded pipeline need.
	if out, stderr, err := k.kiln(nil, "gc", "--images"); err != nil || !strings.Contains(out, "images none") {
		t.Errorf("kiln gc --images = %q, %v, %s; want no image removed", out, err, stderr)
	}
	if got := predict(); len(got) != len(labels) {
		t.Errorf("kiln predict after gc answered %d lines; want %d", len(got), len(labels))
	}

	// Restart kilnd: the endpoint answers again at once, from the same
	// container.
	if err := k.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := k.wait(); err != nil {
		t.Fatalf("kilnd stop: %v", err)
	}
	k2 := startKilnd(t, root)
	k2.expect("READY=1")
	t1 := time.Now()
	waitLong(t, 30*time.Second, "the endpoint after restart", func() bool {
		cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k2.socket(), "predict", "cancer")
		cmd.Stdin = strings.NewReader(rows)
		out, err := cmd.Output()
		return err == nil && len(strings.Split(strings.TrimSpace(string(out)), "\n")) == len(labels)
	})
	t.Logf("endpoint answering %s after READY", time.Since(t1).Round(time.Millisecond))
	evs, _, err := k2.kiln(nil, "events", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(evs, `"model.promoted"`); n != 1 {
		t.Errorf("%d promotions recorded; want 1 (the restart re-adopts, it does not promote again)", n)
	}
}

func waitLong(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

// featureRows returns the last n rows of a CSV without header and label
// column, as kiln predict takes them, and their labels.
func featureRows(t *testing.T, data []byte, label string, n int) (string, []string) {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	li := -1
	for i, h := range recs[0] {
		if h == label {
			li = i
		}
	}
	var b strings.Builder
	var labels []string
	w := csv.NewWriter(&b)
	for _, r := range recs[len(recs)-n:] {
		labels = append(labels, r[li])
		_ = w.Write(append(append([]string{}, r[:li]...), r[li+1:]...))
	}
	w.Flush()
	return b.String(), labels
}

func agreement(got, want []string) float64 {
	if len(got) != len(want) || len(want) == 0 {
		return 0
	}
	same := 0
	for i := range want {
		if strings.TrimSpace(got[i]) == want[i] {
			same++
		}
	}
	return float64(same) / float64(len(want))
}

// removeContainers deletes what the test left in its namespace of the
// private containerd: stopping kilnd never stops containers, by design.
func removeContainers(t *testing.T, addr, ns string) {
	out, _ := exec.Command("ctr", "-a", addr, "-n", ns, "containers", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "kill", "-s", "SIGKILL", id).Run()
		time.Sleep(200 * time.Millisecond)
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "delete", "-f", id).Run()
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "containers", "delete", id).Run()
	}
}

// slowSpec trains long enough to be interrupted; timeout bounds it.
func slowSpec(timeout string) string {
	return strings.Replace(strings.Replace(cancerSpec, "timeout: 5m", "timeout: "+timeout, 1),
		"train:\n", "train:\n  hyperparameters: {epochs: \"40000\"}\n", 1)
}

// startLoop starts kilnd on a fresh root with the example images imported
// and spec loaded, and drops the example data.
func startLoop(t *testing.T, ns, spec string) (*kilnd, string) {
	return startLoopWith(t, ns, spec, nil)
}

// startLoopData is startLoop with the first 300 rows of the example data
// only, leaving the rest for later batches.
func startLoopData(t *testing.T, ns, spec string) (*kilnd, string) {
	return startLoopWith(t, ns, spec, func(data []byte) []byte {
		lines := strings.SplitAfter(string(data), "\n")
		return []byte(strings.Join(lines[:301], ""))
	})
}

func startLoopWith(t *testing.T, ns, spec string, cut func([]byte) []byte) (*kilnd, string) {
	t.Helper()
	addr := containerdAddr(t)
	needRoot(t)
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	root := newRoot(t, "containerd: {address: "+addr+", namespace: "+ns+"}\n")
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), spec)
	k := startKilnd(t, root)
	k.expect("READY=1")
	t.Cleanup(func() { removeContainers(t, addr, ns) })
	k.importExamples(t, imgDir)
	data := cancerCSV(t)
	if cut != nil {
		data = cut(data)
	}
	drop := filepath.Join(root, "var/lib/kiln/drop/cancer")
	waitFor(t, "the drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	writeFile(t, filepath.Join(drop, ".d.part"), string(data))
	if err := os.Rename(filepath.Join(drop, ".d.part"), filepath.Join(drop, "d.csv")); err != nil {
		t.Fatal(err)
	}
	return k, root
}

func runsOf(t *testing.T, k *kilnd) []api.Run {
	out, _, err := k.kiln(nil, "runs", "-p", "cancer", "-o", "json")
	if err != nil {
		return nil
	}
	var rs []api.Run
	_ = json.Unmarshal([]byte(out), &rs)
	return rs
}

// TestKillKilndMidTraining: kilnd is SIGKILLed while its training container
// runs; the next kilnd re-attaches to that same container, and the model it
// writes goes live. Nothing is trained twice.
func TestKillKilndMidTraining(t *testing.T) {
	k, root := startLoop(t, "kiln-test-kill", slowSpec("5m"))
	waitLong(t, time.Minute, "the run to be running", func() bool {
		rs := runsOf(t, k)
		// "running" is recorded before the task starts: wait for the task,
		// or the kill lands between container and task creation.
		return len(rs) == 1 && rs[0].State == "running" && taskPid(t, os.Getenv("KILN_TEST_CONTAINERD"), "kiln-test-kill", rs[0].Container) != ""
	})
	if err := k.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = k.wait()
	k2 := startKilnd(t, root)
	k2.expect("READY=1")
	waitLong(t, 3*time.Minute, "the re-attached run's model live", func() bool {
		out, _, err := k2.kiln(nil, "models", "-p", "cancer", "-o", "json")
		return err == nil && strings.Contains(out, `"state": "live"`)
	})
	rs := runsOf(t, k2)
	if len(rs) != 1 || rs[0].State != "succeeded" {
		t.Errorf("runs after the kill = %+v; want the one run, succeeded", rs)
	}
}

// TestTrainingTimeout: a trainer that outlives train.timeout is stopped and
// its run fails with the reason; nothing goes live.
func TestTrainingTimeout(t *testing.T) {
	k, _ := startLoop(t, "kiln-test-timeout", slowSpec("2s"))
	waitLong(t, 2*time.Minute, "the run to fail", func() bool {
		rs := runsOf(t, k)
		return len(rs) == 1 && rs[0].State == "failed"
	})
	if r := runsOf(t, k)[0]; !strings.Contains(r.Reason, "timed out") {
		t.Errorf("failed run reason %q; want the timeout named", r.Reason)
	}
	out, _, _ := k.kiln(nil, "models", "-p", "cancer", "-o", "json")
	if strings.Contains(out, `"state": "live"`) {
		t.Errorf("a model went live although training timed out: %s", out)
	}
}
