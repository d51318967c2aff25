package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/examples/tabular/images"
)

// faultboxImage misbehaves on request (examples/faultbox): its trainer by
// hyperparameter, its server by the model and by the rows it is sent.
var faultboxImage = images.Image{Ref: "kiln.local/faultbox:1", Package: "github.com/kiln-edge/kiln/examples/faultbox",
	Binary: "faultbox", Cmd: []string{"train"}, File: "faultbox.tar"}

var faultboxArchive = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(binDir, "images")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := images.Build(ctx, dir, faultboxImage)
	return b.File, err
})

// faultSpec is one pipeline of the faultbox with MiB-sized caps: memory,
// pids, timeout and model size.
func faultSpec(name, fault, serve string) string {
	return fmt.Sprintf(`name: %s
data: {format: csv, label: diagnosis, settle: 0s}
train:
  image: kiln.local/faultbox:1
  hyperparameters: {fault: %q, serve: %q, model_mib: "8"}
  resources: {memory: 48Mi, cpus: 1, pids: 32}
  timeout: 4s
  max_model_size: 4Mi
serve:
  image: kiln.local/faultbox:1
  resources: {memory: 32Mi, pids: 32}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`, name, fault, serve)
}

// TestContainedTrainingAndServingFaults runs one pipeline per misbehaving
// trainer or server, side by side on one kilnd, and checks that each fault
// stays inside its container's caps and is reported: the run fails with the
// cause named, the model is rejected with it, or the crash is an event and
// the server is back. The host and the other pipelines carry on.
func TestContainedTrainingAndServingFaults(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t)
	archive, err := faultboxArchive()
	if err != nil {
		t.Fatalf("build the faultbox image: %v", err)
	}
	const ns = "kiln-test-contain"
	root := newRoot(t, "containerd: {address: "+addr+", namespace: "+ns+"}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	t.Cleanup(func() { removeContainers(t, addr, ns) })
	if _, stderr, err := k.kiln(nil, "images", "import", archive); err != nil {
		t.Fatalf("kiln images import: %v: %s", err, stderr)
	}

	// pipeline -> the run's failure reason must contain this ("" = succeeds).
	runWant := map[string]string{
		"crash":    "trainer exited 3: faultbox: crashing on purpose",
		"hang":     "timed out",
		"forkbomb": "trainer exited",
		"oom":      "out of memory",
		"logs":     "timed out",
		"bigmodel": "over train.max_model_size 4Mi",
		"srvcrash": "",
		"serving":  "",
	}
	specs := map[string][2]string{ // fault, serve mode
		"crash": {"crash", ""}, "hang": {"hang", ""}, "forkbomb": {"forkbomb", ""}, "oom": {"oom", ""},
		"logs": {"logs", ""}, "bigmodel": {"bigmodel", ""},
		"srvcrash": {"none", "crash"}, "serving": {"none", ""},
	}
	for name, s := range specs {
		writeFile(t, filepath.Join(root, "etc/kiln/pipelines", name+".yaml"), faultSpec(name, s[0], s[1]))
	}
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	data := cancerCSV(t)
	batch := strings.Join(strings.SplitAfter(string(data), "\n")[:101], "")
	t0 := time.Now()
	for name := range specs {
		dir := filepath.Join(root, "var/lib/kiln/drop", name)
		waitFor(t, "drop folder "+name, func() bool { _, err := os.Stat(dir); return err == nil })
		writeFile(t, filepath.Join(dir, ".d.part"), batch)
		if err := os.Rename(filepath.Join(dir, ".d.part"), filepath.Join(dir, "d.csv")); err != nil {
			t.Fatal(err)
		}
	}

	ctx := context.Background()
	runs := map[string]api.Run{}
	waitLong(t, 2*time.Minute, "every run to end", func() bool {
		for name := range specs {
			rs, err := k.client().Runs(ctx, name)
			if err != nil || len(rs) != 1 || (rs[0].State != "failed" && rs[0].State != "succeeded") {
				return false
			}
			runs[name] = rs[0]
		}
		return true
	})
	t.Logf("all %d runs ended %s after the drops", len(specs), time.Since(t0).Round(time.Millisecond))
	for name, want := range runWant {
		r := runs[name]
		switch {
		case want == "" && r.State != "succeeded":
			t.Errorf("%s: run %s is %s (%s); want succeeded", name, r.ID, r.State, r.Reason)
		case want != "" && (r.State != "failed" || !strings.Contains(r.Reason, want)):
			t.Errorf("%s: run %s is %s (%q); want failed with %q", name, r.ID, r.State, r.Reason, want)
		default:
			t.Logf("%s: run %s %s: %s", name, r.ID, r.State, r.Reason)
		}
	}

	// Endless logs: the pair of log files stays near the 16 MiB cap (the
	// default), in blocks on disk too.
	logDir := filepath.Join(root, "var/lib/kiln/runs", filepath.FromSlash(runs["logs"].ID))
	var size, disk int64
	for _, f := range []string{"train.log", "train.log.1"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(logDir, f), &st); err == nil {
			size, disk = size+st.Size, disk+st.Blocks*512
		}
	}
	t.Logf("endless logs: %d bytes in the log pair, %d on disk", size, disk)
	if size == 0 || size > 20<<20 || disk > 20<<20 {
		t.Errorf("endless logs left %d bytes (%d on disk) in %s; want some, and at most the 16 MiB cap and 4 MiB more", size, disk, logDir)
	}
	// The huge model never reached the blob store.
	if ms, _ := k.client().Models(ctx, "bigmodel"); len(ms) != 0 {
		t.Errorf("bigmodel: models %+v; want none stored", ms)
	}

	// A server that crashes at start is rejected with the reason. (One that
	// never gets ready is rejected the same way, after the pipeline's fixed
	// two-minute ready timeout: too long for this test.)
	waitLong(t, 2*time.Minute, "the candidates decided", func() bool {
		for _, p := range []string{"srvcrash", "serving"} {
			ms, err := k.client().Models(ctx, p)
			if err != nil || len(ms) != 1 || (ms[0].State != "rejected" && ms[0].State != "live") {
				return false
			}
		}
		return true
	})
	for p, want := range map[string]string{"srvcrash": "rejected", "serving": "live"} {
		ms, _ := k.client().Models(ctx, p)
		if ms[0].State != want {
			t.Errorf("%s: model %s is %s (%s); want %s", p, ms[0].ID, ms[0].State, ms[0].Reason, want)
		} else {
			t.Logf("%s: model %s %s: %s", p, ms[0].ID, ms[0].State, ms[0].Reason)
		}
	}

	// The live server misbehaves on request: each fault stays in its
	// container, is reported, and the endpoint answers again.
	rows, _ := featureRows(t, data, "diagnosis", 3)
	good := strings.Join(strings.Split(strings.TrimSpace(rows), "\n")[:1], "") + "\n"
	poison := func(v string) string {
		_, rest, _ := strings.Cut(good, ",")
		return v + "," + rest
	}
	predict := func(body string, timeout time.Duration) (string, error) {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(pctx, filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "serving")
		cmd.Stdin = strings.NewReader(body)
		out, err := cmd.Output()
		return string(out), err
	}
	if out, err := predict(good, 10*time.Second); err != nil || strings.TrimSpace(out) != "benign" {
		t.Fatalf("serving: predict = %q, %v; want benign", out, err)
	}
	for _, tc := range []struct{ name, value, exit string }{
		{"crash", "-1", "exit 5"},
		{"oom", "-2", "OOM"},
	} {
		before := countPipelineEvents(t, k, "serve.exited", "serving")
		_, _ = predict(poison(tc.value), 20*time.Second)
		waitLong(t, 20*time.Second, "the serve.exited event of "+tc.name, func() bool {
			return countPipelineEvents(t, k, "serve.exited", "serving") > before
		})
		if ev := lastPipelineEvent(t, k, "serve.exited", "serving"); !strings.Contains(ev.Details["exit"], tc.exit) {
			t.Errorf("serving %s: event %+v; want the exit reason to contain %q", tc.name, ev.Details, tc.exit)
		}
		waitLong(t, 20*time.Second, "the endpoint back after the "+tc.name, func() bool {
			out, err := predict(good, 5*time.Second)
			return err == nil && strings.TrimSpace(out) == "benign"
		})
	}
	// A request that hangs holds only itself. Checked before the fork
	// bomb: the bomb's children stay in the container holding its pids, and
	// a server then blocked in a syscall cannot get a thread (Go exits 2).
	hung := make(chan error, 1)
	go func() { _, err := predict(poison("-4"), 6*time.Second); hung <- err }()
	time.Sleep(300 * time.Millisecond)
	if out, err := predict(good, 5*time.Second); err != nil || strings.TrimSpace(out) != "benign" {
		t.Errorf("serving: predict beside a hung request = %q, %v; want benign", out, err)
	}
	<-hung
	// Fork bomb: the pids limit stops it; the server answers the count or
	// dies trying and is restarted. Either way the endpoint comes back.
	out, err := predict(poison("-3"), 20*time.Second)
	t.Logf("serving fork bomb answered %q, %v", strings.TrimSpace(out), err)
	waitLong(t, 20*time.Second, "the endpoint back after the fork bomb", func() bool {
		out, err := predict(good, 5*time.Second)
		return err == nil && strings.TrimSpace(out) == "benign"
	})
}

func pipelineEvents(t *testing.T, k *kilnd, kind, pipeline string) []api.Event {
	var out []api.Event
	for _, e := range eventsOf(t, k) {
		if e.Kind == kind && e.Pipeline == pipeline {
			out = append(out, e)
		}
	}
	return out
}

func countPipelineEvents(t *testing.T, k *kilnd, kind, pipeline string) int {
	return len(pipelineEvents(t, k, kind, pipeline))
}

func lastPipelineEvent(t *testing.T, k *kilnd, kind, pipeline string) api.Event {
	evs := pipelineEvents(t, k, kind, pipeline)
	if len(evs) == 0 {
		return api.Event{}
	}
	return evs[len(evs)-1]
}
