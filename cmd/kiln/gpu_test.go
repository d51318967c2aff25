package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
)

func TestPrintGPUTable(t *testing.T) {
	// The daemon's golden `kiln gpu -o json`, so the table renders what
	// the API really sends.
	b, err := os.ReadFile("../../daemon/testdata/gpu-report.json")
	if err != nil {
		t.Fatal(err)
	}
	var box api.GPUReport
	if err := json.Unmarshal(b, &box); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		r    api.GPUReport
		want string
	}{
		{"CPU-only", api.GPUReport{Reason: "no NVIDIA driver: CPU-only", GPUs: []api.GPU{}}, "no NVIDIA driver: CPU-only\n"},
		{"four GPUs", box, `NVIDIA driver 550.54.15, CUDA 12.4, 4 GPUs, sampled 2026-11-26T02:30:00Z

GPU  NAME                        MEMORY USED  UTIL  TEMP  POWER  ECC SBE/DBE  THROTTLE                          STATE      DETAIL
0    Mock NVIDIA A100-SXM4-40GB  12Gi / 40Gi  87%   66C   252W   3/0          sw_power_cap,sw_thermal_slowdown  leased     leased to iris/r3
1    Mock NVIDIA A100-SXM4-40GB  0 / 40Gi     0%    41C   60W    0/0          -                                 unhealthy  XID 79: GPU has fallen off the bus
2    Mock NVIDIA A100-SXM4-40GB  0 / 40Gi     0%    0C    -      -            -                                 mig        2 MIG devices
3    Mock NVIDIA A100-SXM4-40GB  0 / 40Gi     0%    0C    0W     0/0          gpu_idle                          cordoned   cordoned

GPU  UUID                                      CDI DEVICE          MEMORY
0    GPU-0000a100-0000-4000-8000-000000000000  nvidia.com/gpu=0    40Gi
1    GPU-0000a100-0000-4000-8000-000000000001  nvidia.com/gpu=1    40Gi
2    GPU-0000a100-0000-4000-8000-000000000002  nvidia.com/gpu=2    40Gi
2:0  MIG-00000002-0000-4000-8000-000000000000  nvidia.com/gpu=2:0  5Gi
2:1  MIG-00000002-0000-4000-8000-000000000001  nvidia.com/gpu=2:1  5Gi
3    GPU-0000a100-0000-4000-8000-000000000003  nvidia.com/gpu=3    40Gi
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bytes.Buffer
			if err := printGPUTable(&got, tt.r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Errorf("printGPUTable mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
