package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/gpu"
)

// The gpu group runs only where NVML finds a GPU (`kilnbench -only gpu`, or
// gpu/check-real.sh for the full printout). Its figures are not in BENCH.md's
// table yet: they bound what kilnd pays for GPUs at start and at stop.
func init() { register(Group{Name: "gpu", Run: runGPU}) }

func runGPU(ctx context.Context, _ Options) []Figure {
	const (
		openName, openGoal = "gpu.open_ms", "<= 2000"
		stopName, stopGoal = "gpu.stop_ms", "<= 1000"
	)
	start := time.Now()
	m := gpu.Open(nil, gpu.Options{SampleInterval: time.Second})
	opened := time.Since(start)
	if !m.Available() {
		_ = m.Close()
		return []Figure{
			unmeasured(openName, "ms", openGoal, m.Reason()),
			unmeasured(stopName, "ms", stopGoal, m.Reason()),
		}
	}
	s := m.Snapshot()
	var names []string
	for _, d := range s.Devices {
		names = append(names, fmt.Sprintf("gpu%d %s %s", d.Index, d.Name, gpu.FormatBytes(d.Memory.Total)))
	}
	inv := fmt.Sprintf("driver %s, CUDA %s: %s", s.DriverVersion, s.CUDAVersion, strings.Join(names, ", "))
	figs := []Figure{measured(openName, gpuMillis(opened), "ms", openGoal, "NVML init + inventory + first sample; "+inv)}

	// Stop latency: the XID watcher blocks in EventSetWait, which cannot be
	// interrupted, so Close waits for the current wait to time out.
	if err := m.Start(ctx); err != nil {
		_ = m.Close()
		return append(figs, unmeasured(stopName, "ms", stopGoal, "start: "+err.Error()))
	}
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	if err := m.Close(); err != nil {
		return append(figs, unmeasured(stopName, "ms", stopGoal, "close: "+err.Error()))
	}
	return append(figs, measured(stopName, gpuMillis(time.Since(start)), "ms", stopGoal, "Close with the XID watcher and sampler running"))
}

func gpuMillis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
