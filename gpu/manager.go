package gpu

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultSampleInterval is used when Options.SampleInterval is zero.
const DefaultSampleInterval = 10 * time.Second

// Options configure a Manager.
type Options struct {
	// SampleInterval is how often telemetry and health counters are read.
	SampleInterval time.Duration
	// CDIDirs are where Manager.CheckCDI looks for specs (DefaultCDIDirs
	// when empty).
	CDIDirs []string
}

// Manager is the box's GPU inventory. Its methods are safe for concurrent
// use. The zero value is not usable; build one with Open or New.
type Manager struct {
	log *slog.Logger
	opt Options
	now func() time.Time

	mu     sync.Mutex
	snap   Snapshot
	health chan HealthEvent

	// nv is the NVML side; an empty struct without cgo.
	nv nvmlState
}

// newManager builds the part shared by the null and the NVML manager.
func newManager(log *slog.Logger, opt Options) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.SampleInterval <= 0 {
		opt.SampleInterval = DefaultSampleInterval
	}
	return &Manager{
		log:    log.With("component", "gpu"),
		opt:    opt,
		now:    time.Now,
		health: make(chan HealthEvent),
		snap:   Snapshot{Reason: ReasonNoDriver},
	}
}

// Available is false for the null inventory (no driver, NVML failed, no
// GPU, or a build without cgo).
func (m *Manager) Available() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap.Available
}

// Reason says why the inventory is not available, "" when it is.
func (m *Manager) Reason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap.Reason
}

// Snapshot returns a deep copy of the inventory, health and latest sample.
func (m *Manager) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap.clone()
}

// Health delivers one event per GPU that becomes unhealthy. The channel is
// never closed; for the null inventory it never delivers.
func (m *Manager) Health() <-chan HealthEvent { return m.health }

// Collector exports the latest sample as Prometheus metrics.
func (m *Manager) Collector() prometheus.Collector { return newCollector(m.Snapshot) }

// CheckCDI is CheckCDI over the current snapshot and Options.CDIDirs.
func (m *Manager) CheckCDI() ([]string, error) { return CheckCDI(m.Snapshot(), m.opt.CDIDirs) }

// markUnhealthyLocked records that device i is unhealthy and publishes the
// transition. It publishes at most once per device: the channel holds one
// slot per device, so the send never blocks (see the package doc).
func (m *Manager) markUnhealthyLocked(i int, reason string, xid uint64) {
	d := &m.snap.Devices[i]
	if !d.Health.Healthy {
		return
	}
	d.Health.Healthy = false
	d.Health.Reason = reason
	ev := HealthEvent{UUID: d.UUID, Index: d.Index, Reason: reason, XID: xid, Time: m.now()}
	m.log.Warn("GPU unhealthy", "gpu", d.Index, "GPU_UUID", d.UUID, "reason", reason)
	select {
	case m.health <- ev:
	default:
		// Unreachable while the invariant holds; never block the watcher.
		m.log.Error("GPU health event dropped", "gpu", d.Index, "GPU_UUID", d.UUID)
	}
}

// recordXIDLocked keeps an Xid in device i's history and counts it.
func (m *Manager) recordXIDLocked(i int, code uint64, at time.Time) {
	h := &m.snap.Devices[i].Health
	x := XID{Code: code, Time: at, Fatal: FatalXID(code)}
	h.XIDs = append(h.XIDs, x)
	if len(h.XIDs) > MaxXIDs {
		h.XIDs = append(h.XIDs[:0:0], h.XIDs[len(h.XIDs)-MaxXIDs:]...)
	}
	if h.XIDCounts == nil {
		h.XIDCounts = map[uint64]uint64{}
	}
	h.XIDCounts[code]++
}
