package gpu

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names follow dcgm-exporter's default counters (DCGM field names
// and units: framebuffer in MiB, power in W, temperature in C) so existing
// Grafana dashboards work unchanged; kiln's own are prefixed kiln_gpu_.
var (
	gpuLabels = []string{"gpu", "UUID", "modelName"}

	descUtil       = prometheus.NewDesc("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", gpuLabels, nil)
	descMemUtil    = prometheus.NewDesc("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", gpuLabels, nil)
	descFBUsed     = prometheus.NewDesc("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", gpuLabels, nil)
	descFBFree     = prometheus.NewDesc("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", gpuLabels, nil)
	descTemp       = prometheus.NewDesc("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", gpuLabels, nil)
	descPower      = prometheus.NewDesc("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", gpuLabels, nil)
	descXID        = prometheus.NewDesc("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", gpuLabels, nil)
	descThrottle   = prometheus.NewDesc("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask).", gpuLabels, nil)
	descSBEVol     = prometheus.NewDesc("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.", gpuLabels, nil)
	descDBEVol     = prometheus.NewDesc("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", gpuLabels, nil)
	descSBEAgg     = prometheus.NewDesc("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors.", gpuLabels, nil)
	descDBEAgg     = prometheus.NewDesc("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors.", gpuLabels, nil)
	descRetiredSBE = prometheus.NewDesc("DCGM_FI_DEV_RETIRED_SBE", "Total number of retired pages due to single-bit errors.", gpuLabels, nil)
	descRetiredDBE = prometheus.NewDesc("DCGM_FI_DEV_RETIRED_DBE", "Total number of retired pages due to double-bit errors.", gpuLabels, nil)
	descRetiredPnd = prometheus.NewDesc("DCGM_FI_DEV_RETIRED_PENDING", "Total number of pages pending retirement.", gpuLabels, nil)
	descRowsUnc    = prometheus.NewDesc("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors.", gpuLabels, nil)
	descRowsCorr   = prometheus.NewDesc("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors.", gpuLabels, nil)
	descRowsFail   = prometheus.NewDesc("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed.", gpuLabels, nil)

	descHealthy   = prometheus.NewDesc("kiln_gpu_healthy", "1 when kiln may place work on the GPU, 0 after a fatal XID or when it is lost.", gpuLabels, nil)
	descXIDTotal  = prometheus.NewDesc("kiln_gpu_xid_errors_total", "XID events seen since kilnd started, by code.", append(gpuLabels[:3:3], "xid"), nil)
	descAvailable = prometheus.NewDesc("kiln_gpu_available", "1 when NVML found at least one GPU, 0 when kilnd runs CPU-only.", nil, nil)
)

// collector serves the latest snapshot; a scrape never calls NVML.
type collector struct {
	snapshot func() Snapshot
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(snapshot func() Snapshot) *collector { return &collector{snapshot: snapshot} }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descUtil, descMemUtil, descFBUsed, descFBFree, descTemp, descPower, descXID, descThrottle,
		descSBEVol, descDBEVol, descSBEAgg, descDBEAgg, descRetiredSBE, descRetiredDBE, descRetiredPnd,
		descRowsUnc, descRowsCorr, descRowsFail, descHealthy, descXIDTotal, descAvailable,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	ch <- prometheus.MustNewConstMetric(descAvailable, prometheus.GaugeValue, b2f(s.Available))
	const mib = 1 << 20
	for _, d := range s.Devices {
		labels := []string{strconv.Itoa(d.Index), d.UUID, d.Name}
		gauge := func(desc *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
		}
		counter := func(desc *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
		}
		gauge(descHealthy, b2f(d.Health.Healthy))
		var last uint64
		if n := len(d.Health.XIDs); n > 0 {
			last = d.Health.XIDs[n-1].Code
		}
		gauge(descXID, float64(last))
		for code, n := range d.Health.XIDCounts {
			ch <- prometheus.MustNewConstMetric(descXIDTotal, prometheus.CounterValue, float64(n),
				append(labels[:3:3], strconv.FormatUint(code, 10))...)
		}
		if d.Health.Lost || d.Telemetry.Time.IsZero() {
			continue // a lost GPU's last reading is stale; show none
		}
		gauge(descFBUsed, float64(d.Memory.Used/mib))
		gauge(descFBFree, float64(d.Memory.Free/mib))
		t := d.Telemetry
		if t.Has("utilization") {
			gauge(descUtil, float64(t.UtilGPU))
			gauge(descMemUtil, float64(t.UtilMemory))
		}
		if t.Has("temperature") {
			gauge(descTemp, float64(t.TempC))
		}
		if t.Has("power") {
			gauge(descPower, t.PowerW)
		}
		h := d.Health
		if h.Throttle.Supported {
			gauge(descThrottle, float64(h.Throttle.Mask))
		}
		if h.ECC.Supported {
			counter(descSBEVol, float64(h.ECC.VolatileCorrected))
			counter(descDBEVol, float64(h.ECC.VolatileUncorrected))
			counter(descSBEAgg, float64(h.ECC.AggregateCorrected))
			counter(descDBEAgg, float64(h.ECC.AggregateUncorrected))
		}
		if h.RetiredPages.Supported {
			counter(descRetiredSBE, float64(h.RetiredPages.SingleBit))
			counter(descRetiredDBE, float64(h.RetiredPages.DoubleBit))
			gauge(descRetiredPnd, b2f(h.RetiredPages.Pending))
		}
		if h.RemappedRows.Supported {
			counter(descRowsUnc, float64(h.RemappedRows.Uncorrectable))
			counter(descRowsCorr, float64(h.RemappedRows.Correctable))
			gauge(descRowsFail, b2f(h.RemappedRows.Failed))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
