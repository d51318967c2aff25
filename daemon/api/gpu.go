package api

import "time"

// GPU states, from the most to the least binding.
const (
	GPUUnhealthy = "unhealthy" // a fatal XID, a double-bit ECC error, or lost
	GPUCordoned  = "cordoned"  // kept from placement by the daemon or a person
	GPULeased    = "leased"    // held by a run
	GPUInMIG     = "mig"       // in MIG mode: not placed as a whole GPU
	GPUFree      = "free"
)

// GPUReport is GET /v1/gpu, the JSON of `kiln gpu -o json`. Sizes are in
// bytes, times in RFC 3339.
type GPUReport struct {
	// Available is false when kilnd runs CPU-only; Reason then says why
	// ("no NVIDIA driver: CPU-only").
	Available     bool      `json:"available"`
	Reason        string    `json:"reason,omitempty"`
	DriverVersion string    `json:"driver_version,omitempty"`
	CUDAVersion   string    `json:"cuda_version,omitempty"`
	NVMLVersion   string    `json:"nvml_version,omitempty"`
	SampledAt     time.Time `json:"sampled_at,omitzero"`
	// GPUs is always an array, empty when CPU-only.
	GPUs []GPU `json:"gpus"`
}

// GPU is one physical GPU.
type GPU struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	Name     string `json:"name"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
	// CDIName is the CDI device the runtime injects; CDINames all the names
	// nvidia-ctk generates for it.
	CDIName  string   `json:"cdi_name"`
	CDINames []string `json:"cdi_names"`
	// State is one of the GPU* constants.
	State        string    `json:"state"`
	Healthy      bool      `json:"healthy"`
	HealthReason string    `json:"health_reason,omitempty"`
	Lease        *GPULease `json:"lease,omitempty"`
	// Cordoned is set when cordoned: the reason, or "cordoned".
	Cordoned string `json:"cordoned,omitempty"`

	Memory GPUMemory `json:"memory"`
	// Readings the GPU does not support are absent.
	Utilization  *GPUUtilization  `json:"utilization,omitempty"`
	TemperatureC *uint32          `json:"temperature_c,omitempty"`
	PowerWatts   *float64         `json:"power_watts,omitempty"`
	SampledAt    time.Time        `json:"sampled_at,omitzero"`
	ECC          *GPUECC          `json:"ecc,omitempty"`
	RetiredPages *GPURetiredPages `json:"retired_pages,omitempty"`
	RemappedRows *GPURemappedRows `json:"remapped_rows,omitempty"`
	Throttle     *GPUThrottle     `json:"throttle,omitempty"`
	// XIDs are the latest XID events, oldest first.
	XIDs []GPUXID `json:"xids,omitempty"`
	MIG  *GPUMIG  `json:"mig,omitempty"`
}

// GPULease is the run holding a GPU.
type GPULease struct {
	Holder string `json:"holder"`
}

// GPUMemory is framebuffer memory in bytes.
type GPUMemory struct {
	Total uint64 `json:"total"`
	Used  uint64 `json:"used"`
	Free  uint64 `json:"free"`
}

// GPUUtilization is in percent over NVML's last sample period.
type GPUUtilization struct {
	GPU    uint32 `json:"gpu"`
	Memory uint32 `json:"memory"`
}

// GPUECC counts memory errors: volatile since the driver loaded, aggregate
// over the GPU's life.
type GPUECC struct {
	VolatileCorrected    uint64 `json:"volatile_corrected"`
	VolatileUncorrected  uint64 `json:"volatile_uncorrected"`
	AggregateCorrected   uint64 `json:"aggregate_corrected"`
	AggregateUncorrected uint64 `json:"aggregate_uncorrected"`
}

// GPURetiredPages are blacklisted pages (GPUs before Ampere).
type GPURetiredPages struct {
	SingleBit int  `json:"single_bit"`
	DoubleBit int  `json:"double_bit"`
	Pending   bool `json:"pending"`
}

// GPURemappedRows are rows remapped to spares (Ampere and later).
type GPURemappedRows struct {
	Correctable   int  `json:"correctable"`
	Uncorrectable int  `json:"uncorrectable"`
	Pending       bool `json:"pending"`
	Failed        bool `json:"failed"`
}

// GPUThrottle is NVML's clock throttle reason bitmask and its names.
type GPUThrottle struct {
	Mask    uint64   `json:"mask"`
	Reasons []string `json:"reasons"`
}

// GPUXID is one XID event.
type GPUXID struct {
	Code  uint64    `json:"code"`
	Time  time.Time `json:"time"`
	Fatal bool      `json:"fatal"`
}

// GPUMIG is a GPU's MIG mode and devices.
type GPUMIG struct {
	Enabled bool           `json:"enabled"`
	Pending bool           `json:"pending,omitempty"`
	Devices []GPUMIGDevice `json:"devices"`
}

// GPUMIGDevice is one MIG device.
type GPUMIGDevice struct {
	Index           int       `json:"index"`
	UUID            string    `json:"uuid"`
	GPUInstance     int       `json:"gpu_instance"`
	ComputeInstance int       `json:"compute_instance"`
	Memory          GPUMemory `json:"memory"`
	CDIName         string    `json:"cdi_name"`
}
