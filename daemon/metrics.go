package daemon

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is kilnd's Prometheus registry: its own figures, the Go runtime's,
// and the GPU collector. A private registry keeps tests independent.
type metrics struct {
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pipeline_reloads_total",
			Help: "Pipeline set reloads by result (applied or rejected).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.reloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kiln_pipelines_loaded", Help: "Pipelines in the running set.",
		}, func() float64 { return float64(len(d.pipelines.Load().specs)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kiln_events_total", Help: "Events in the audit chain (the head sequence number).",
		}, func() float64 { seq, _ := d.store.Head(); return float64(seq) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kiln_build_info", Help: "Always 1; labels say which kilnd runs.",
			ConstLabels: prometheus.Labels{"version": d.build.Version, "commit": d.build.Commit},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kiln_store_open_read_tx", Help: "Read transactions open on kiln.db now (a steady rise is a leak).",
		}, func() float64 { return float64(d.store.OpenReadTx()) }),
		d.gpus.Collector(),
		newMonitorCollector(d),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
