//go:build cgo

package daemon

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGPUReportGolden pins `kiln gpu -o json`: NVML readings (ECC,
// throttle, remapped rows, an XID 79 arriving while running, MIG) go through
// the gpu Manager, gpuReport and the API's JSON encoding.
func TestGPUReportGolden(t *testing.T) {
	tests := []struct {
		name     string
		build    func(t *testing.T) gpu.Snapshot
		leases   []gpu.Lease
		cordoned map[string]string
	}{
		{name: "gpu-report", build: mockedBox,
			leases:   []gpu.Lease{{GPU: gputest.UUID(0), Holder: "iris/r3"}},
			cordoned: map[string]string{gputest.UUID(1): "XID 79: GPU has fallen off the bus", gputest.UUID(3): ""},
		},
		{name: "gpu-cpu-only", build: func(t *testing.T) gpu.Snapshot {
			lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
			return gpu.New(lib, nil, gpu.Options{}).Snapshot()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gpuReport(tt.build(t), tt.leases, tt.cordoned)
			var got bytes.Buffer
			enc := json.NewEncoder(&got) // as localapi.WriteJSON and `kiln -o json` encode
			enc.SetIndent("", "  ")
			if err := enc.Encode(r); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.name+".json")
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run GPUReportGolden -update ./daemon/ to create it)", err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
			}
			// The wire form decodes back to the same report.
			var back api.GPUReport
			if err := json.Unmarshal(want, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(r, back); diff != "" {
				t.Errorf("decoded %s mismatch (-report +decoded):\n%s", path, diff)
			}
		})
	}
}

// mockedBox is a 4-GPU A100 box: gpu0 busy and leased, with ECC counts and
// power-cap throttling; gpu1 hit by XID 79 while running; gpu2 in MIG mode;
// gpu3 idle and cordoned.
func mockedBox(t *testing.T) gpu.Snapshot {
	srv := gputest.New(4, gpus.A100_SXM4_40GB)
	srv.Set(0, func(r *gputest.Readings) {
		r.Util = nvml.Utilization{Gpu: 87, Memory: 41}
		r.TempC, r.PowerMW, r.MemUsed = 66, 251_500, 12<<30
		r.Throttle = 0x4 | 0x20
		r.ECC = [2][2]uint64{{3, 17}, {0, 1}}
		r.RemappedCorr = 2
	})
	srv.Set(1, func(r *gputest.Readings) { r.TempC, r.PowerMW = 41, 60_000 })
	srv.Set(2, func(r *gputest.Readings) { r.NoECC, r.NoPower = true, true })
	srv.Set(3, func(r *gputest.Readings) { r.Throttle = 0x1 })
	srv.EnableMIG(2, 2)

	m := gpu.New(srv, nil, gpu.Options{SampleInterval: time.Hour})
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Events.XID(srv.Devices[1], 79)
	select {
	case <-m.Health():
	case <-time.After(5 * time.Second):
		t.Fatal("no health event after XID 79")
	}
	s := m.Snapshot()
	// Times come from the clock: pin them.
	at := time.Date(2026, 11, 26, 2, 30, 0, 0, time.UTC)
	s.Sampled = at
	for i := range s.Devices {
		s.Devices[i].Telemetry.Time = at
		for j := range s.Devices[i].Health.XIDs {
			s.Devices[i].Health.XIDs[j].Time = at.Add(-time.Minute)
		}
	}
	return s
}
