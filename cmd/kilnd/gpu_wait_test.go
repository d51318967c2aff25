package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/examples/images/imagedata"
)

// gpuWaitSpec is the images example pipeline asking for one GPU to train.
var gpuWaitSpec = strings.Replace(strings.Replace(shapesSpec, "name: shapes", "name: gpux", 1),
	"  timeout: 5m\n", "  timeout: 5m\n  gpus: 1\n", 1)

// The user-facing words for a run that needs a GPU on a machine without
// one: on the run (kiln runs) and in kiln status.
const (
	noGPUWait = "waiting for a GPU: need 1 GPU, but this machine has no NVIDIA GPU kilnd can use " +
		"(no NVIDIA driver: CPU-only): the run waits until a GPU and its driver are installed and kilnd is restarted; " +
		"set train.gpus: 0 to train on the CPU"
	noGPUStatus = "ready: 2 pipelines, no NVIDIA driver: CPU-only; 1 run waiting for a GPU: gpux/r1 (kiln runs -p gpux says why)"
)

// TestGPUWaitCPUOnly: the real kilnd on a machine without an NVIDIA driver
// runs CPU-only. A pipeline with train.gpus: 1 and a batch dropped gets a
// run that stays queued, saying in kiln runs and kiln status that no GPU
// is here and what to do; nothing fails; a CPU pipeline beside it trains,
// goes live and answers predictions meanwhile.
func TestGPUWaitCPUOnly(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t) // containers, mounts and leases need root
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	const ns = "kiln-test-gpu-wait"
	root := newRoot(t, "containerd: {address: "+addr+", namespace: "+ns+"}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	t.Cleanup(func() { removeContainers(t, addr, ns) })
	rep, err := k.client().GPU(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Available {
		t.Skipf("this machine has NVIDIA GPUs (%d): kilnd is not CPU-only here, so there is no driverless wait to see; the daemon's TestGPUPipelineCDI covers the GPU path", len(rep.GPUs))
	}
	for _, f := range []string{"image-trainer.tar", "image-server.tar"} {
		if _, stderr, err := k.kiln(nil, "images", "import", filepath.Join(imgDir, f)); err != nil {
			t.Fatalf("kiln images import %s: %v: %s", f, err, stderr)
		}
	}
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/gpux.yaml"), gpuWaitSpec)
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/shapes.yaml"), shapesSpec)
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	for _, p := range []string{"gpux", "shapes"} {
		drop := filepath.Join(root, "var/lib/kiln/drop", p)
		waitFor(t, "the drop folder of "+p, func() bool { _, err := os.Stat(drop); return err == nil })
		if _, err := imagedata.Write(filepath.Join(drop, "b1"), shapesClasses, 30, 1, imagedata.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := imagedata.Close(filepath.Join(drop, "b1")); err != nil {
			t.Fatal(err)
		}
	}

	var run api.Run
	waitLong(t, time.Minute, "the gpux run waiting", func() bool {
		rs := listJSON[api.Run](t, k, "runs", "-p", "gpux")
		if len(rs) == 0 || rs[0].Reason == "" {
			return false
		}
		run = rs[0]
		return true
	})
	if run.ID != "gpux/r1" || run.State != "queued" || run.Reason != noGPUWait || run.GPU != "" {
		t.Errorf("kiln runs -p gpux -o json: %s %s gpu %q reason %q; want gpux/r1 queued, no GPU, reason %q", run.ID, run.State, run.GPU, run.Reason, noGPUWait)
	}

	// The CPU pipeline beside it is not held up: it trains, goes live and
	// answers.
	waitLive(t, k, "shapes", 3*time.Minute)
	fresh, err := imagedata.Generate(shapesClasses, 1, 99, imagedata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := k.kiln(nil, "predict", "shapes", writeImage(t, fresh[0])); err != nil || !strings.Contains(out, fresh[0].Label) {
		t.Errorf("kiln predict shapes = %q, %v, %s; want %s", out, err, stderr, fresh[0].Label)
	}

	// Still waiting, and said the same way everywhere.
	rs := listJSON[api.Run](t, k, "runs", "-p", "gpux")
	if len(rs) != 1 || rs[0].State != "queued" || rs[0].Reason != noGPUWait {
		t.Errorf("kiln runs -p gpux -o json after shapes went live = %+v; want gpux/r1 still queued with %q", rs, noGPUWait)
	}
	out, stderr, err := k.kiln(nil, "runs", "-p", "gpux")
	if err != nil || !strings.Contains(out, noGPUWait) {
		t.Errorf("kiln runs -p gpux = %q, %v, %s; want the reason %q", out, err, stderr, noGPUWait)
	}
	out, stderr, err = k.kiln(nil, "status")
	if err != nil {
		t.Fatalf("kiln status: %v: %s", err, stderr)
	}
	if got := statusRow(out, "status"); got != noGPUStatus {
		t.Errorf("kiln status: status row %q; want %q\n%s", got, noGPUStatus, out)
	}
	if got := statusRow(out, "gpu"); got != "unavailable: no NVIDIA driver: CPU-only" {
		t.Errorf("kiln status: gpu row %q; want it to say CPU-only\n%s", got, out)
	}
	var st api.Status
	out, stderr, err = k.kiln(nil, "status", "-o", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	if err != nil || st.Message != noGPUStatus || st.State != "ready" {
		t.Errorf("kiln status -o json: state %q message %q, %v (%s); want ready, %q", st.State, st.Message, err, stderr, noGPUStatus)
	}

	// One run.waiting event (the reason did not change), nothing failed.
	evs, err := k.client().Events(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	waits := 0
	for _, e := range evs {
		if strings.HasSuffix(e.Kind, ".failed") || e.Kind == "run.cancelled" {
			t.Errorf("event %s %v %v: want nothing failed", e.Kind, e.Refs, e.Details)
		}
		if e.Kind == "run.waiting" && e.Pipeline == "gpux" {
			waits++
			if "waiting for a GPU: "+e.Details["reason"] != noGPUWait {
				t.Errorf("run.waiting reason %q; want %q", e.Details["reason"], strings.TrimPrefix(noGPUWait, "waiting for a GPU: "))
			}
		}
	}
	if waits != 1 {
		t.Errorf("%d run.waiting events for gpux; want 1", waits)
	}
}

// statusRow is the value of one row of kiln status's table.
func statusRow(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return strings.TrimSpace(strings.TrimPrefix(l, name))
		}
	}
	return ""
}
