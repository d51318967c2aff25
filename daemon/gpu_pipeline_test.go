//go:build cgo

package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

// gpuShapesSpec is an images pipeline on the Go example image pair whose
// training asks for one GPU.
const gpuShapesSpec = `name: gshapes
data:
  format: images
  settle: 0s
  validate: {labels: [north, east, south, west], min_per_class: 5}
train:
  image: kiln.local/image-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
  gpus: 1
serve:
  image: kiln.local/image-server:1
  resources: {memory: 256Mi}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0.9}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

// fakeCDISpec is what `nvidia-ctk cdi generate` would write for the mock's
// GPU 0 (index name "0", as kiln injects), reduced to what a container can
// be checked for: the GPU's device node (backed by /dev/null), its UUID in
// NVIDIA_VISIBLE_DEVICES, and a driver file mounted read-only.
func fakeCDISpec(uuid, lib string) string {
	return `cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      env: ["NVIDIA_VISIBLE_DEVICES=` + uuid + `"]
      deviceNodes:
        - path: /dev/nvidia0
          hostPath: /dev/null
containerEdits:
  mounts:
    - hostPath: ` + lib + `
      containerPath: /usr/lib/libnvidia-kiln-fake.so.1
      options: [ro, nosuid, nodev, bind]
`
}

// TestGPUPipelineCDI runs an images pipeline with train.gpus: 1 through a
// whole in-process kilnd on a real containerd, the GPU faked by go-nvml's
// mock and a CDI spec generated for it: the run waits while the GPU is
// cordoned (the reason on the run), trains once it is lifted with the GPU
// leased to it and injected by CDI (the trainer sees one GPU and its
// UUID), records the GPU's UUID, and gives the lease back when it ends.
func TestGPUPipelineCDI(t *testing.T) {
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but KILN_TEST_CONTAINERD is not set: run through .ci/with-containerd")
		}
		t.Skip("KILN_TEST_CONTAINERD is not set: run through .ci/with-containerd, which starts a private containerd")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but not root: training containers need root")
		}
		t.Skip("training containers need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	imgDir := t.TempDir()
	built, err := images.BuildAll(ctx, imgDir, []images.Image{images.Examples[2], images.Examples[3]})
	if err != nil {
		t.Fatalf("build the image example images: %v", err)
	}

	uuid := gputest.UUID(0)
	cdiDir := t.TempDir()
	lib := filepath.Join(cdiDir, "libnvidia-kiln-fake.so.1")
	if err := os.WriteFile(lib, []byte("fake driver\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cdiDir, "nvidia.yaml"), []byte(fakeCDISpec(uuid, lib)), 0o644); err != nil {
		t.Fatal(err)
	}
	const ns = "kiln-test-gpu-cdi"
	root := shortRoot(t)
	td := startDaemonConfig(t, root, gputest.New(1, gpus.A100_SXM4_40GB),
		"containerd: {address: "+addr+", namespace: "+ns+"}\ngpu: {cdi_dirs: ["+cdiDir+"]}\n")
	// The daemon stops first: it would restart a serving container removed
	// under it.
	t.Cleanup(func() { td.stop(); removeTestContainers(addr, ns) })
	c := td.client

	for _, b := range built {
		f, err := os.Open(b.File)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ImportImages(ctx, f)
		_ = f.Close()
		if err != nil {
			t.Fatalf("import %s: %v", b.Ref, err)
		}
	}
	if _, err := c.CordonGPU(ctx, "0", "held for the test"); err != nil {
		t.Fatal(err)
	}
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.PipelinesDir, "gshapes.yaml"), []byte(gpuShapesSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := c.ReloadPipelines(ctx); err != nil {
		t.Fatalf("reload: %v (%+v)", err, res)
	}
	drop := filepath.Join(paths.DropDir, "gshapes")
	waitLong(t, 10*time.Second, "the drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	batch := filepath.Join(drop, "b1")
	if _, err := imagedata.Write(batch, []string{"north", "east", "south", "west"}, 30, 1, imagedata.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := imagedata.Close(batch); err != nil {
		t.Fatal(err)
	}

	// Cordoned: the run waits, saying why.
	const waiting = "waiting for a GPU: need 1 GPU: gpu0 cordoned (held for the test)"
	var run api.Run
	waitLong(t, time.Minute, "the run waiting for the cordoned GPU", func() bool {
		rs, err := c.Runs(ctx, "gshapes")
		if err != nil || len(rs) == 0 {
			return false
		}
		run = rs[0]
		return run.Reason == waiting
	})
	if run.State != "queued" || run.GPU != "" {
		t.Fatalf("run while the GPU is cordoned = %+v; want queued, no GPU", run)
	}
	if _, err := c.UncordonGPU(ctx, "0"); err != nil {
		t.Fatal(err)
	}

	var model api.Model
	waitLong(t, 4*time.Minute, "a live model", func() bool {
		ms, err := c.Models(ctx, "gshapes")
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.State == "rejected" {
				t.Fatalf("model rejected: %s", m.Reason)
			}
			if m.State == "live" {
				model = m
				return true
			}
		}
		return false
	})
	run, err = c.Run(ctx, model.Run)
	if err != nil {
		t.Fatal(err)
	}
	if run.GPU != uuid || run.State != "succeeded" {
		t.Errorf("run %s = state %s, gpu %q; want succeeded on %s (the mock GPU's UUID)", run.ID, run.State, run.GPU, uuid)
	}
	if got := model.TrainerMetrics["gpus_visible"]; got != 1 {
		t.Errorf("trainer metrics %v: gpus_visible = %v; want 1 (the CDI device reached the container)", model.TrainerMetrics, got)
	}
	var log bytes.Buffer
	if err := c.Logs(ctx, run.ID, false, &log); err != nil {
		t.Fatal(err)
	}
	if want := "GPUs visible: 1 (/dev/nvidia0; NVIDIA_VISIBLE_DEVICES=" + uuid + ")"; !strings.Contains(log.String(), want) {
		t.Errorf("trainer log %q; want %q (the CDI spec's device and env)", log.String(), want)
	}

	lin, err := c.Lineage(ctx, model.ID, "up", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(lin.Nodes, func(n api.LineageNode) bool { return n.ID == "gpu:"+uuid && n.Edge == "ran_on" }) {
		t.Errorf("lineage of %s = %+v; want gpu:%s (ran_on)", model.ID, lin.Nodes, uuid)
	}

	evs, err := c.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e api.Event) bool {
		return e.Kind == "gpu.leased" && slices.Equal(e.Refs, []string{run.ID, uuid})
	}) {
		t.Errorf("events: no gpu.leased for %s on %s", run.ID, uuid)
	}
	if !slices.ContainsFunc(evs, func(e api.Event) bool {
		return e.Kind == "run.waiting" && slices.Contains(e.Refs, run.ID) && e.Details["reason"] == strings.TrimPrefix(waiting, "waiting for a GPU: ")
	}) {
		t.Errorf("events: no run.waiting for %s with the cordon as the reason", run.ID)
	}
	rep, err := c.GPU(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GPUs) != 1 || rep.GPUs[0].State != api.GPUFree || rep.GPUs[0].Lease != nil {
		t.Errorf("GPU after the run = %+v; want free, the lease released", rep.GPUs)
	}
}

// startDaemonConfig runs a whole kilnd in-process on root with GPUs from srv
// and the daemon config extra (yaml lines after the admin group, which is
// the test's own primary group so the API lets the test write without root).
func startDaemonConfig(t testing.TB, root string, srv *gputest.Server, extra string) *testDaemon {
	t.Helper()
	grp, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "groups: {admin: " + grp.Name + "}\nshutdown_timeout: 5s\n" + extra
	if err := os.WriteFile(paths.ConfigFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDaemon(paths)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := New(Options{Config: cfg, Build: api.BuildInfo{Version: "test"}, Log: log,
		GPU: gpu.New(srv, log, gpu.Options{SampleInterval: 50 * time.Millisecond})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	td := &testDaemon{d: d, client: apiclient.New(paths.APISocket)}
	stopped := false
	td.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}
	t.Cleanup(td.stop)
	waitUntil(t, "API up", func() bool { _, err := td.client.Version(context.Background()); return err == nil })
	return td
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

// removeTestContainers removes what a test left in its containerd
// namespace (the serving container outlives the daemon by design).
func removeTestContainers(addr, ns string) {
	out, _ := exec.Command("ctr", "-a", addr, "-n", ns, "containers", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "kill", "-s", "SIGKILL", id).Run()
		time.Sleep(200 * time.Millisecond)
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "delete", "-f", id).Run()
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "containers", "delete", id).Run()
	}
}

// TestGPUWaitingStatus: on a machine with a driver but no GPU a lease is
// refused in plain words, and kiln status names the run while it is
// queued, not once it ended or gave its place back.
func TestGPUWaitingStatus(t *testing.T) {
	td := startTestDaemon(t, shortRoot(t), gputest.New(0, gpus.A100_SXM4_40GB))
	ctx := context.Background()
	var run storage.Run
	err := td.d.store.Update(ctx, func(tx *storage.Tx) (err error) {
		run, err = tx.CreateRun(storage.Run{Pipeline: "p"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = td.d.leaser.Lease(ctx, "p", run.ID, 1, 0)
	const want = "need 1 GPU, but this machine has no NVIDIA GPU kilnd can use (NVIDIA driver but no GPU: CPU-only): " +
		"the run waits until a GPU and its driver are installed and kilnd is restarted; set train.gpus: 0 to train on the CPU"
	if err == nil || err.Error() != want {
		t.Fatalf("Lease() = %v; want %q", err, want)
	}
	status := func() string {
		st, err := td.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Message
	}
	if got, want := status(), "; 1 run waiting for a GPU: "+run.ID+" (kiln runs -p p says why)"; !strings.HasSuffix(got, want) {
		t.Errorf("status message %q; want it to end %q", got, want)
	}
	run.State = storage.RunFailed
	if err := td.d.store.Update(ctx, func(tx *storage.Tx) error { return tx.PutRun(run) }); err != nil {
		t.Fatal(err)
	}
	if got := status(); strings.Contains(got, "waiting for a GPU") {
		t.Errorf("status message after the run failed %q; want no run waiting", got)
	}
	if err := td.d.leaser.Release(ctx, run.ID); err != nil {
		t.Fatal(err)
	}
	if w := td.d.leaser.Waiting(); len(w) != 0 {
		t.Errorf("Waiting() after Release = %v; want none", w)
	}
}
