package gpu

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	sampled := time.Date(2026, 11, 26, 2, 30, 0, 0, time.UTC)
	s := Snapshot{Available: true, Sampled: sampled, Devices: []Device{
		{
			Index: 0, UUID: "GPU-a", Name: "NVIDIA A100-SXM4-40GB",
			Memory:    Memory{Total: 40 << 30, Used: 1 << 30, Free: 39 << 30},
			Telemetry: Telemetry{Time: sampled, UtilGPU: 87, UtilMemory: 41, TempC: 66, PowerW: 251.5},
			Health: Health{Healthy: true,
				ECC:          ECC{Supported: true, VolatileCorrected: 3, AggregateCorrected: 17, AggregateUncorrected: 1},
				RemappedRows: RemappedRows{Supported: true, Correctable: 2, Uncorrectable: 1},
				Throttle:     Throttle{Supported: true, Mask: 0x24},
				XIDs:         []XID{{Code: 13, Time: sampled}},
				XIDCounts:    map[uint64]uint64{13: 1},
			},
		},
		{
			// Lost: its last readings are stale and not exported.
			Index: 1, UUID: "GPU-b", Name: "NVIDIA A100-SXM4-40GB",
			Memory:    Memory{Total: 40 << 30, Free: 40 << 30},
			Telemetry: Telemetry{Time: sampled, TempC: 30, Missing: []string{"power"}},
			Health: Health{Reason: "XID 79: GPU has fallen off the bus", Lost: true,
				XIDs: []XID{{Code: 79, Time: sampled, Fatal: true}}, XIDCounts: map[uint64]uint64{79: 1}},
		},
	}}
	const want = `
# HELP DCGM_FI_DEV_ECC_DBE_VOL_TOTAL Total number of double-bit volatile ECC errors.
# TYPE DCGM_FI_DEV_ECC_DBE_VOL_TOTAL counter
DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 0
# HELP DCGM_FI_DEV_ECC_SBE_AGG_TOTAL Total number of single-bit persistent ECC errors.
# TYPE DCGM_FI_DEV_ECC_SBE_AGG_TOTAL counter
DCGM_FI_DEV_ECC_SBE_AGG_TOTAL{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 17
# HELP DCGM_FI_DEV_ECC_SBE_VOL_TOTAL Total number of single-bit volatile ECC errors.
# TYPE DCGM_FI_DEV_ECC_SBE_VOL_TOTAL counter
DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 3
# HELP DCGM_FI_DEV_CLOCK_THROTTLE_REASONS Current clock throttle reasons (bitmask).
# TYPE DCGM_FI_DEV_CLOCK_THROTTLE_REASONS gauge
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 36
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 39936
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 1024
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 66
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 87
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 251.5
# HELP DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS Number of remapped rows for uncorrectable errors.
# TYPE DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS counter
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 1
# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 13
DCGM_FI_DEV_XID_ERRORS{UUID="GPU-b",gpu="1",modelName="NVIDIA A100-SXM4-40GB"} 79
# HELP kiln_gpu_available 1 when NVML found at least one GPU, 0 when kilnd runs CPU-only.
# TYPE kiln_gpu_available gauge
kiln_gpu_available 1
# HELP kiln_gpu_healthy 1 when kiln may place work on the GPU, 0 after a fatal XID or when it is lost.
# TYPE kiln_gpu_healthy gauge
kiln_gpu_healthy{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 1
kiln_gpu_healthy{UUID="GPU-b",gpu="1",modelName="NVIDIA A100-SXM4-40GB"} 0
# HELP kiln_gpu_xid_errors_total XID events seen since kilnd started, by code.
# TYPE kiln_gpu_xid_errors_total counter
kiln_gpu_xid_errors_total{UUID="GPU-a",gpu="0",modelName="NVIDIA A100-SXM4-40GB",xid="13"} 1
kiln_gpu_xid_errors_total{UUID="GPU-b",gpu="1",modelName="NVIDIA A100-SXM4-40GB",xid="79"} 1
`
	c := newCollector(func() Snapshot { return s })
	names := []string{
		"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
		"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
		"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
		"DCGM_FI_DEV_XID_ERRORS", "kiln_gpu_available", "kiln_gpu_healthy", "kiln_gpu_xid_errors_total",
		// Unsupported here: must be absent.
		"DCGM_FI_DEV_RETIRED_SBE",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		// dcgm-exporter's names and labels (UUID, modelName) are not
		// Prometheus-idiomatic; kept so dashboards can join on them. Only
		// those lint findings are expected.
		for _, p := range problems {
			if !strings.HasPrefix(p.Metric, "DCGM_") && !strings.Contains(p.Text, "label names") {
				t.Errorf("lint %s: %s", p.Metric, p.Text)
			}
		}
		if err != nil {
			t.Error(err)
		}
	}
}

func TestCollectorCPUOnly(t *testing.T) {
	c := newCollector(func() Snapshot { return Snapshot{Reason: ReasonNoDriver} })
	const want = `
# HELP kiln_gpu_available 1 when NVML found at least one GPU, 0 when kilnd runs CPU-only.
# TYPE kiln_gpu_available gauge
kiln_gpu_available 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
