//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// defaultEventWait bounds one EventSetWait call, and so how long the XID
// watcher takes to notice that its context ended: the C call cannot be
// interrupted.
const defaultEventWait = 500 * time.Millisecond

// errorBackoff spaces EventSetWait calls after an error other than a
// timeout, so a GPU stuck in an error state does not spin the watcher.
const errorBackoff = time.Second

// watchedEvents are the NVML events that can make a GPU unhealthy.
const watchedEvents = uint64(nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeGpuUnavailableError)

// nvmlState is the NVML side of a Manager.
type nvmlState struct {
	lib nvml.Interface
	// devs parallels snap.Devices; nil where the handle could not be had.
	devs []nvml.Device
	// skip parallels devs: readings learnt to be unsupported, and lost GPUs.
	skip []skipSet
	// Optional symbols that older drivers lack (see the package doc).
	hasEventReasons, hasRemappedRows, hasMIG bool

	eventWait time.Duration

	// sampleMu serialises sampling: the sampler and the watcher's probe
	// after an error both sample.
	sampleMu sync.Mutex

	startMu   sync.Mutex
	started   bool
	closed    bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// skipSet names what not to ask a GPU again.
type skipSet struct {
	lost                                                bool
	util, temp, power, throttle, ecc, retired, remapped bool
}

// Open builds the Manager on the system's NVML library. Without a driver it
// returns the null inventory; it never fails.
func Open(log *slog.Logger, opt Options) *Manager {
	return New(nvml.New(), log, opt)
}

// New reads the inventory and one telemetry sample through lib. When lib
// cannot be loaded (ERROR_LIBRARY_NOT_FOUND), fails to initialise, or finds
// no GPU, New returns the null inventory, whose Reason says why.
func New(lib nvml.Interface, log *slog.Logger, opt Options) *Manager {
	m := newManager(log, opt)
	m.nv.eventWait = defaultEventWait

	ret := lib.Init()
	switch {
	case ret == nvml.ERROR_LIBRARY_NOT_FOUND:
		m.log.Info("no NVIDIA driver, running CPU-only")
		return m
	case ret != nvml.SUCCESS:
		m.snap.Reason = fmt.Sprintf("%s (nvml init: %v)", ReasonNoDriver, ret)
		m.log.Warn("NVML init failed, running CPU-only", "err", ret)
		return m
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS || count == 0 {
		if ret != nvml.SUCCESS {
			m.snap.Reason = fmt.Sprintf("%s (nvml device count: %v)", ReasonNoDriver, ret)
		} else {
			m.snap.Reason = "NVIDIA driver but no GPU: CPU-only"
		}
		m.log.Warn("no usable GPU, running CPU-only", "reason", m.snap.Reason)
		if ret := lib.Shutdown(); ret != nvml.SUCCESS {
			m.log.Warn("NVML shutdown", "err", ret)
		}
		return m
	}

	m.nv.lib = lib
	if ext := lib.Extensions(); ext != nil {
		m.nv.hasEventReasons = ext.LookupSymbol("nvmlDeviceGetCurrentClocksEventReasons") == nil
		m.nv.hasRemappedRows = ext.LookupSymbol("nvmlDeviceGetRemappedRows") == nil
		m.nv.hasMIG = ext.LookupSymbol("nvmlDeviceGetMigMode") == nil
	}
	m.snap = Snapshot{Available: true}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		m.snap.DriverVersion = v
	}
	if v, ret := lib.SystemGetNVMLVersion(); ret == nvml.SUCCESS {
		m.snap.NVMLVersion = v
	}
	if v, ret := lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		m.snap.CUDAVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}

	m.nv.devs = make([]nvml.Device, count)
	m.nv.skip = make([]skipSet, count)
	m.snap.Devices = make([]Device, count)
	// The channel holds one event per GPU: each is published at most once.
	m.health = make(chan HealthEvent, count)
	for i := range count {
		m.snap.Devices[i] = m.readDevice(i)
	}
	m.sample()
	m.mu.Lock()
	for i, d := range m.snap.Devices {
		if !d.Health.Healthy {
			// Publish GPUs found unhealthy at start, so the daemon cordons
			// them; markUnhealthyLocked only publishes transitions.
			reason := d.Health.Reason
			m.snap.Devices[i].Health.Healthy = true
			m.markUnhealthyLocked(i, reason, 0)
		}
	}
	m.mu.Unlock()
	m.log.Info("GPUs found", "count", count, "driver", m.snap.DriverVersion, "cuda", m.snap.CUDAVersion)
	return m
}

// readDevice reads GPU i's static inventory. It runs before the Manager is
// shared, so it writes m.nv without locks.
func (m *Manager) readDevice(i int) Device {
	d := Device{Index: i, Health: Health{Healthy: true}}
	h, ret := m.nv.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		d.Health.Healthy = false
		d.Health.Reason = lostReason(ret)
		d.Health.Lost = true
		d.CDINames = gpuCDINames(d)
		m.nv.skip[i].lost = true
		m.log.Warn("GPU handle", "gpu", i, "err", ret)
		return d
	}
	m.nv.devs[i] = h
	lost := func(ret nvml.Return) bool {
		if ret == nvml.ERROR_GPU_IS_LOST {
			d.Health.Healthy = false
			d.Health.Reason = lostReason(ret)
			d.Health.Lost = true
			m.nv.skip[i].lost = true
			return true
		}
		return false
	}
	if v, ret := h.GetUUID(); ret == nvml.SUCCESS {
		d.UUID = v
	} else if lost(ret) {
		d.CDINames = gpuCDINames(d)
		return d
	}
	if v, ret := h.GetName(); ret == nvml.SUCCESS {
		d.Name = v
	}
	if v, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.PCIBusID = cString(v.BusId[:])
	}
	if v, ret := h.GetMinorNumber(); ret == nvml.SUCCESS {
		d.Minor = v
	} else {
		d.Minor = i
	}
	if m.nv.hasMIG {
		d.MIG = m.readMIG(h, i)
	}
	d.CDINames = gpuCDINames(d)
	return d
}

// readMIG reads a GPU's MIG mode and devices. The layout is read once:
// changing it needs a kilnd restart, as it needs the GPU idle anyway.
func (m *Manager) readMIG(h nvml.Device, gpu int) MIG {
	cur, pending, ret := h.GetMigMode()
	if ret != nvml.SUCCESS {
		return MIG{} // pre-Ampere: ERROR_NOT_SUPPORTED
	}
	mig := MIG{Enabled: cur == nvml.DEVICE_MIG_ENABLE}
	mig.Pending = pending != cur
	if !mig.Enabled {
		return mig
	}
	n, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		m.log.Warn("MIG device count", "gpu", gpu, "err", ret)
		return mig
	}
	for j := range n {
		md, ret := h.GetMigDeviceHandleByIndex(j)
		if ret != nvml.SUCCESS {
			continue // ERROR_NOT_FOUND: no MIG device in that slot
		}
		dev := MIGDevice{Index: j}
		if v, ret := md.GetUUID(); ret == nvml.SUCCESS {
			dev.UUID = v
		}
		if v, ret := md.GetGpuInstanceId(); ret == nvml.SUCCESS {
			dev.GPUInstance = v
		}
		if v, ret := md.GetComputeInstanceId(); ret == nvml.SUCCESS {
			dev.ComputeInstance = v
		}
		if v, ret := md.GetMemoryInfo(); ret == nvml.SUCCESS {
			dev.Memory = Memory{Total: v.Total, Used: v.Used, Free: v.Free}
		}
		dev.CDINames = migCDINames(gpu, dev)
		mig.Devices = append(mig.Devices, dev)
	}
	return mig
}

func lostReason(ret nvml.Return) string {
	if ret == nvml.ERROR_GPU_IS_LOST {
		return "lost (ERROR_GPU_IS_LOST)"
	}
	return fmt.Sprintf("unreadable (%v)", ret)
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c)) //nolint:gosec // reinterprets the C char's bits: a negative int8 is a byte >= 0x80 of UTF-8
	}
	return string(s)
}

// reading is one device's sample, taken without the Manager's lock.
type reading struct {
	mem   Memory
	memOK bool
	tel   Telemetry
	ecc   ECC
	pages RetiredPages
	rows  RemappedRows
	thr   Throttle
	lost  bool
}

// sample reads every GPU once and stores the readings.
func (m *Manager) sample() {
	m.nv.sampleMu.Lock()
	defer m.nv.sampleMu.Unlock()
	rs := make([]*reading, len(m.nv.devs))
	for i, h := range m.nv.devs {
		if h == nil || m.nv.skip[i].lost {
			continue
		}
		rs[i] = m.readDynamic(i, h)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range rs {
		if r == nil {
			continue
		}
		d := &m.snap.Devices[i]
		if r.lost {
			d.Health.Lost = true
			m.markUnhealthyLocked(i, lostReason(nvml.ERROR_GPU_IS_LOST), 0)
			continue
		}
		if r.memOK {
			d.Memory = r.mem
		}
		r.tel.Time = now
		d.Telemetry = r.tel
		d.Health.ECC = r.ecc
		d.Health.RetiredPages = r.pages
		d.Health.RemappedRows = r.rows
		d.Health.Throttle = r.thr
	}
	m.snap.Sampled = now
}

// readDynamic is the per-interval NVML call set for one GPU. sampleMu is
// held, so it owns m.nv.skip[i].
func (m *Manager) readDynamic(i int, h nvml.Device) *reading {
	r := &reading{}
	sk := &m.nv.skip[i]
	// ok classifies a return: unsupported readings are never asked again,
	// a lost GPU stops sampling; other errors are transient.
	ok := func(ret nvml.Return, what string, skip *bool) bool {
		switch ret {
		case nvml.SUCCESS:
			return true
		case nvml.ERROR_NOT_SUPPORTED:
			if skip != nil {
				*skip = true
			}
		case nvml.ERROR_GPU_IS_LOST:
			r.lost = true
			sk.lost = true
		default:
			m.log.Debug("GPU reading failed", "gpu", i, "reading", what, "err", ret)
		}
		return false
	}

	if v, ret := h.GetMemoryInfo(); ok(ret, "memory", nil) {
		r.mem, r.memOK = Memory{Total: v.Total, Used: v.Used, Free: v.Free}, true
	}
	if r.lost {
		return r
	}
	if sk.util {
		r.tel.Missing = append(r.tel.Missing, "utilization")
	} else if v, ret := h.GetUtilizationRates(); ok(ret, "utilization", &sk.util) {
		r.tel.UtilGPU, r.tel.UtilMemory = v.Gpu, v.Memory
	} else {
		r.tel.Missing = append(r.tel.Missing, "utilization")
	}
	if sk.temp {
		r.tel.Missing = append(r.tel.Missing, "temperature")
	} else if v, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); ok(ret, "temperature", &sk.temp) {
		r.tel.TempC = v
	} else {
		r.tel.Missing = append(r.tel.Missing, "temperature")
	}
	if sk.power {
		r.tel.Missing = append(r.tel.Missing, "power")
	} else if v, ret := h.GetPowerUsage(); ok(ret, "power", &sk.power) {
		r.tel.PowerW = float64(v) / 1000 // milliwatts
	} else {
		r.tel.Missing = append(r.tel.Missing, "power")
	}
	if !sk.throttle {
		var mask uint64
		var ret nvml.Return
		if m.nv.hasEventReasons {
			mask, ret = h.GetCurrentClocksEventReasons()
		} else {
			mask, ret = h.GetCurrentClocksThrottleReasons()
		}
		if ok(ret, "throttle", &sk.throttle) {
			r.thr = Throttle{Supported: true, Mask: mask, Reasons: ThrottleReasons(mask)}
		}
	}
	if !sk.ecc {
		r.ecc = m.readECC(h, func(ret nvml.Return) bool { return ok(ret, "ecc", &sk.ecc) })
	}
	if !sk.retired {
		sbe, ret := h.GetRetiredPages(nvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
		if ok(ret, "retired pages", &sk.retired) {
			dbe, ret1 := h.GetRetiredPages(nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
			pending, ret2 := h.GetRetiredPagesPendingStatus()
			if ok(ret1, "retired pages", &sk.retired) && ok(ret2, "retired pages", &sk.retired) {
				r.pages = RetiredPages{Supported: true, SingleBit: len(sbe), DoubleBit: len(dbe), Pending: pending == nvml.FEATURE_ENABLED}
			}
		}
	}
	if m.nv.hasRemappedRows && !sk.remapped {
		corr, unc, pending, failed, ret := h.GetRemappedRows()
		if ok(ret, "remapped rows", &sk.remapped) {
			r.rows = RemappedRows{Supported: true, Correctable: corr, Uncorrectable: unc, Pending: pending, Failed: failed}
		}
	}
	return r
}

func (m *Manager) readECC(h nvml.Device, ok func(nvml.Return) bool) ECC {
	var e ECC
	read := func(t nvml.MemoryErrorType, c nvml.EccCounterType, into *uint64) bool {
		v, ret := h.GetTotalEccErrors(t, c)
		if !ok(ret) {
			return false
		}
		*into = v
		return true
	}
	if read(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC, &e.VolatileCorrected) &&
		read(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC, &e.VolatileUncorrected) &&
		read(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.AGGREGATE_ECC, &e.AggregateCorrected) &&
		read(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC, &e.AggregateUncorrected) {
		e.Supported = true
		return e
	}
	return ECC{}
}

// Start runs the XID watcher and the telemetry sampler until ctx ends or
// Close is called. It does nothing for the null inventory.
func (m *Manager) Start(ctx context.Context) error {
	m.nv.startMu.Lock()
	defer m.nv.startMu.Unlock()
	switch {
	case m.nv.closed:
		return errors.New("gpu: Start after Close")
	case m.nv.started:
		return errors.New("gpu: already started")
	case m.nv.lib == nil:
		return nil
	}
	m.nv.started = true
	ctx, m.nv.cancel = context.WithCancel(ctx)
	if set := m.registerEvents(); set != nil {
		m.nv.wg.Add(1)
		go m.watchXIDs(ctx, set)
	}
	m.nv.wg.Add(1)
	go m.sampleLoop(ctx)
	return nil
}

// Close stops Start's goroutines, waits for them, and shuts NVML down. It
// is safe to call more than once and without Start.
func (m *Manager) Close() error {
	m.nv.closeOnce.Do(func() {
		m.nv.startMu.Lock()
		m.nv.closed = true
		if m.nv.cancel != nil {
			m.nv.cancel()
		}
		m.nv.startMu.Unlock()
		m.nv.wg.Wait()
		if m.nv.lib == nil {
			return
		}
		if ret := m.nv.lib.Shutdown(); ret != nvml.SUCCESS {
			m.nv.closeErr = fmt.Errorf("nvml shutdown: %w", ret)
		}
	})
	return m.nv.closeErr
}

func (m *Manager) sampleLoop(ctx context.Context) {
	defer m.nv.wg.Done()
	t := time.NewTicker(m.opt.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample()
		}
	}
}

// registerEvents creates the EventSet and registers every reachable GPU
// for the events it supports. It returns nil when no GPU could be
// registered; health then rests on sampling alone.
func (m *Manager) registerEvents() nvml.EventSet {
	set, ret := m.nv.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		m.log.Warn("XID events unavailable", "err", ret)
		return nil
	}
	registered := 0
	for i, h := range m.nv.devs {
		if h == nil || m.nv.skip[i].lost {
			continue
		}
		supported, ret := h.GetSupportedEventTypes()
		if ret != nvml.SUCCESS {
			m.log.Warn("XID events unsupported", "gpu", i, "err", ret)
			continue
		}
		if ret := h.RegisterEvents(watchedEvents&supported, set); ret != nvml.SUCCESS {
			m.log.Warn("XID events registration", "gpu", i, "err", ret)
			continue
		}
		registered++
	}
	if registered == 0 {
		if ret := set.Free(); ret != nvml.SUCCESS {
			m.log.Warn("free event set", "err", ret)
		}
		return nil
	}
	return set
}

// watchXIDs waits on set until ctx ends, then frees it; freeing here, not
// in Close, guarantees no Wait is in flight.
func (m *Manager) watchXIDs(ctx context.Context, set nvml.EventSet) {
	defer m.nv.wg.Done()
	defer func() {
		if ret := set.Free(); ret != nvml.SUCCESS {
			m.log.Warn("free event set", "err", ret)
		}
	}()
	wait := uint32(m.nv.eventWait.Milliseconds()) //nolint:gosec // eventWait is defaultEventWait (500ms) or a test's shorter value
	for ctx.Err() == nil {
		e, ret := set.Wait(wait)
		switch ret {
		case nvml.SUCCESS:
			m.handleEvent(e)
		case nvml.ERROR_TIMEOUT:
		default:
			// ERROR_GPU_IS_LOST names no GPU: sampling finds which one.
			m.log.Warn("XID event wait", "err", ret)
			if ret == nvml.ERROR_GPU_IS_LOST {
				m.sample()
			}
			select {
			case <-ctx.Done():
			case <-time.After(errorBackoff):
			}
		}
	}
}

// handleEvent applies one NVML event to the GPU it names.
func (m *Manager) handleEvent(e nvml.EventData) {
	i := m.deviceOf(e.Device)
	if i < 0 {
		m.log.Warn("event for an unknown GPU", "type", e.EventType, "data", e.EventData)
		return
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case e.EventType&nvml.EventTypeXidCriticalError != 0:
		code := e.EventData
		m.recordXIDLocked(i, code, now)
		m.log.Warn("XID", "gpu", i, "GPU_UUID", m.snap.Devices[i].UUID, "xid", code, "fatal", FatalXID(code))
		if FatalXID(code) {
			m.markUnhealthyLocked(i, xidReason(code), code)
		}
	case e.EventType&nvml.EventTypeDoubleBitEccError != 0:
		m.markUnhealthyLocked(i, "double-bit ECC error", 0)
	case e.EventType&nvml.EventTypeGpuUnavailableError != 0:
		m.markUnhealthyLocked(i, "GPU unavailable", 0)
	}
}

// deviceOf finds the index of an event's GPU: by UUID as NVIDIA's device
// plugin does, else by handle (a lost GPU may not answer GetUUID).
func (m *Manager) deviceOf(h nvml.Device) int {
	if h == nil {
		return -1
	}
	if uuid, ret := h.GetUUID(); ret == nvml.SUCCESS {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, d := range m.snap.Devices {
			if d.UUID == uuid {
				return i
			}
			// An event on a MIG device counts against its GPU.
			for _, mig := range d.MIG.Devices {
				if mig.UUID == uuid {
					return i
				}
			}
		}
		return -1
	}
	for i, d := range m.nv.devs {
		if d == h {
			return i
		}
	}
	return -1
}
