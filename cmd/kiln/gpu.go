package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// printGPUTable prints `kiln gpu` for people: a summary line, one row per
// GPU like nvidia-smi's summary plus health, lease and cordon, then each
// GPU's UUID and CDI device with its MIG devices under it. CPU-only prints
// the daemon's reason alone.
func printGPUTable(w io.Writer, r api.GPUReport) error {
	if !r.Available {
		reason := r.Reason
		if reason == "" {
			reason = "no NVIDIA driver: CPU-only"
		}
		_, err := fmt.Fprintln(w, reason)
		return err
	}
	head := fmt.Sprintf("NVIDIA driver %s, CUDA %s, %s", orDash(r.DriverVersion), orDash(r.CUDAVersion), plural(len(r.GPUs), "GPU"))
	if !r.SampledAt.IsZero() {
		head += ", sampled " + r.SampledAt.Format(time.RFC3339)
	}
	if _, err := fmt.Fprintf(w, "%s\n\n", head); err != nil {
		return err
	}

	tw := table(w)
	fmt.Fprintln(tw, "GPU\tNAME\tMEMORY USED\tUTIL\tTEMP\tPOWER\tECC SBE/DBE\tTHROTTLE\tSTATE\tDETAIL")
	for _, g := range r.GPUs {
		util, temp, power := "-", "-", "-"
		if g.Utilization != nil {
			util = fmt.Sprintf("%d%%", g.Utilization.GPU)
		}
		if g.TemperatureC != nil {
			temp = fmt.Sprintf("%dC", *g.TemperatureC)
		}
		if g.PowerWatts != nil {
			power = strconv.FormatFloat(*g.PowerWatts, 'f', 0, 64) + "W"
		}
		ecc := "-"
		if g.ECC != nil {
			ecc = fmt.Sprintf("%d/%d", g.ECC.VolatileCorrected, g.ECC.VolatileUncorrected)
		}
		throttle := "-"
		if g.Throttle != nil && len(g.Throttle.Reasons) > 0 {
			throttle = strings.Join(g.Throttle.Reasons, ",")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s / %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, orDash(g.Name),
			gpuBytes(g.Memory.Used), gpuBytes(g.Memory.Total), util, temp, power, ecc, throttle, g.State, gpuDetail(g))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	tw = table(w)
	fmt.Fprintln(tw, "GPU\tUUID\tCDI DEVICE\tMEMORY")
	for _, g := range r.GPUs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", g.Index, orDash(g.UUID), orDash(g.CDIName), gpuBytes(g.Memory.Total))
		if g.MIG == nil {
			continue
		}
		for _, m := range g.MIG.Devices {
			fmt.Fprintf(tw, "%d:%d\t%s\t%s\t%s\n", g.Index, m.Index, orDash(m.UUID), orDash(m.CDIName), gpuBytes(m.Memory.Total))
		}
	}
	return tw.Flush()
}

// gpuDetail says why a GPU is in its state and anything an operator should
// act on: health, lease, cordon, memory repairs, the last XID, MIG.
func gpuDetail(g api.GPU) string {
	var parts []string
	if !g.Healthy && g.HealthReason != "" {
		parts = append(parts, g.HealthReason)
	}
	if g.Cordoned != "" && g.Cordoned != g.HealthReason {
		if g.Cordoned == "cordoned" {
			parts = append(parts, "cordoned")
		} else {
			parts = append(parts, "cordoned: "+g.Cordoned)
		}
	}
	if g.Lease != nil {
		parts = append(parts, "leased to "+g.Lease.Holder)
	}
	if rr := g.RemappedRows; rr != nil {
		switch {
		case rr.Failed:
			parts = append(parts, "row remapping failed: replace the GPU")
		case rr.Pending:
			parts = append(parts, "row remap pending: reset the GPU")
		}
	}
	if rp := g.RetiredPages; rp != nil && rp.Pending {
		parts = append(parts, "page retirement pending: reboot")
	}
	if n := len(g.XIDs); n > 0 && g.Healthy {
		parts = append(parts, fmt.Sprintf("last XID %d", g.XIDs[n-1].Code))
	}
	if g.MIG != nil {
		switch {
		case g.MIG.Enabled:
			parts = append(parts, plural(len(g.MIG.Devices), "MIG device"))
		case g.MIG.Pending:
			parts = append(parts, "MIG mode change pending: reset the GPU")
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// gpuBytes writes n in binary units, as pipeline specs write sizes ("40Gi").
func gpuBytes(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"Ki", "Mi", "Gi", "Ti"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return strconv.FormatFloat(float64(int64(v*10+0.5))/10, 'f', -1, 64) + unit
}
