//go:build cgo

package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

// testDaemon runs a whole kilnd in-process on a temp root, with GPUs from
// go-nvml's mocks, and talks to it over its real unix socket.
type testDaemon struct {
	d      *Daemon
	client *apiclient.Client
	stop   func()
}

func startTestDaemon(t *testing.T, root string, srv *gputest.Server) *testDaemon {
	t.Helper()
	// The test's own primary group is the admin group, so the API lets the
	// test write without root.
	grp, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "containerd: {address: /nonexistent/containerd.sock}\ngroups: {admin: " + grp.Name + "}\nshutdown_timeout: 5s\n"
	if err := os.WriteFile(paths.ConfigFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDaemon(paths)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr := gpu.New(srv, log, gpu.Options{SampleInterval: 50 * time.Millisecond})
	d, err := New(Options{Config: cfg, Build: api.BuildInfo{Version: "test"}, Log: log, GPU: mgr})
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
	waitUntil(t, "API up", func() bool { _, err := td.client.Status(context.Background()); return err == nil })
	return td
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func shortRoot(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

// TestXIDCordonsGPUAndFailsItsRun: XID 79 on a leased GPU mid-run marks it
// unhealthy, cordons it (persisted), fails the run holding it and releases
// its lease, all visible through the API; the cordon survives a restart and
// only a person lifts it.
func TestXIDCordonsGPUAndFailsItsRun(t *testing.T) {
	ctx := context.Background()
	root := shortRoot(t)
	srv := gputest.New(2, gpus.A100_SXM4_40GB)
	td := startTestDaemon(t, root, srv)

	var run storage.Run
	err := td.d.store.Update(ctx, func(tx *storage.Tx) error {
		var err error
		run, err = tx.CreateRun(storage.Run{Pipeline: "iris", State: storage.RunRunning, GPU: gputest.UUID(1)})
		if err != nil {
			return err
		}
		return tx.PutLease(storage.Lease{GPU: gputest.UUID(1), Run: run.ID, Pipeline: "iris"})
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := td.client.GPU(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.GPUs[1]; g.State != api.GPULeased || g.Lease == nil || g.Lease.Holder != run.ID {
		t.Fatalf("gpu1 before the fault = %s, lease %+v; want leased to %s", g.State, g.Lease, run.ID)
	}

	srv.Events.XID(srv.Devices[1], 79)
	waitUntil(t, "gpu1 cordoned", func() bool {
		r, err := td.client.GPU(ctx)
		return err == nil && strings.Contains(r.GPUs[1].Cordoned, "XID 79")
	})
	r, _ = td.client.GPU(ctx)
	if g := r.GPUs[1]; g.State != api.GPUUnhealthy || g.Lease != nil || g.Healthy {
		t.Errorf("gpu1 after XID 79 = state %s, healthy %v, lease %+v; want unhealthy, no lease", g.State, g.Healthy, g.Lease)
	}
	if g := r.GPUs[0]; g.State != api.GPUFree {
		t.Errorf("gpu0 = %s; want free (the fault was on gpu1)", g.State)
	}
	got, err := td.d.store.Run(run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != storage.RunFailed || !strings.Contains(got.Reason, "XID 79") {
		t.Errorf("run after its GPU failed = %s %q; want failed naming XID 79", got.State, got.Reason)
	}
	kinds := eventKinds(t, td)
	for _, k := range []string{"gpu.unhealthy", "run.failed"} {
		if !strings.Contains(kinds, k) {
			t.Errorf("events %s lack %s", kinds, k)
		}
	}

	// An operator cordons gpu0 for maintenance; it survives a restart.
	if _, err := td.client.CordonGPU(ctx, "0", "fan replacement"); err != nil {
		t.Fatal(err)
	}
	td.stop()
	td = startTestDaemon(t, root, srv)
	r, err = td.client.GPU(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.GPUs[0]; g.State != api.GPUCordoned || g.Cordoned != "fan replacement" {
		t.Errorf("gpu0 after restart = %s %q; want cordoned for the fan replacement", g.State, g.Cordoned)
	}
	if _, err := td.client.UncordonGPU(ctx, gputest.UUID(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := td.client.UncordonGPU(ctx, "0"); err == nil || !strings.Contains(err.Error(), "not cordoned") {
		t.Errorf("second uncordon = %v; want 'not cordoned'", err)
	}
	if _, err := td.client.CordonGPU(ctx, "7", ""); err == nil || !strings.Contains(err.Error(), `no GPU "7"`) {
		t.Errorf("cordon of a GPU that does not exist = %v; want a clear error", err)
	}
}

func eventKinds(t *testing.T, td *testDaemon) string {
	t.Helper()
	evs, err := td.client.Events(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	return strings.Join(kinds, " ")
}

// TestGCAppliesPipelineRetention: kilnd's GC keeps each pipeline's newest
// retention.models models, releases the files of older ones (their records
// stay), and a dry run reports the same without touching anything.
func TestGCAppliesPipelineRetention(t *testing.T) {
	ctx := context.Background()
	root := shortRoot(t)
	spec := "data: {format: csv, label: y}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\nretention: {models: 2}\n"
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.PipelinesDir+"/iris.yaml", []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	td := startTestDaemon(t, root, gputest.New(1, gpus.A100_SXM4_40GB))

	var models []storage.Model
	for i := range 3 {
		ref, err := td.d.store.PutBlob(ctx, strings.NewReader("weights of model "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		// Older than the blob grace period, as a model's files would be.
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(blobPath(t, td, ref.Digest), old, old); err != nil {
			t.Fatal(err)
		}
		err = td.d.store.Update(ctx, func(tx *storage.Tx) error {
			run, err := tx.CreateRun(storage.Run{Pipeline: "iris", State: storage.RunSucceeded})
			if err != nil {
				return err
			}
			m, err := tx.CreateModel(storage.Model{Pipeline: "iris", Run: run.ID, Files: []storage.FileRef{{Path: "model.json", Blob: ref}}})
			models = append(models, m)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	dry, err := td.client.GC(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.PrunedModels) != 1 || dry.PrunedModels[0] != models[0].ID || len(dry.DeletedBlobs) != 1 {
		t.Fatalf("dry run = %+v; want %s pruned and its blob deleted", dry, models[0].ID)
	}
	if _, err := os.Stat(blobPath(t, td, models[0].Files[0].Blob.Digest)); err != nil {
		t.Fatalf("dry run removed a blob: %v", err)
	}
	got, err := td.client.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.PrunedModels) != 1 || got.PrunedModels[0] != models[0].ID || len(got.KeptModels) != 2 {
		t.Fatalf("gc = %+v; want %s pruned and two kept", got, models[0].ID)
	}
	if _, err := os.Stat(blobPath(t, td, models[0].Files[0].Blob.Digest)); !os.IsNotExist(err) {
		t.Errorf("pruned model's blob still there: %v", err)
	}
	for _, m := range models[1:] {
		if _, err := os.Stat(blobPath(t, td, m.Files[0].Blob.Digest)); err != nil {
			t.Errorf("kept model %s lost its blob: %v", m.ID, err)
		}
	}
	if m, err := td.d.store.Model(models[0].ID); err != nil || !m.Pruned {
		t.Errorf("pruned model record = %+v, %v; want kept with Pruned set", m, err)
	}
	if !strings.Contains(eventKinds(t, td), "store.gc") {
		t.Error("no store.gc event")
	}
}

func blobPath(t *testing.T, td *testDaemon, digest string) string {
	t.Helper()
	p, err := td.d.store.BlobPath(digest)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
