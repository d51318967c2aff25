package gpu

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const gi = 1 << 30

func dev(i int, util uint32, used, free uint64) Device {
	return Device{
		Index:     i,
		UUID:      "GPU-" + string(rune('a'+i)),
		Memory:    Memory{Total: used + free, Used: used, Free: free},
		Telemetry: Telemetry{UtilGPU: util},
		Health:    Health{Healthy: true},
	}
}

func TestPlace(t *testing.T) {
	four := Snapshot{Available: true, Devices: []Device{
		dev(0, 50, 10*gi, 30*gi),
		dev(1, 0, 4*gi, 36*gi),
		dev(2, 0, 1*gi, 39*gi),
		dev(3, 90, 39*gi, 1*gi),
	}}
	sick := four.clone()
	sick.Devices[1].Health = Health{Healthy: false, Reason: "XID 79: GPU has fallen off the bus"}
	mig := four.clone()
	mig.Devices[2].MIG.Enabled = true

	tests := []struct {
		name     string
		snap     Snapshot
		leases   []Lease
		cordoned map[string]string
		req      Request
		want     []string
		wantErr  string
	}{
		{name: "zero GPUs places trivially", snap: four, req: Request{}, want: nil},
		{name: "least utilized, then least memory used", snap: four, req: Request{Count: 1}, want: []string{"GPU-c"}},
		{name: "two least loaded in order", snap: four, req: Request{Count: 2}, want: []string{"GPU-c", "GPU-b"}},
		{name: "min free skips full GPUs", snap: four, req: Request{Count: 4, MinFree: 8 * gi},
			wantErr: "need 4 GPUs with 8Gi free, 3 eligible: gpu3 has 1Gi free"},
		{name: "leases, cordons and health", snap: sick,
			leases:   []Lease{{GPU: "GPU-a", Holder: "iris/r3"}},
			cordoned: map[string]string{"GPU-c": "by alice", "GPU-d": ""},
			req:      Request{Count: 1, MinFree: 8 * gi},
			wantErr: "need 1 GPU with 8Gi free: gpu0 leased to iris/r3, gpu1 unhealthy (XID 79: GPU has fallen off the bus), " +
				"gpu2 cordoned (by alice), gpu3 cordoned"},
		{name: "MIG GPUs are not placed whole", snap: mig, req: Request{Count: 1}, want: []string{"GPU-b"}},
		{name: "CPU-only", snap: Snapshot{Reason: ReasonNoDriver}, req: Request{Count: 1},
			wantErr: "need 1 GPU: no NVIDIA driver: CPU-only"},
		{name: "driver without GPUs", snap: Snapshot{Available: true}, req: Request{Count: 1},
			wantErr: "need 1 GPU: no GPUs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Place(tt.snap, tt.leases, tt.cordoned, tt.req)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Place() error = %v, want %q", err, tt.wantErr)
				}
				var pe *PlaceError
				if !errors.As(err, &pe) {
					t.Fatalf("Place() error is %T, want *PlaceError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Place() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Place() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlaceContention is the daemon's pattern: place and record the lease
// under one lock. Two requests for the only free GPU get one lease and one
// reason.
func TestPlaceContention(t *testing.T) {
	s := Snapshot{Available: true, Devices: []Device{dev(0, 0, 0, 40*gi)}}
	req := Request{Count: 1, MinFree: 8 * gi}
	var leases []Lease
	var reasons []string
	for _, run := range []string{"iris/r1", "pumps/r2"} {
		got, err := Place(s, leases, nil, req)
		if err != nil {
			reasons = append(reasons, run+": "+err.Error())
			continue
		}
		for _, uuid := range got {
			leases = append(leases, Lease{GPU: uuid, Holder: run})
		}
	}
	if diff := cmp.Diff([]Lease{{GPU: "GPU-a", Holder: "iris/r1"}}, leases); diff != "" {
		t.Errorf("leases mismatch (-want +got):\n%s", diff)
	}
	want := []string{"pumps/r2: need 1 GPU with 8Gi free: gpu0 leased to iris/r1"}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("reasons mismatch (-want +got):\n%s", diff)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0", 1023: "1023", 1024: "1Ki", 512 << 20: "512Mi", 8 * gi: "8Gi", 3 * gi / 2: "1.5Gi", 40 * gi: "40Gi",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestThrottleReasons(t *testing.T) {
	tests := []struct {
		mask uint64
		want []string
	}{
		{0, nil},
		{0x1, []string{"gpu_idle"}},
		{0x4 | 0x40, []string{"sw_power_cap", "hw_thermal_slowdown"}},
		{0x1000 | 0x8, []string{"hw_slowdown", "0x1000"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ThrottleReasons(tt.mask)); diff != "" {
			t.Errorf("ThrottleReasons(%#x) mismatch (-want +got):\n%s", tt.mask, diff)
		}
	}
}

func TestSnapshotSummary(t *testing.T) {
	s := Snapshot{Available: true, DriverVersion: "550.54.15", Devices: []Device{
		{Name: "NVIDIA A100-SXM4-40GB", Health: Health{Healthy: true}},
		{Name: "NVIDIA A100-SXM4-40GB", Health: Health{Healthy: false}},
	}}
	if got, want := s.Summary(), "2 GPUs (NVIDIA A100-SXM4-40GB), driver 550.54.15, 1 unhealthy"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	null := Snapshot{Reason: ReasonNoDriver}
	if got := null.Summary(); got != ReasonNoDriver {
		t.Errorf("null Summary() = %q, want %q", got, ReasonNoDriver)
	}
}
