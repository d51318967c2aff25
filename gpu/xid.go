package gpu

import "fmt"

// fatalXIDs are the Xid codes after which a GPU must not take new work
// until it is reset, from NVIDIA's Xid catalogue. NVIDIA's device plugin
// instead treats every Xid as fatal except a list of application errors
// (13, 31, 43, 45, 68, 109); kiln names the fatal ones, because on a
// single-box appliance a cordon on an application's own fault would take
// the only GPU away for nothing. Non-fatal Xids are still recorded and
// counted.
var fatalXIDs = map[uint64]string{
	48:  "double-bit ECC error",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remap recording event",
	64:  "ECC page retirement or row remap failure",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	95:  "uncontained ECC error",
	119: "GSP RPC timeout",
	120: "GSP error",
	140: "unrecovered ECC error",
}

// FatalXID reports whether an Xid code makes a GPU unhealthy.
func FatalXID(code uint64) bool {
	_, ok := fatalXIDs[code]
	return ok
}

// xidReason is the unhealthy reason for a fatal Xid.
func xidReason(code uint64) string {
	if what, ok := fatalXIDs[code]; ok {
		return fmt.Sprintf("XID %d: %s", code, what)
	}
	return fmt.Sprintf("XID %d", code)
}

// throttleNames names the bits of nvmlClocksEventReasons (formerly
// ClocksThrottleReasons). The values are fixed by nvml.h; they are repeated
// here so that this file builds without cgo.
var throttleNames = []struct {
	bit  uint64
	name string
}{
	{0x1, "gpu_idle"},
	{0x2, "applications_clocks_setting"},
	{0x4, "sw_power_cap"},
	{0x8, "hw_slowdown"},
	{0x10, "sync_boost"},
	{0x20, "sw_thermal_slowdown"},
	{0x40, "hw_thermal_slowdown"},
	{0x80, "hw_power_brake_slowdown"},
	{0x100, "display_clock_setting"},
}

// ThrottleReasons names the set bits of a throttle mask; unknown bits are
// shown in hex so nothing is hidden.
func ThrottleReasons(mask uint64) []string {
	var out []string
	rest := mask
	for _, t := range throttleNames {
		if mask&t.bit != 0 {
			out = append(out, t.name)
			rest &^= t.bit
		}
	}
	if rest != 0 {
		out = append(out, fmt.Sprintf("0x%x", rest))
	}
	return out
}
