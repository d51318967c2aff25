package daemon

import (
	"slices"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/gpu"
)

// gpuReport turns a GPU snapshot, the persisted leases and the cordons
// (UUID -> reason) into the wire form of GET /v1/gpu. It is pure, so the
// golden test pins `kiln gpu -o json` without a daemon.
func gpuReport(s gpu.Snapshot, leases []gpu.Lease, cordoned map[string]string) api.GPUReport {
	r := api.GPUReport{
		Available:     s.Available,
		Reason:        s.Reason,
		DriverVersion: s.DriverVersion,
		CUDAVersion:   s.CUDAVersion,
		NVMLVersion:   s.NVMLVersion,
		SampledAt:     s.Sampled,
		GPUs:          []api.GPU{},
	}
	holder := map[string]string{}
	for _, l := range leases {
		holder[l.GPU] = l.Holder
	}
	for _, d := range s.Devices {
		g := api.GPU{
			Index:        d.Index,
			UUID:         d.UUID,
			Name:         d.Name,
			PCIBusID:     d.PCIBusID,
			CDIName:      d.CDIName(),
			CDINames:     slices.Clone(d.CDINames),
			Healthy:      d.Health.Healthy,
			HealthReason: d.Health.Reason,
			Memory:       apiMemory(d.Memory),
		}
		if g.CDINames == nil {
			g.CDINames = []string{}
		}
		if h, ok := holder[d.UUID]; ok && d.UUID != "" {
			g.Lease = &api.GPULease{Holder: h}
		}
		if why, ok := cordoned[d.UUID]; ok && d.UUID != "" {
			g.Cordoned = why
			if why == "" {
				g.Cordoned = "cordoned"
			}
		}
		switch {
		case !d.Health.Healthy:
			g.State = api.GPUUnhealthy
		case g.Cordoned != "":
			g.State = api.GPUCordoned
		case g.Lease != nil:
			g.State = api.GPULeased
		case d.MIG.Enabled:
			g.State = api.GPUInMIG
		default:
			g.State = api.GPUFree
		}

		t := d.Telemetry
		if !d.Health.Lost && !t.Time.IsZero() {
			g.SampledAt = t.Time
			if t.Has("utilization") {
				g.Utilization = &api.GPUUtilization{GPU: t.UtilGPU, Memory: t.UtilMemory}
			}
			if t.Has("temperature") {
				g.TemperatureC = &t.TempC
			}
			if t.Has("power") {
				g.PowerWatts = &t.PowerW
			}
		}
		h := d.Health
		if h.ECC.Supported {
			g.ECC = &api.GPUECC{
				VolatileCorrected: h.ECC.VolatileCorrected, VolatileUncorrected: h.ECC.VolatileUncorrected,
				AggregateCorrected: h.ECC.AggregateCorrected, AggregateUncorrected: h.ECC.AggregateUncorrected,
			}
		}
		if h.RetiredPages.Supported {
			g.RetiredPages = &api.GPURetiredPages{SingleBit: h.RetiredPages.SingleBit,
				DoubleBit: h.RetiredPages.DoubleBit, Pending: h.RetiredPages.Pending}
		}
		if h.RemappedRows.Supported {
			g.RemappedRows = &api.GPURemappedRows{Correctable: h.RemappedRows.Correctable,
				Uncorrectable: h.RemappedRows.Uncorrectable, Pending: h.RemappedRows.Pending, Failed: h.RemappedRows.Failed}
		}
		if h.Throttle.Supported {
			g.Throttle = &api.GPUThrottle{Mask: h.Throttle.Mask, Reasons: slices.Clone(h.Throttle.Reasons)}
			if g.Throttle.Reasons == nil {
				g.Throttle.Reasons = []string{}
			}
		}
		for _, x := range h.XIDs {
			g.XIDs = append(g.XIDs, api.GPUXID{Code: x.Code, Time: x.Time, Fatal: x.Fatal})
		}
		if d.MIG.Enabled || d.MIG.Pending {
			g.MIG = &api.GPUMIG{Enabled: d.MIG.Enabled, Pending: d.MIG.Pending, Devices: []api.GPUMIGDevice{}}
			for _, m := range d.MIG.Devices {
				md := api.GPUMIGDevice{Index: m.Index, UUID: m.UUID, GPUInstance: m.GPUInstance,
					ComputeInstance: m.ComputeInstance, Memory: apiMemory(m.Memory)}
				if len(m.CDINames) > 0 {
					md.CDIName = m.CDINames[0]
				}
				g.MIG.Devices = append(g.MIG.Devices, md)
			}
		}
		r.GPUs = append(r.GPUs, g)
	}
	return r
}

func apiMemory(m gpu.Memory) api.GPUMemory {
	return api.GPUMemory{Total: m.Total, Used: m.Used, Free: m.Free}
}
