package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/gpu"
)

// doctor runs every check `kiln doctor` prints, each with a fix a person can
// follow on a box nobody else can log in to.
func (d *Daemon) doctor(ctx context.Context) []api.Check {
	checks := []api.Check{
		d.checkContainerd(ctx),
		d.checkStateDir(),
		d.checkDisk(),
		d.checkSocket(),
		d.checkNVML(),
	}
	checks = append(checks, d.checkCDI(), d.checkGroups())
	checks = append(checks, d.checkPipelines(), d.checkPipelineImages(ctx), d.checkStore(), d.checkForeign(ctx))
	return checks
}

// checkForeign lists containers in kiln's namespace that are not this
// installation's (DESIGN.md "Container identity"): kilnd never serves,
// evaluates through or removes them on its own.
func (d *Daemon) checkForeign(ctx context.Context) api.Check {
	c := api.Check{Name: "foreign-containers"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, foreign, err := d.classifyContainers(ctx)
	switch {
	case err != nil:
		c.Result, c.Detail = api.CheckWarn, "cannot list containers: "+firstLine(err.Error())
	case len(foreign) == 0:
		c.Result = api.CheckOK
		c.Detail = fmt.Sprintf("every container in namespace %q is this installation's (%s)", d.rt.Namespace(), d.store.InstallationID())
	default:
		c.Result = api.CheckWarn
		c.Detail = fmt.Sprintf("%d in namespace %q not of this installation (%s), left alone: %s",
			len(foreign), d.rt.Namespace(), d.store.InstallationID(), describeForeign(foreign))
		c.Fix = "kiln gc --foreign removes them (--dry-run lists them); first make sure no other kilnd on this containerd uses namespace " + d.rt.Namespace()
	}
	return c
}

func (d *Daemon) checkContainerd(ctx context.Context) api.Check {
	c := api.Check{Name: "containerd"}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	v, err := d.rt.Version(cctx)
	if err != nil {
		c.Result, c.Detail = api.CheckFail, fmt.Sprintf("cannot reach containerd at %s", d.rt.Address())
		c.Fix = "start it (systemctl start containerd) or set containerd.address in " + d.cfg.Paths.ConfigFile
		return c
	}
	c.Result, c.Detail = api.CheckOK, fmt.Sprintf("containerd %s at %s, namespace %q", v, d.rt.Address(), d.rt.Namespace())
	return c
}

func (d *Daemon) checkStateDir() api.Check {
	c := api.Check{Name: "state-dir"}
	if err := probeWritable(d.cfg.Paths.StateDir); err != nil {
		c.Result, c.Detail = api.CheckFail, err.Error()
		c.Fix = "make " + d.cfg.Paths.StateDir + " writable by kilnd (owner root, mode 0755)"
		return c
	}
	c.Result, c.Detail = api.CheckOK, d.cfg.Paths.StateDir+" is writable"
	return c
}

func (d *Daemon) checkDisk() api.Check {
	c := api.Check{Name: "disk"}
	free, total, err := d.store.DiskFree()
	if err != nil {
		c.Result, c.Detail = api.CheckFail, err.Error()
		return c
	}
	c.Detail = fmt.Sprintf("%s free of %s on %s", gpu.FormatBytes(free)+"B", gpu.FormatBytes(total)+"B", d.cfg.Paths.StateDir)
	if minFree := uint64(d.cfg.Disk.MinFree); free < minFree { //nolint:gosec // Validate rejects a negative disk.min_free
		c.Result = api.CheckWarn
		c.Detail += fmt.Sprintf(", below disk.min_free %s: ingest pauses", gpu.FormatBytes(minFree)+"B")
		c.Fix = "free space (kiln prunes by retention.models) or lower disk.min_free in " + d.cfg.Paths.ConfigFile
		return c
	}
	c.Result = api.CheckOK
	return c
}

func (d *Daemon) checkSocket() api.Check {
	c := api.Check{Name: "api-socket"}
	p := d.cfg.Paths.APISocket
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		// Socket activation may hand kilnd a socket at another path.
		c.Result, c.Detail = api.CheckWarn, fmt.Sprintf("%s: %v (socket-activated elsewhere?)", p, err)
		c.Fix = "check kilnd.socket's ListenStream= matches " + p
	case fi.Mode().Type() != os.ModeSocket:
		c.Result, c.Detail = api.CheckFail, p+" is not a socket"
	case fi.Mode().Perm() != 0o666:
		c.Result, c.Detail = api.CheckWarn, fmt.Sprintf("%s has mode %o; want 0666 (access is decided per request)", p, fi.Mode().Perm())
		c.Fix = "chmod 0666 " + p
	default:
		c.Result, c.Detail = api.CheckOK, p+" (mode 0666, access by peer credentials)"
	}
	return c
}

func (d *Daemon) checkNVML() api.Check {
	c := api.Check{Name: "nvml", Detail: d.gpus.Snapshot().Summary()}
	if !d.gpus.Available() {
		c.Result = api.CheckWarn
		c.Fix = "install the NVIDIA driver to train on GPUs; pipelines with gpus: 0 run on the CPU"
		return c
	}
	c.Result = api.CheckOK
	return c
}

// checkCDI says where containers get their GPUs from: the CDI spec files
// that name nvidia.com/gpu devices; on a box without GPUs, that none is
// needed (the README lists this check, so it is always printed).
func (d *Daemon) checkCDI() api.Check {
	c := api.Check{Name: "cdi"}
	snap := d.gpus.Snapshot()
	if !d.gpus.Available() || len(snap.Devices) == 0 {
		c.Result, c.Detail = api.CheckOK, "none needed: no GPUs, so containers get no "+gpu.CDIKind+" devices"
		return c
	}
	dirs := d.cfg.GPU.CDIDirs
	if len(dirs) == 0 {
		dirs = gpu.DefaultCDIDirs
	}
	_, err := gpu.CheckCDI(snap, dirs)
	var missing *gpu.CDIError
	switch {
	case errors.As(err, &missing):
		c.Result, c.Fix = api.CheckFail, gpu.CDIFix
		c.Detail = fmt.Sprintf("no CDI spec in %s names %s", strings.Join(missing.Dirs, ", "), strings.Join(missing.Missing, ", "))
		return c
	case err != nil:
		c.Result, c.Detail = api.CheckFail, err.Error()
		return c
	}
	// Which files: a stale spec left beside a fresh one is the usual
	// trouble after a driver upgrade, and it shows here as two files.
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		c.Result, c.Detail = api.CheckFail, fmt.Sprintf("read CDI specs in %s: %v", strings.Join(dirs, ", "), err)
		return c
	}
	perFile := map[string]int{}
	for _, name := range cache.ListDevices() {
		if dev := cache.GetDevice(name); dev != nil && strings.HasPrefix(name, gpu.CDIKind+"=") {
			perFile[dev.GetSpec().GetPath()]++
		}
	}
	var files []string
	for _, f := range slices.Sorted(maps.Keys(perFile)) {
		files = append(files, fmt.Sprintf("%s (%s)", f, plural(perFile[f], "device")))
	}
	c.Result = api.CheckOK
	c.Detail = fmt.Sprintf("every GPU (%s) has a %s device, from %s", plural(len(snap.Devices), "GPU"), gpu.CDIKind, strings.Join(files, ", "))
	return c
}

// plural says "1 pipeline", "2 pipelines": kilnd's own lines and the
// doctor's details read as kiln's do.
func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + one + "s"
}

func (d *Daemon) checkPipelines() api.Check {
	c := api.Check{Name: "pipelines"}
	n := len(d.pipelines.Load().specs)
	if r := d.lastReload.Load(); r != nil && !r.OK {
		c.Result, c.Detail = api.CheckFail, fmt.Sprintf("%d loaded; last reload rejected: %s", n, firstLine(r.Error))
		c.Fix = "fix the spec (kiln pipelines validate FILE), then kiln pipelines reload"
		return c
	}
	c.Result, c.Detail = api.CheckOK, fmt.Sprintf("%d loaded from %s", n, d.cfg.Paths.PipelinesDir)
	return c
}

// checkPipelineImages says which loaded pipelines lack their images.
func (d *Daemon) checkPipelineImages(ctx context.Context) api.Check {
	c := api.Check{Name: "images"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	set := d.pipelines.Load()
	var missing []string
	n := 0
	for _, name := range slices.Sorted(maps.Keys(set.specs)) {
		p := set.specs[name]
		for _, ref := range []string{p.Train.Image, p.Serve.Image} {
			n++
			if err := d.resolveImage(ctx, ref); err != nil {
				missing = append(missing, name+": "+ref)
			}
		}
	}
	if len(missing) > 0 {
		c.Result, c.Detail = api.CheckFail, "not in containerd (or containerd is down): "+strings.Join(missing, ", ")
		c.Fix = "kiln images import FILE (the image archives come with the offline bundle, or make images)"
		return c
	}
	c.Result, c.Detail = api.CheckOK, fmt.Sprintf("the %s the pipelines name are imported", plural(n, "image"))
	return c
}

func (d *Daemon) checkStore() api.Check {
	c := api.Check{Name: "store"}
	rep := d.store.LastReconcile()
	seq, head := d.store.Head()
	c.Detail = fmt.Sprintf("%s, %s, chain head %.12s", d.store.Path(), plural(int(seq), "event"), head)
	if n := len(rep.MissingBlobs); n > 0 {
		c.Result = api.CheckWarn
		c.Detail += fmt.Sprintf("; %s missing at start: %v", plural(n, "blob"), rep.MissingBlobs)
		c.Fix = "restore the blob folder from backup (it is the other half of `kiln backup`)"
		return c
	}
	c.Result = api.CheckOK
	return c
}
