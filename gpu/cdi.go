package gpu

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// CDIKind is the vendor/class nvidia-ctk generates GPU devices under.
const CDIKind = "nvidia.com/gpu"

// CDIFix is what to run when no CDI spec names the GPUs.
const CDIFix = "run: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"

// DefaultCDIDirs are where nvidia-ctk and the CDI cache look for specs.
var DefaultCDIDirs = []string{cdi.DefaultStaticDir, cdi.DefaultDynamicDir}

// cdiNames are the qualified names nvidia-ctk's default strategies ("index"
// and "uuid") give a GPU or a MIG device; index first.
func cdiNames(index, uuid string) []string {
	names := []string{CDIKind + "=" + index}
	if uuid != "" {
		names = append(names, CDIKind+"="+uuid)
	}
	return names
}

func gpuCDINames(d Device) []string { return cdiNames(strconv.Itoa(d.Index), d.UUID) }

func migCDINames(gpu int, m MIGDevice) []string {
	return cdiNames(strconv.Itoa(gpu)+":"+strconv.Itoa(m.Index), m.UUID)
}

// CDIError says which GPUs no CDI spec in dirs names, and how to fix it.
type CDIError struct {
	Dirs    []string
	Missing []string
	// SpecErrors are the spec files the CDI cache could not load, by path.
	SpecErrors map[string]error
}

func (e *CDIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no CDI spec in %s names %s", strings.Join(e.Dirs, ", "), strings.Join(e.Missing, ", "))
	paths := make([]string, 0, len(e.SpecErrors))
	for p := range e.SpecErrors {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(&b, " (%s unreadable: %v)", p, e.SpecErrors[p])
	}
	b.WriteString("; ")
	b.WriteString(CDIFix)
	return b.String()
}

// CheckCDI reports which GPUs of s no CDI spec in dirs (DefaultCDIDirs when
// empty) names. A GPU counts as named when the spec has either of its names
// (by index or by UUID), as nvidia-ctk may have been run with either
// strategy; missing lists the index name of each unnamed GPU, and err is a
// *CDIError carrying the fix. MIG devices are checked when their GPU is in
// MIG mode, since then the whole-GPU device is unusable; lost GPUs are
// not. A null inventory needs no spec: nil, nil.
//
// It reads the spec files each call; doctor calls it rarely.
func CheckCDI(s Snapshot, dirs []string) (missing []string, err error) {
	if !s.Available || len(s.Devices) == 0 {
		return nil, nil
	}
	if len(dirs) == 0 {
		dirs = DefaultCDIDirs
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("read CDI specs in %s: %w", strings.Join(dirs, ", "), err)
	}
	have := map[string]bool{}
	for _, name := range cache.ListDevices() {
		have[name] = true
	}
	named := func(names []string) bool {
		for _, n := range names {
			if have[n] {
				return true
			}
		}
		return false
	}
	for _, d := range s.Devices {
		if d.Health.Lost {
			continue // gone from the bus: no container can have it anyway
		}
		names := d.CDINames
		if len(names) == 0 {
			names = gpuCDINames(d)
		}
		if !d.MIG.Enabled {
			if !named(names) {
				missing = append(missing, names[0])
			}
			continue
		}
		for _, m := range d.MIG.Devices {
			mnames := m.CDINames
			if len(mnames) == 0 {
				mnames = migCDINames(d.Index, m)
			}
			if !named(mnames) {
				missing = append(missing, mnames[0])
			}
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	ce := &CDIError{Dirs: dirs, Missing: missing}
	for path, errs := range cache.GetErrors() {
		if ce.SpecErrors == nil {
			ce.SpecErrors = map[string]error{}
		}
		ce.SpecErrors[path] = errors.Join(errs...)
	}
	return missing, ce
}
