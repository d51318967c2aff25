package pipelinetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/pipeline"
)

// TestFakeContract checks the points of the runtime contract the fakes keep
// (the package doc lists them), so tests built on them see what the real
// runtime would do.
func TestFakeContract(t *testing.T) {
	dir, err := os.MkdirTemp("", "kf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx := context.Background()
	rt := NewRuntime(dir)

	// Training: Wait gives up with ctx and leaves it running; Cancel ends it with 143;
	// a second start of the same ID fails; Attach finds it.
	release := rt.HoldTraining()
	defer release()
	job := pipeline.TrainJob{ContainerID: "kiln-train-p-r1", Workspace: filepath.Join(dir, "ws"), Channels: map[string]string{"train": filepath.Join(dir, "ch")}}
	tr, err := rt.StartTraining(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := tr.Wait(short); err == nil {
		t.Error("Wait of a held training returned before its context ended")
	}
	cancel()
	if _, err := rt.StartTraining(ctx, job); err == nil {
		t.Error("a second start of a running container ID succeeded")
	}
	if _, err := rt.AttachTraining(ctx, job); err != nil {
		t.Errorf("attach a running training: %v", err)
	}
	if err := tr.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := tr.Wait(ctx); err != nil || res.ExitCode != 143 {
		t.Errorf("Wait after Cancel = %+v, %v; want exit 143", res, err)
	}

	// Serving: Ready honours ctx; Stop removes it: no dial, no attach; a second
	// Stop is no error.
	modelDir := filepath.Join(dir, "m")
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(modelDir, "centroids.json"), []byte(`{"a":[0,0],"b":[5,5]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sj := pipeline.ServeJob{ContainerID: "kiln-serve-p-m1", Model: "p/m1", ModelDir: modelDir}
	releaseReady := rt.HoldReady()
	srv, err := rt.StartServing(ctx, sj)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	if err := srv.Ready(short); err == nil {
		t.Error("Ready of a held server returned nil before its context ended")
	}
	cancel()
	releaseReady()
	if err := srv.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StartServing(ctx, sj); err == nil {
		t.Error("a second start of a serving container ID succeeded")
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := srv.DialContext(ctx); err == nil {
		_ = c.Close()
		t.Error("dialled a stopped serving container")
	}
	if _, err := rt.AttachServing(ctx, sj); err == nil {
		t.Error("attached a stopped serving container")
	}
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if got := rt.Serving(); len(got) != 0 {
		t.Errorf("Serving() after Stop = %v; want none", got)
	}
}
