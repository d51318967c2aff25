//go:build cgo

package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

// TestLineageOfUnknownID: the lineage of an ID kilnd never made is "not
// found" (kiln exits non-zero), while a record without edges yet (a first
// dataset) has an empty lineage.
func TestLineageOfUnknownID(t *testing.T) {
	ctx := context.Background()
	td := startTestDaemon(t, shortRoot(t), gputest.New(1, gpus.A100_SXM4_40GB))
	var id string
	if err := td.d.store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted, Rows: 1})
		id = d.ID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if l, err := td.client.Lineage(ctx, id, "up", 0); err != nil || len(l.Nodes) != 0 {
		t.Errorf("lineage of %s = %+v, %v; want an empty lineage", id, l, err)
	}
	for _, missing := range []string{"iris/m9", "iris/d99", "iris/r1", "iris/e1", "cancer/m9"} {
		for _, dir := range []string{"up", "down"} {
			if l, err := td.client.Lineage(ctx, missing, dir, 0); err == nil || !strings.Contains(err.Error(), "not found") {
				t.Errorf("lineage %s --%s = %+v, %v; want not found", missing, dir, l, err)
			}
		}
	}
}
