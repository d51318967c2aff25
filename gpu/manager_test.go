//go:build cgo

package gpu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kiln-edge/kiln/gpu/gputest"
)

var fixedTime = time.Date(2026, 11, 26, 2, 30, 0, 0, time.UTC)

// newTest builds a Manager on srv with a fixed clock and a short event
// wait, and closes it when the test ends.
func newTest(t *testing.T, srv nvml.Interface) *Manager {
	t.Helper()
	m := newWith(srv)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return m
}

func newWith(srv nvml.Interface) *Manager {
	m := New(srv, nil, Options{SampleInterval: 20 * time.Millisecond})
	m.now = func() time.Time { return fixedTime }
	m.nv.eventWait = 20 * time.Millisecond
	return m
}

// inventory is what TestInventory compares: the static part of a Device.
type inventory struct {
	Index    int
	UUID     string
	Name     string
	PCIBusID string
	Total    uint64
	CDINames []string
	Healthy  bool
}

func inventoryOf(s Snapshot) []inventory {
	var out []inventory
	for _, d := range s.Devices {
		out = append(out, inventory{d.Index, d.UUID, d.Name, d.PCIBusID, d.Memory.Total, d.CDINames, d.Health.Healthy})
	}
	return out
}

func TestInventory(t *testing.T) {
	a100 := func(i int) inventory {
		return inventory{i, gputest.UUID(i), "Mock NVIDIA A100-SXM4-40GB", "", 40 << 30,
			[]string{"nvidia.com/gpu=" + string(rune('0'+i)), "nvidia.com/gpu=" + gputest.UUID(i)}, true}
	}
	tests := []struct {
		name string
		srv  *gputest.Server
		want func() []inventory
	}{
		{"1 GPU", gputest.New(1, gpus.A100_SXM4_40GB), func() []inventory { return []inventory{a100(0)} }},
		{"2 GPUs", gputest.New(2, gpus.A100_SXM4_40GB), func() []inventory { return []inventory{a100(0), a100(1)} }},
		{"8 GPUs, DGX A100", gputest.Wrap(dgxa100.New()), func() []inventory {
			var out []inventory
			for i := range 8 {
				out = append(out, a100(i))
			}
			return out
		}},
		{"8 GPUs, DGX H100", gputest.Wrap(dgxh100.New()), func() []inventory {
			var out []inventory
			for i := range 8 {
				in := a100(i)
				in.Name, in.Total = "NVIDIA H100 80GB HBM3", 80<<30
				out = append(out, in)
			}
			return out
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTest(t, tt.srv)
			s := m.Snapshot()
			if !s.Available || s.Reason != "" || !m.Available() || m.Reason() != "" {
				t.Fatalf("Available = %v, Reason = %q; want an available inventory", s.Available, s.Reason)
			}
			want := tt.want()
			for i := range want {
				want[i].PCIBusID = tt.srv.Device(i).PciBusID
			}
			if diff := cmp.Diff(want, inventoryOf(s)); diff != "" {
				t.Errorf("inventory mismatch (-want +got):\n%s", diff)
			}
			if s.DriverVersion != "550.54.15" || s.CUDAVersion != "12.4" || s.NVMLVersion != "12.550.54.15" {
				t.Errorf("versions = %q, %q, %q; want 550.54.15, 12.4, 12.550.54.15", s.DriverVersion, s.CUDAVersion, s.NVMLVersion)
			}
			// New takes the first sample, so a snapshot is complete at once.
			if s.Sampled.IsZero() || s.Devices[0].Telemetry.Time.IsZero() {
				t.Errorf("no sample taken by New: Sampled = %v", s.Sampled)
			}
		})
	}
}

func TestTelemetryAndHealthReadings(t *testing.T) {
	srv := gputest.New(2, gpus.A100_SXM4_40GB)
	srv.Set(1, func(r *gputest.Readings) {
		r.Util = nvml.Utilization{Gpu: 87, Memory: 41}
		r.TempC, r.PowerMW, r.MemUsed = 66, 251_500, 12<<30
		r.Throttle = 0x4 | 0x20
		r.ECC = [2][2]uint64{{3, 17}, {0, 1}}
		r.RemappedCorr, r.RemappedUnc, r.RemapPending = 2, 1, true
		r.NoPower = false
	})
	srv.Set(0, func(r *gputest.Readings) {
		r.NoECC, r.NoPower = true, true
		r.RetiredPagesSupported, r.RetiredSBE, r.RetiredDBE, r.RetiredPending = true, 4, 1, true
	})
	m := newTest(t, srv)
	m.sample()
	s := m.Snapshot()

	want := []Device{
		{
			Memory:    Memory{Total: 40 << 30, Free: 40 << 30},
			Telemetry: Telemetry{Time: fixedTime, Missing: []string{"power"}},
			Health: Health{Healthy: true,
				RetiredPages: RetiredPages{Supported: true, SingleBit: 4, DoubleBit: 1, Pending: true},
				RemappedRows: RemappedRows{Supported: true},
				Throttle:     Throttle{Supported: true}},
		},
		{
			Memory:    Memory{Total: 40 << 30, Used: 12 << 30, Free: 28 << 30},
			Telemetry: Telemetry{Time: fixedTime, UtilGPU: 87, UtilMemory: 41, TempC: 66, PowerW: 251.5},
			Health: Health{Healthy: true,
				ECC:          ECC{Supported: true, VolatileCorrected: 3, AggregateCorrected: 17, AggregateUncorrected: 1},
				RemappedRows: RemappedRows{Supported: true, Correctable: 2, Uncorrectable: 1, Pending: true},
				Throttle:     Throttle{Supported: true, Mask: 0x24, Reasons: []string{"sw_power_cap", "sw_thermal_slowdown"}}},
		},
	}
	opts := cmpopts.IgnoreFields(Device{}, "Index", "UUID", "Name", "PCIBusID", "Minor", "MIG", "CDINames")
	if diff := cmp.Diff(want, s.Devices, opts); diff != "" {
		t.Errorf("readings mismatch (-want +got):\n%s", diff)
	}

	// Unsupported readings are asked once, then never again.
	before := srv.Calls(0)
	m.sample()
	// GPU 0 is asked memory, utilization, temperature, throttle, retired
	// pages (3) and remapped rows; power and ECC were unsupported.
	if got := srv.Calls(0) - before; got != 8 {
		t.Errorf("GPU 0 answered %d readings in one sample, want 8", got)
	}
}

func TestSnapshotIsACopy(t *testing.T) {
	m := newTest(t, gputest.New(1, gpus.A100_SXM4_40GB))
	s := m.Snapshot()
	s.Devices[0].UUID = "changed"
	s.Devices[0].CDINames[0] = "changed"
	if got := m.Snapshot().Devices[0]; got.UUID != gputest.UUID(0) || got.CDINames[0] != "nvidia.com/gpu=0" {
		t.Errorf("Snapshot shares memory with the Manager: %+v", got)
	}
}

func TestMIG(t *testing.T) {
	srv := gputest.New(2, gpus.A100_SXM4_40GB)
	srv.EnableMIG(0, 3)
	m := newTest(t, srv)
	s := m.Snapshot()
	mig := s.Devices[0].MIG
	if !mig.Enabled || mig.Pending {
		t.Fatalf("MIG = %+v, want enabled, nothing pending", mig)
	}
	var want []MIGDevice
	for j := range 3 {
		want = append(want, MIGDevice{
			Index: j, UUID: gputest.MIGUUID(0, j), GPUInstance: j + 1,
			Memory:   Memory{Total: 5 << 30, Free: 5 << 30},
			CDINames: []string{"nvidia.com/gpu=0:" + string(rune('0'+j)), "nvidia.com/gpu=" + gputest.MIGUUID(0, j)},
		})
	}
	if diff := cmp.Diff(want, mig.Devices); diff != "" {
		t.Errorf("MIG devices mismatch (-want +got):\n%s", diff)
	}
	if s.Devices[1].MIG.Enabled {
		t.Errorf("GPU 1 in MIG mode, want not")
	}
	got, err := Place(s, nil, nil, Request{Count: 2})
	if err == nil || err.Error() != "need 2 GPUs, 1 eligible: gpu0 in MIG mode" {
		t.Errorf("Place(2) = %v, %v; want the MIG GPU passed over", got, err)
	}

	// An Xid reported on a MIG device makes its GPU unhealthy.
	mdev, _ := srv.Device(0).GetMigDeviceHandleByIndex(1)
	m.handleEvent(nvml.EventData{Device: mdev, EventType: nvml.EventTypeXidCriticalError, EventData: 48})
	if ev := <-m.Health(); ev.Index != 0 || ev.XID != 48 {
		t.Errorf("health event = %+v, want gpu0 with Xid 48", ev)
	}
}

// TestXID79MidRun feeds Xid events through the EventSet while the Manager
// runs: a non-fatal Xid is only counted, Xid 79 makes the GPU unhealthy,
// is published once, and placement passes over the GPU from then on.
func TestXID79MidRun(t *testing.T) {
	srv := gputest.New(2, gpus.A100_SXM4_40GB)
	m := newTest(t, srv)
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err == nil {
		t.Error("second Start() = nil, want an error")
	}
	leased, err := Place(m.Snapshot(), nil, nil, Request{Count: 1})
	if err != nil || len(leased) != 1 || leased[0] != gputest.UUID(0) {
		t.Fatalf("Place() = %v, %v; want gpu0", leased, err)
	}
	leases := []Lease{{GPU: leased[0], Holder: "iris/r3"}}

	srv.Events.XID(srv.Devices[0], 13) // an application's own fault
	srv.Events.XID(srv.Devices[1], 79)
	srv.Events.XID(srv.Devices[1], 79)

	select {
	case ev := <-m.Health():
		want := HealthEvent{UUID: gputest.UUID(1), Index: 1, Reason: "XID 79: GPU has fallen off the bus", XID: 79, Time: fixedTime}
		if diff := cmp.Diff(want, ev); diff != "" {
			t.Errorf("health event mismatch (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no health event after XID 79")
	}
	// Wait until the watcher has consumed the second 79, then check that
	// it published nothing more.
	deadline := time.Now().Add(5 * time.Second)
	for m.Snapshot().Devices[1].Health.XIDCounts[79] < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case ev := <-m.Health():
		t.Errorf("second health event %+v, want one per transition", ev)
	default:
	}

	s := m.Snapshot()
	if h := s.Devices[0].Health; !h.Healthy || len(h.XIDs) != 1 || h.XIDs[0].Code != 13 || h.XIDs[0].Fatal {
		t.Errorf("gpu0 health = %+v, want healthy with Xid 13 recorded", h)
	}
	if h := s.Devices[1].Health; h.Healthy || h.XIDCounts[79] != 2 || len(h.XIDs) != 2 || !h.XIDs[1].Fatal {
		t.Errorf("gpu1 health = %+v, want unhealthy with two Xid 79", h)
	}
	_, err = Place(s, leases, nil, Request{Count: 1})
	want := "need 1 GPU: gpu0 leased to iris/r3, gpu1 unhealthy (XID 79: GPU has fallen off the bus)"
	if err == nil || err.Error() != want {
		t.Errorf("Place() error = %v, want %q", err, want)
	}

	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v, want the watcher to end within its wait timeout", d)
	}
	if got := srv.Events.Freed(); got != 1 {
		t.Errorf("EventSet freed %d times, want 1", got)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if got := len(srv.ShutdownCalls()); got != 1 {
		t.Errorf("nvml Shutdown called %d times, want 1", got)
	}
	if err := m.Start(t.Context()); err == nil {
		t.Error("Start after Close = nil, want an error")
	}
}

// TestStartEndsWithContext: both goroutines end when Start's context ends.
func TestStartEndsWithContext(t *testing.T) {
	srv := gputest.New(1, gpus.A100_SXM4_40GB)
	m := newTest(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // a few samples
	cancel()
	done := make(chan struct{})
	go func() { m.nv.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("goroutines still running after the context ended")
	}
	if srv.Events.Freed() != 1 {
		t.Errorf("EventSet not freed when the watcher ended")
	}
	n := srv.Calls(0)
	time.Sleep(60 * time.Millisecond)
	if srv.Calls(0) != n {
		t.Errorf("still sampling after the context ended")
	}
}

func TestGPULost(t *testing.T) {
	t.Run("at New", func(t *testing.T) {
		srv := gputest.New(2, gpus.A100_SXM4_40GB)
		handle := srv.DeviceGetHandleByIndexFunc
		srv.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i == 1 {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return handle(i)
		}
		m := newTest(t, srv)
		s := m.Snapshot()
		if !s.Available || len(s.Devices) != 2 {
			t.Fatalf("snapshot = %+v, want 2 GPUs, one lost", s)
		}
		if h := s.Devices[1].Health; h.Healthy || !h.Lost || h.Reason != "lost (ERROR_GPU_IS_LOST)" {
			t.Errorf("gpu1 health = %+v, want lost", h)
		}
		select {
		case ev := <-m.Health():
			if ev.Index != 1 || ev.Healthy {
				t.Errorf("health event = %+v, want gpu1 unhealthy", ev)
			}
		default:
			t.Error("no health event for a GPU lost at start")
		}
		if err := m.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, err := Place(m.Snapshot(), nil, nil, Request{Count: 1}); err != nil || got[0] != gputest.UUID(0) {
			t.Errorf("Place() = %v, %v; want gpu0", got, err)
		}
	})

	t.Run("while sampling", func(t *testing.T) {
		srv := gputest.New(2, gpus.A100_SXM4_40GB)
		m := newTest(t, srv)
		srv.Set(0, func(r *gputest.Readings) { r.Lost = true })
		m.sample()
		ev := <-m.Health()
		if ev.Index != 0 || ev.Reason != "lost (ERROR_GPU_IS_LOST)" {
			t.Errorf("health event = %+v, want gpu0 lost", ev)
		}
		n := srv.Calls(0)
		m.sample()
		if srv.Calls(0) != n {
			t.Errorf("a lost GPU is still sampled")
		}
		if h := m.Snapshot().Devices[1].Health; !h.Healthy {
			t.Errorf("gpu1 health = %+v, want healthy", h)
		}
	})

	t.Run("from the event wait", func(t *testing.T) {
		srv := gputest.New(2, gpus.A100_SXM4_40GB)
		m := newTest(t, srv)
		if err := m.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		srv.Set(1, func(r *gputest.Readings) { r.Lost = true })
		srv.Events.Fail(nvml.ERROR_GPU_IS_LOST)
		select {
		case ev := <-m.Health():
			if ev.Index != 1 || !strings.Contains(ev.Reason, "ERROR_GPU_IS_LOST") {
				t.Errorf("health event = %+v, want gpu1 lost", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no health event after the wait reported a lost GPU")
		}
	})
}

func TestInitFailureDegrades(t *testing.T) {
	shutdowns := 0
	lib := func(init, count nvml.Return, n int) *mock.Interface {
		return &mock.Interface{
			InitFunc:           func() nvml.Return { return init },
			DeviceGetCountFunc: func() (int, nvml.Return) { return n, count },
			ShutdownFunc:       func() nvml.Return { shutdowns++; return nvml.SUCCESS },
		}
	}
	tests := []struct {
		name         string
		lib          *mock.Interface
		wantReason   string
		wantShutdown int
	}{
		{"library not found", lib(nvml.ERROR_LIBRARY_NOT_FOUND, 0, 0), "no NVIDIA driver: CPU-only", 0},
		{"driver not loaded", lib(nvml.ERROR_DRIVER_NOT_LOADED, 0, 0), "no NVIDIA driver: CPU-only (nvml init: ERROR_DRIVER_NOT_LOADED)", 0},
		{"version mismatch", lib(nvml.ERROR_LIB_RM_VERSION_MISMATCH, 0, 0), "no NVIDIA driver: CPU-only (nvml init: ERROR_LIB_RM_VERSION_MISMATCH)", 0},
		{"count fails", lib(nvml.SUCCESS, nvml.ERROR_UNKNOWN, 0), "no NVIDIA driver: CPU-only (nvml device count: ERROR_UNKNOWN)", 1},
		{"no GPU", lib(nvml.SUCCESS, nvml.SUCCESS, 0), "NVIDIA driver but no GPU: CPU-only", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shutdowns = 0
			m := New(tt.lib, nil, Options{})
			if m.Available() || m.Reason() != tt.wantReason {
				t.Errorf("Available, Reason = %v, %q; want false, %q", m.Available(), m.Reason(), tt.wantReason)
			}
			if err := m.Start(t.Context()); err != nil {
				t.Errorf("Start() = %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
			if shutdowns != tt.wantShutdown {
				t.Errorf("Shutdown called %d times, want %d", shutdowns, tt.wantShutdown)
			}
			s := m.Snapshot()
			if len(s.Devices) != 0 {
				t.Errorf("null inventory has %d devices", len(s.Devices))
			}
			_, err := Place(s, nil, nil, Request{Count: 1})
			if err == nil || err.Error() != "need 1 GPU: "+tt.wantReason {
				t.Errorf("Place() error = %v, want the reason", err)
			}
			if missing, err := m.CheckCDI(); missing != nil || err != nil {
				t.Errorf("CheckCDI() = %v, %v; want nothing to check", missing, err)
			}
		})
	}
}

// TestSymbolFallback: with a driver older than the clocks-event and
// row-remapping functions, the old throttle call is used and remapped rows
// are never asked (calling a missing symbol would crash the process).
func TestSymbolFallback(t *testing.T) {
	srv := gputest.New(1, gpus.A100_SXM4_40GB)
	srv.LookupSymbolFunc = func(name string) error {
		switch name {
		case "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetRemappedRows":
			return nvml.ERROR_FUNCTION_NOT_FOUND
		}
		return nil
	}
	srv.Set(0, func(r *gputest.Readings) { r.Throttle = 0x8 })
	m := newTest(t, srv)
	d := srv.Device(0)
	if n := len(d.GetCurrentClocksEventReasonsCalls()); n != 0 {
		t.Errorf("GetCurrentClocksEventReasons called %d times, want 0", n)
	}
	if n := len(d.GetRemappedRowsCalls()); n != 0 {
		t.Errorf("GetRemappedRows called %d times, want 0", n)
	}
	if got := m.Snapshot().Devices[0].Health.Throttle.Reasons; !cmp.Equal(got, []string{"hw_slowdown"}) {
		t.Errorf("throttle reasons = %v, want [hw_slowdown]", got)
	}
}
