//go:build cgo

package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// TestPipelineLoadedTime: kiln pipelines' LOADED is when each file, as it is
// now, was loaded: a reload keeps an unchanged spec's time and moves only
// the changed and added ones'.
func TestPipelineLoadedTime(t *testing.T) {
	ctx := context.Background()
	root := shortRoot(t)
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, extra string) {
		t.Helper()
		spec := "data: {format: csv, label: y}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n" + extra
		if err := os.WriteFile(filepath.Join(paths.PipelinesDir, name+".yaml"), []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("iris", "")
	td := startTestDaemon(t, root, gputest.New(1, gpus.A100_SXM4_40GB))
	loaded := func() map[string]time.Time {
		t.Helper()
		ps, err := td.client.Pipelines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, p := range ps {
			out[p.Pipeline] = p.Created
		}
		return out
	}
	first := loaded()["iris"]
	if first.IsZero() {
		t.Fatal("iris has no load time")
	}

	time.Sleep(20 * time.Millisecond)
	write("pumps", "")
	if _, err := td.client.ReloadPipelines(ctx); err != nil {
		t.Fatal(err)
	}
	got := loaded()
	if !got["iris"].Equal(first) || !got["pumps"].After(first) {
		t.Errorf("after adding pumps: iris %v, pumps %v; want iris still %v, pumps later", got["iris"], got["pumps"], first)
	}

	time.Sleep(20 * time.Millisecond)
	write("iris", "retention: {models: 3}\n")
	if _, err := td.client.ReloadPipelines(ctx); err != nil {
		t.Fatal(err)
	}
	again := loaded()
	if !again["iris"].After(got["pumps"]) || !again["pumps"].Equal(got["pumps"]) {
		t.Errorf("after changing iris: iris %v, pumps %v; want iris later than %v, pumps unchanged", again["iris"], again["pumps"], got["pumps"])
	}
}
