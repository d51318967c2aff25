//go:build cgo

package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// TestDoctorCDI: the cdi check is always there. Without GPUs it says none is
// needed; with GPUs it fails with nvidia-ctk's fix until a spec names every
// GPU, then names the spec file it found them in.
func TestDoctorCDI(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	cfg := &config.Daemon{GPU: config.GPUConfig{CDIDirs: []string{dir}}}

	none := &Daemon{cfg: cfg, gpus: gpu.New(gputest.New(0, gpus.A100_SXM4_40GB), log, gpu.Options{})}
	if c := none.checkCDI(); c.Result != api.CheckOK || !strings.Contains(c.Detail, "none needed: no GPUs") || c.Fix != "" {
		t.Errorf("cdi check without GPUs = %+v; want ok, none needed", c)
	}

	d := &Daemon{cfg: cfg, gpus: gpu.New(gputest.New(2, gpus.A100_SXM4_40GB), log, gpu.Options{})}
	c := d.checkCDI()
	if c.Result != api.CheckFail || !strings.Contains(c.Detail, "nvidia.com/gpu=0, nvidia.com/gpu=1") || c.Fix != gpu.CDIFix {
		t.Errorf("cdi check with 2 GPUs and no spec = %+v; want a failure naming both with nvidia-ctk's fix", c)
	}

	spec := "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n"
	for _, n := range []string{"0", "1", "all"} {
		spec += "- name: \"" + n + "\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n"
	}
	file := filepath.Join(dir, "nvidia.yaml")
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c = d.checkCDI()
	if c.Result != api.CheckOK || !strings.Contains(c.Detail, file+" (3 devices)") || !strings.Contains(c.Detail, "2 GPUs") {
		t.Errorf("cdi check with a spec = %+v; want ok naming %s", c, file)
	}
}
