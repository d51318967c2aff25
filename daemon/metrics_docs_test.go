//go:build cgo

package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/docs"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// TestMetricsRegistryDocumented gathers a running kilnd's registry (with a
// mocked GPU, so the DCGM figures are there) and fails when a metric it
// exports has no row in docs/metrics.md. docs' own test checks the names
// declared in the source, which covers the families only a full loop emits.
func TestMetricsRegistryDocumented(t *testing.T) {
	td := startTestDaemon(t, shortRoot(t), gputest.New(1, gpus.A100_SXM4_40GB))
	rows, err := docs.TableRows(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	waitUntil(t, "a GPU sample in the registry", func() bool {
		mfs, err := td.d.metrics.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		return strings.Contains(strings.Join(names, " "), "DCGM_FI_DEV_FB_USED")
	})
	for _, name := range names {
		documented := false
		for _, r := range rows {
			documented = documented || docs.Documents(r.Key, name)
		}
		if !documented {
			t.Errorf("docs/metrics.md has no row for %s, which kilnd's registry exports", name)
		}
	}
	if len(names) < 20 {
		t.Errorf("the registry gathered only %d families: %v", len(names), names)
	}
}
