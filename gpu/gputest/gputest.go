//go:build cgo

package gputest

import (
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Readings are what one mock GPU reports. The zero value is an idle,
// healthy GPU with ECC and row remapping supported and no errors.
type Readings struct {
	Util     nvml.Utilization
	TempC    uint32
	PowerMW  uint32
	MemUsed  uint64 // bytes
	Throttle uint64
	// ECC[t][c] is the count for error type t (0 corrected, 1 uncorrected)
	// and counter c (0 volatile, 1 aggregate).
	ECC            [2][2]uint64
	NoECC          bool // ERROR_NOT_SUPPORTED for ECC counters
	NoPower        bool // ERROR_NOT_SUPPORTED for power
	RetiredSBE     int
	RetiredDBE     int
	RetiredPending bool
	// RetiredPages is unsupported by default, as on Ampere and later.
	RetiredPagesSupported bool
	RemappedCorr          int
	RemappedUnc           int
	RemapPending          bool
	RemapFailed           bool
	// Lost makes every dynamic reading return ERROR_GPU_IS_LOST.
	Lost bool
}

// Server is a mock NVML server.
type Server struct {
	*server.Server
	Events *EventSet

	mu       sync.Mutex
	readings []Readings
	calls    []int // dynamic readings asked of each GPU
}

// New builds a server with n GPUs of cfg, driver 550.54.15 and CUDA 12.4.
func New(n int, cfg gpus.Config) *Server {
	s, err := server.New(
		server.WithGPUs(gpus.Multiple(n, cfg)...),
		server.WithDriverVersion("550.54.15"),
		server.WithNVMLVersion("12.550.54.15"),
		server.WithCUDADriverVersion(12040),
	)
	if err != nil {
		panic(err)
	}
	return Wrap(s)
}

// UUID is the fixed UUID Wrap gives GPU i.
func UUID(i int) string { return fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", 0xa100, i) }

// MIGUUID is the fixed UUID EnableMIG gives MIG device j of GPU i.
func MIGUUID(i, j int) string { return fmt.Sprintf("MIG-%08x-0000-4000-8000-%012x", i, j) }

// Wrap fixes the UUIDs and PCI bus ids of a go-nvml mock server (such as
// dgxa100.New()) and sets every function package gpu calls.
func Wrap(srv *server.Server) *Server {
	s := &Server{Server: srv, Events: NewEventSet()}
	s.readings = make([]Readings, len(srv.Devices))
	s.calls = make([]int, len(srv.Devices))
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return s.Events, nvml.SUCCESS }
	for i := range srv.Devices {
		s.setDevice(i)
	}
	return s
}

// Device is GPU i's mock, to override single functions.
func (s *Server) Device(i int) *server.Device { return s.Devices[i].(*server.Device) }

// Set changes GPU i's readings.
func (s *Server) Set(i int, f func(*Readings)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.readings[i])
}

// Calls is how many dynamic readings GPU i has answered.
func (s *Server) Calls(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[i]
}

// read returns GPU i's readings and whether it is lost, counting the call.
func (s *Server) read(i int) (Readings, nvml.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[i]++
	r := s.readings[i]
	if r.Lost {
		return r, nvml.ERROR_GPU_IS_LOST
	}
	return r, nvml.SUCCESS
}

func (s *Server) setDevice(i int) {
	d := s.Device(i)
	d.UUID = UUID(i)
	d.PciBusID = fmt.Sprintf("00000000:%02X:00.0", 0x07+i*0x08)
	total := d.Config.MemoryMB << 20
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId}
		for k, c := range d.PciBusID {
			p.BusId[k] = int8(c) //nolint:gosec // PciBusID is formatted above: ASCII hex and punctuation, all < 128
		}
		return p, nvml.SUCCESS
	}
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		r, ret := s.read(i)
		return nvml.Memory{Total: total, Used: r.MemUsed, Free: total - r.MemUsed}, ret
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		r, ret := s.read(i)
		return r.Util, ret
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		r, ret := s.read(i)
		return r.TempC, ret
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		r, ret := s.read(i)
		if ret == nvml.SUCCESS && r.NoPower {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		return r.PowerMW, ret
	}
	throttle := func() (uint64, nvml.Return) {
		r, ret := s.read(i)
		return r.Throttle, ret
	}
	d.GetCurrentClocksEventReasonsFunc = throttle
	d.GetCurrentClocksThrottleReasonsFunc = throttle
	d.GetTotalEccErrorsFunc = func(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
		r, ret := s.read(i)
		if ret == nvml.SUCCESS && r.NoECC {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		return r.ECC[t][c], ret
	}
	d.GetRetiredPagesFunc = func(cause nvml.PageRetirementCause) ([]uint64, nvml.Return) {
		r, ret := s.read(i)
		if ret == nvml.SUCCESS && !r.RetiredPagesSupported {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		n := r.RetiredSBE
		if cause == nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR {
			n = r.RetiredDBE
		}
		return make([]uint64, n), ret
	}
	d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
		r, ret := s.read(i)
		if r.RetiredPending {
			return nvml.FEATURE_ENABLED, ret
		}
		return nvml.FEATURE_DISABLED, ret
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		r, ret := s.read(i)
		return r.RemappedCorr, r.RemappedUnc, r.RemapPending, r.RemapFailed, ret
	}
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return nvml.EventTypeAll, nvml.SUCCESS }
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_NOT_FOUND }
}

// EnableMIG puts GPU i in MIG mode with n MIG devices, each a separate GPU
// instance with one compute instance and an eighth of the memory.
func (s *Server) EnableMIG(i, n int) {
	d := s.Device(i)
	if ret, _ := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		panic(fmt.Sprintf("gputest: enable MIG on GPU %d: %v", i, ret))
	}
	total := d.Config.MemoryMB << 20
	migs := make([]nvml.Device, n)
	for j := range migs {
		migs[j] = &mock.Device{
			GetUUIDFunc:              func() (string, nvml.Return) { return MIGUUID(i, j), nvml.SUCCESS },
			GetGpuInstanceIdFunc:     func() (int, nvml.Return) { return j + 1, nvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, nvml.Return) { return 0, nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: total / 8, Free: total / 8}, nvml.SUCCESS
			},
		}
	}
	d.GetMigDeviceHandleByIndexFunc = func(j int) (nvml.Device, nvml.Return) {
		if j < 0 || j >= n {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return migs[j], nvml.SUCCESS
	}
}

// EventSet is a mock EventSet whose Wait returns what Send queues, or
// ERROR_TIMEOUT after the timeout, as NVML's does.
type EventSet struct {
	mock.EventSet
	ch chan result

	mu    sync.Mutex
	freed int
}

type result struct {
	ev  nvml.EventData
	ret nvml.Return
}

// NewEventSet returns an EventSet with room for 64 queued events.
func NewEventSet() *EventSet {
	e := &EventSet{ch: make(chan result, 64)}
	e.WaitFunc = func(ms uint32) (nvml.EventData, nvml.Return) {
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case r := <-e.ch:
			return r.ev, r.ret
		case <-t.C:
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
	e.FreeFunc = func() nvml.Return {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.freed++
		return nvml.SUCCESS
	}
	return e
}

// XID queues an Xid critical error event on dev.
func (e *EventSet) XID(dev nvml.Device, code uint64) {
	e.ch <- result{ev: nvml.EventData{Device: dev, EventType: nvml.EventTypeXidCriticalError, EventData: code}, ret: nvml.SUCCESS}
}

// Fail makes one Wait return ret (ERROR_GPU_IS_LOST, say).
func (e *EventSet) Fail(ret nvml.Return) { e.ch <- result{ret: ret} }

// Freed is how many times Free was called.
func (e *EventSet) Freed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.freed
}
