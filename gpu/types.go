package gpu

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ReasonNoDriver is what a null inventory says everywhere: Reason, the
// report of `kiln gpu`, and placement errors.
const ReasonNoDriver = "no NVIDIA driver: CPU-only"

// Snapshot is the inventory, health and latest telemetry at one moment. It
// is a deep copy: the caller may keep and change it.
type Snapshot struct {
	// Available is false for the null inventory; Reason then says why.
	Available bool
	Reason    string
	// DriverVersion ("550.54.15"), CUDAVersion ("12.4", the newest CUDA the
	// driver supports) and NVMLVersion, as NVML reports them.
	DriverVersion string
	CUDAVersion   string
	NVMLVersion   string
	// Sampled is when the latest telemetry sample finished.
	Sampled time.Time
	Devices []Device
}

// Summary is one line for status and logs: "1 GPU (NVIDIA H200), driver
// 580.159.04, 1 unhealthy", or the reason kiln runs CPU-only.
func (s Snapshot) Summary() string {
	if !s.Available {
		return s.Reason
	}
	var names []string
	unhealthy := 0
	for _, d := range s.Devices {
		if !slices.Contains(names, d.Name) {
			names = append(names, d.Name)
		}
		if !d.Health.Healthy {
			unhealthy++
		}
	}
	plural := "s"
	if len(s.Devices) == 1 {
		plural = ""
	}
	out := fmt.Sprintf("%d GPU%s (%s), driver %s", len(s.Devices), plural, strings.Join(names, ", "), s.DriverVersion)
	if unhealthy > 0 {
		out += fmt.Sprintf(", %d unhealthy", unhealthy)
	}
	return out
}

// Device is one physical GPU.
type Device struct {
	Index int
	// UUID is "GPU-…"; it identifies the GPU in leases, cordons and
	// lineage because indices may change when a GPU is lost or added.
	UUID     string
	Name     string
	PCIBusID string
	// Minor is N of /dev/nvidiaN.
	Minor  int
	Memory Memory
	MIG    MIG
	// CDINames are the qualified CDI device names nvidia-ctk generates for
	// this GPU with its default strategies (index and UUID); CDINames[0]
	// is the index name, the one every nvidia-ctk version writes.
	CDINames  []string
	Telemetry Telemetry
	Health    Health
}

// CDIName is the name the runtime injects: "nvidia.com/gpu=<index>".
func (d Device) CDIName() string {
	if len(d.CDINames) == 0 {
		return ""
	}
	return d.CDINames[0]
}

// Memory is framebuffer memory in bytes.
type Memory struct {
	Total, Used, Free uint64
}

// MIG is a GPU's multi-instance mode and its MIG devices.
type MIG struct {
	// Enabled is the current mode; Pending is the mode after the next GPU
	// reset when it differs.
	Enabled, Pending bool
	Devices          []MIGDevice
}

// MIGDevice is one MIG device (a compute instance within a GPU instance).
type MIGDevice struct {
	// Index is the MIG device index within its GPU, as in
	// "nvidia.com/gpu=<gpu>:<index>".
	Index           int
	UUID            string
	GPUInstance     int
	ComputeInstance int
	Memory          Memory
	CDINames        []string
}

// Telemetry is one sample. A reading NVML does not support on this GPU is
// named in Missing and left zero.
type Telemetry struct {
	Time time.Time
	// UtilGPU and UtilMemory are percentages over NVML's last sample
	// period (1/6 s to 1 s depending on the product).
	UtilGPU, UtilMemory uint32
	TempC               uint32
	PowerW              float64
	Missing             []string
}

// Has says whether a reading ("utilization", "temperature", "power") was
// taken.
func (t Telemetry) Has(reading string) bool { return !slices.Contains(t.Missing, reading) }

// Health is what decides whether a GPU may be placed on, and the counters
// behind it.
type Health struct {
	Healthy bool
	// Reason says why not when unhealthy: "XID 79: GPU has fallen off the
	// bus", "lost (ERROR_GPU_IS_LOST)", "double-bit ECC error".
	Reason string
	// Lost is true once NVML reported the GPU gone (ERROR_GPU_IS_LOST or
	// no handle); it is no longer sampled.
	Lost         bool
	ECC          ECC
	RetiredPages RetiredPages
	RemappedRows RemappedRows
	Throttle     Throttle
	// XIDs are the latest XID events (oldest first, at most MaxXIDs).
	XIDs []XID
	// XIDCounts counts every XID event seen since New, by code.
	XIDCounts map[uint64]uint64
}

// MaxXIDs is how many XID events a Device keeps.
const MaxXIDs = 8

// ECC counts memory errors; Supported is false when ECC is off or the GPU
// has none.
type ECC struct {
	Supported bool
	// Volatile counts since the driver loaded; Aggregate over the GPU's life.
	VolatileCorrected, VolatileUncorrected   uint64
	AggregateCorrected, AggregateUncorrected uint64
}

// RetiredPages are pages the driver blacklisted (pre-Ampere GPUs).
type RetiredPages struct {
	Supported            bool
	SingleBit, DoubleBit int
	// Pending is true when a page waits to be retired at the next reboot.
	Pending bool
}

// RemappedRows are memory rows remapped to spares (Ampere and later).
type RemappedRows struct {
	Supported                  bool
	Correctable, Uncorrectable int
	// Pending needs a GPU reset; Failed means remapping failed and the GPU
	// should be replaced.
	Pending, Failed bool
}

// Throttle is NVML's clocks event (throttle) reason bitmask and its names.
type Throttle struct {
	Supported bool
	Mask      uint64
	Reasons   []string
}

// XID is one Xid event from the driver.
type XID struct {
	Code  uint64
	Time  time.Time
	Fatal bool
}

// HealthEvent is published on Manager.Health when a GPU becomes unhealthy.
type HealthEvent struct {
	UUID    string
	Index   int
	Healthy bool
	Reason  string
	// XID is the Xid code that caused it, 0 otherwise.
	XID  uint64
	Time time.Time
}

// clone deep-copies a snapshot so that callers never share slices or maps
// with the Manager.
func (s Snapshot) clone() Snapshot {
	out := s
	out.Devices = make([]Device, len(s.Devices))
	for i, d := range s.Devices {
		d.CDINames = slices.Clone(d.CDINames)
		d.MIG.Devices = slices.Clone(d.MIG.Devices)
		for j := range d.MIG.Devices {
			d.MIG.Devices[j].CDINames = slices.Clone(d.MIG.Devices[j].CDINames)
		}
		d.Telemetry.Missing = slices.Clone(d.Telemetry.Missing)
		d.Health.Throttle.Reasons = slices.Clone(d.Health.Throttle.Reasons)
		d.Health.XIDs = slices.Clone(d.Health.XIDs)
		d.Health.XIDCounts = maps.Clone(d.Health.XIDCounts)
		out.Devices[i] = d
	}
	return out
}
