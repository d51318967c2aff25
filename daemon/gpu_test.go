//go:build cgo

package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/storage"
)

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
