// Package gpu owns what kilnd knows about the box's NVIDIA GPUs: the
// inventory (index, UUID, name, memory, MIG instances, driver and CUDA
// versions, CDI names), their health (ECC counters, retired pages, remapped
// rows, clock throttle reasons, XID events, a GPU lost from the bus), sampled
// telemetry (utilization, memory, temperature, power), Prometheus metrics in
// dcgm-exporter's names, GPU placement, and the check that a CDI spec names
// every GPU.
//
// It is a leaf: it imports nothing from kiln, never touches the store or
// containerd, and keeps no state that must survive a restart. The daemon
// persists leases and cordons, and hands them back to Place; health changes
// reach the daemon on the channel Manager.Health returns.
//
// # NVML
//
// NVML is injected (New takes an nvml.Interface), never a package global, as
// NVIDIA's device plugin does; Open is the composition root's entry and uses
// the real library. go-nvml needs cgo, so the NVML code is built only with
// cgo; without cgo, and on a machine without the driver
// (ERROR_LIBRARY_NOT_FOUND) or where NVML fails to initialise, the Manager is
// a null inventory: Available is false, Reason says "no NVIDIA driver:
// CPU-only", Snapshot is empty, Place explains, and nothing runs in the
// background.
//
// go-nvml dlopens libnvidia-ml.so.1 and calls symbols without checking that
// they exist, so a function newer than the installed driver would crash the
// process. The few functions that older drivers lack (MIG mode, remapped
// rows, clocks event reasons) are used only when
// ExtendedInterface.LookupSymbol finds them.
//
// # Lifetime
//
// New reads the inventory and one telemetry sample synchronously, so a
// Snapshot is complete as soon as New returns. Start runs two goroutines
// until its context ends or Close is called: the XID watcher (an NVML
// EventSet waited on with a short timeout, so it notices cancellation within
// that timeout even though the C call cannot be interrupted) and the
// telemetry sampler. Close stops both, waits for them, frees the EventSet and
// shuts NVML down exactly once.
//
// # Health
//
// A GPU becomes unhealthy on a fatal XID (see FatalXID), a double-bit ECC
// event, or when NVML reports it lost (ERROR_GPU_IS_LOST); it never becomes
// healthy again within one Manager, because recovery needs a GPU reset and a
// kilnd restart. Each GPU is therefore published on Health at most once,
// which is why the channel, buffered to the number of GPUs, can never block
// the watcher nor drop a transition. Unhealthy GPUs found while New reads the
// inventory are published too, so the daemon cordons them at start.
//
// # Cost when idle
//
// One set of NVML reads per GPU per SampleInterval; readings a GPU does not
// support (ERROR_NOT_SUPPORTED on first read) are never asked for again, and
// a lost GPU is no longer sampled. With no GPU nothing is started. Metrics are
// served from the last sample, so a Prometheus scrape never calls NVML.
package gpu
