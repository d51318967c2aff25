package gpu

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// realGPU is set where a GPU is expected; gpu/check-real.sh sets it.
var realGPU = os.Getenv("KILN_REAL_GPU") == "1"

// TestOpenHere opens the system's NVML for real. On a machine without a
// driver (this project's build machines) it must be the null inventory.
func TestOpenHere(t *testing.T) {
	m := Open(nil, Options{})
	defer func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	}()
	if m.Available() {
		if !realGPU {
			t.Skip("NVML found GPUs on this machine; TestRealGPU covers it")
		}
		return
	}
	reason := m.Reason()
	t.Logf("Open here: %s", reason)
	if !strings.HasPrefix(reason, ReasonNoDriver) && reason != "NVIDIA driver but no GPU: CPU-only" {
		t.Errorf("Reason() = %q, want it to start %q", reason, ReasonNoDriver)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Errorf("Start() = %v", err)
	}
	if _, err := Place(m.Snapshot(), nil, nil, Request{Count: 1}); err == nil || !strings.Contains(err.Error(), "CPU-only") {
		t.Errorf("Place() error = %v, want CPU-only", err)
	}
	if n := testutil.CollectAndCount(m.Collector()); n != 1 {
		t.Errorf("collector exported %d series, want only kiln_gpu_available", n)
	}
	select {
	case ev := <-m.Health():
		t.Errorf("health event %+v from the null inventory", ev)
	default:
	}
}

// TestRealGPU prints the real inventory, one telemetry sample taken by the
// running sampler, and the placement of a 1-GPU request. It runs only with
// KILN_REAL_GPU=1 and fails there when NVML is absent.
func TestRealGPU(t *testing.T) {
	if !realGPU {
		t.Skip("set KILN_REAL_GPU=1 on a machine with an NVIDIA GPU (gpu/check-real.sh)")
	}
	start := time.Now()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const interval = time.Second
	m := Open(log, Options{SampleInterval: interval})
	defer func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	}()
	if !m.Available() {
		t.Fatalf("KILN_REAL_GPU=1 but NVML says: %s", m.Reason())
	}
	s := m.Snapshot()
	fmt.Printf("== inventory: driver %s, CUDA %s, NVML %s, %d GPU(s) (New took %v)\n",
		s.DriverVersion, s.CUDAVersion, s.NVMLVersion, len(s.Devices), time.Since(start).Round(time.Millisecond))
	for _, d := range s.Devices {
		fmt.Printf("gpu%d %s %q pci=%s minor=%d memory total=%s used=%s free=%s mig=%v healthy=%v %s\n",
			d.Index, d.UUID, d.Name, d.PCIBusID, d.Minor, FormatBytes(d.Memory.Total), FormatBytes(d.Memory.Used),
			FormatBytes(d.Memory.Free), d.MIG.Enabled, d.Health.Healthy, d.Health.Reason)
		fmt.Printf("  cdi names: %s\n", strings.Join(d.CDINames, " "))
		for _, mg := range d.MIG.Devices {
			fmt.Printf("  mig %d %s gi=%d ci=%d memory=%s cdi=%s\n", mg.Index, mg.UUID, mg.GPUInstance,
				mg.ComputeInstance, FormatBytes(mg.Memory.Total), strings.Join(mg.CDINames, " "))
		}
		if d.UUID == "" || d.Memory.Total == 0 {
			t.Errorf("gpu%d: no UUID or memory read", d.Index)
		}
	}

	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := s.Sampled
	deadline := time.Now().Add(10 * interval)
	for m.Snapshot().Sampled.Equal(first) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s = m.Snapshot()
	if s.Sampled.Equal(first) {
		t.Errorf("the sampler took no sample in %v", 10*interval)
	}
	fmt.Printf("== telemetry sample at %s\n", s.Sampled.Format(time.RFC3339Nano))
	for _, d := range s.Devices {
		tl, h := d.Telemetry, d.Health
		fmt.Printf("gpu%d util=%d%% memutil=%d%% temp=%dC power=%.1fW used=%s missing=%v\n",
			d.Index, tl.UtilGPU, tl.UtilMemory, tl.TempC, tl.PowerW, FormatBytes(d.Memory.Used), tl.Missing)
		fmt.Printf("  ecc=%+v retired=%+v remapped=%+v throttle=%#x %v xids=%v\n",
			h.ECC, h.RetiredPages, h.RemappedRows, h.Throttle.Mask, h.Throttle.Reasons, h.XIDCounts)
	}
	fmt.Printf("== metrics: %d series\n", testutil.CollectAndCount(m.Collector()))

	got, err := Place(s, nil, nil, Request{Count: 1})
	fmt.Printf("== placement of 1 GPU: %v err=%v\n", got, err)
	if err != nil && len(s.Devices) > 0 && s.Devices[0].Health.Healthy && !s.Devices[0].MIG.Enabled {
		t.Errorf("Place(1 GPU) = %v", err)
	}
	missing, err := m.CheckCDI()
	fmt.Printf("== CDI in %v: missing=%v err=%v\n", DefaultCDIDirs, missing, err)

	select {
	case ev := <-m.Health():
		fmt.Printf("== health event: %+v\n", ev)
	default:
		fmt.Println("== no health events")
	}
	fmt.Printf("== done in %v\n", time.Since(start).Round(time.Millisecond))
}
