//go:build cgo

package daemon

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

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
		// Older than the blob grace period, as a model's files would be. Only
		// once a record names it: kilnd's own GC may run at any moment, and a
		// fresh blob is what the grace period protects.
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(blobPath(t, td, ref.Digest), old, old); err != nil {
			t.Fatal(err)
		}
	}
	dry, err := td.client.GC(ctx, true, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.PrunedModels) != 1 || dry.PrunedModels[0] != models[0].ID || len(dry.DeletedBlobs) != 1 {
		t.Fatalf("dry run = %+v; want %s pruned and its blob deleted", dry, models[0].ID)
	}
	if _, err := os.Stat(blobPath(t, td, models[0].Files[0].Blob.Digest)); err != nil {
		t.Fatalf("dry run removed a blob: %v", err)
	}
	got, err := td.client.GC(ctx, false, false, false)
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
