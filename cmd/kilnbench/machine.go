package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine is what a reader needs to judge where figures were taken: the
// hardware, the kernel, the disk under the groups' scratch folders (the
// fsync figures measure it), the container runtime and the baselines'
// versions. A field that cannot be read says why instead of being empty.
type Machine struct {
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	MemoryGiB  float64 `json:"memory_gib"`
	OS         string  `json:"os"`
	Kernel     string  `json:"kernel"`
	Disk       string  `json:"disk"`
	Cgroup     string  `json:"cgroup"`
	Containerd string  `json:"containerd"`
	Runc       string  `json:"runc"`
	Go         string  `json:"go"`
	GPU        string  `json:"gpu"`
	// Baselines maps each baseline tool to its version ("not installed"
	// when it is missing: its figures then say "not measured").
	Baselines map[string]string `json:"baselines"`
}

// scratchDirs are where the groups keep their files (kiln roots, blob
// stores, databases) and where .ci/with-containerd keeps containerd's.
var scratchDirs = []string{"/var/tmp", os.TempDir()}

// thisMachine describes the machine kilnbench runs on.
func thisMachine(ctx context.Context) Machine {
	m := Machine{
		CPU:    cpuinfoField("model name"),
		Cores:  runtime.NumCPU(),
		OS:     osRelease(),
		Kernel: strings.TrimSpace(readOr("/proc/sys/kernel/osrelease")),
		Cgroup: cgroupMode(),
		Go:     runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
	}
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(meminfoField("MemTotal"), " kB"), 64); err == nil {
		m.MemoryGiB = float64(int(kb/(1<<20)*10+0.5)) / 10
	}
	// One line per filesystem, naming the scratch folders it holds.
	var disks []string
	dirsOf := map[string][]string{}
	for _, dir := range scratchDirs {
		d := diskOf(dir)
		if dirsOf[d] == nil {
			disks = append(disks, d)
		}
		dirsOf[d] = append(dirsOf[d], dir)
	}
	for i, d := range disks {
		disks[i] = d + " for " + strings.Join(dirsOf[d], " and ")
	}
	m.Disk = strings.Join(disks, "; ")
	// containerd 1.6.20~ds1 prints "containerd github.com/containerd/containerd 1.6.20~ds1 <package>".
	if f := strings.Fields(toolVersion(ctx, "containerd", "--version")); len(f) >= 3 && f[0] == "containerd" {
		m.Containerd = f[2]
	} else {
		m.Containerd = strings.Join(f, " ")
	}
	m.Runc = strings.TrimPrefix(toolVersion(ctx, "runc", "--version"), "runc version ")
	m.GPU = toolVersion(ctx, "nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
	if m.GPU == "not installed" {
		m.GPU = "none (no nvidia-smi)"
	}
	m.Baselines = map[string]string{
		"sqlite3":   firstField(toolVersion(ctx, "sqlite3", "--version")),
		"nginx":     strings.TrimPrefix(toolVersion(ctx, "nginx", "-v"), "nginx version: nginx/"),
		"wrk":       firstField(strings.TrimPrefix(toolVersion(ctx, "wrk", "-v"), "wrk ")), // "wrk debian/4.1.0-3+b2 [epoll] Copyright..."
		"mlr":       strings.TrimPrefix(toolVersion(ctx, "mlr", "--version"), "mlr "),
		"sha256sum": strings.TrimPrefix(toolVersion(ctx, "sha256sum", "--version"), "sha256sum "),
	}
	return m
}

// toolVersion is the first line a tool prints about its version, or "not
// installed". Some tools (nginx -v) print to stderr, some (wrk -v) exit 1.
func toolVersion(ctx context.Context, name string, args ...string) string {
	path, err := exec.LookPath(name)
	if err != nil {
		return "not installed"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, args...).CombinedOutput() //nolint:gosec // G204: fixed tools and arguments
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return "unknown (" + name + " printed nothing)"
	}
	return strings.TrimSpace(line)
}

// firstField is a version line's first word; toolVersion's own words
// ("not installed", "unknown (...)") stay whole.
func firstField(s string) string {
	if s == "not installed" || strings.HasPrefix(s, "unknown (") {
		return s
	}
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}

func readOr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return string(b)
}

// colonField is the value of the first "key: value" line of a /proc file.
func colonField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer func() { _ = f.Close() }() // read only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown (no " + key + " in " + path + ")"
}

func cpuinfoField(key string) string { return colonField("/proc/cpuinfo", key) }
func meminfoField(key string) string { return colonField("/proc/meminfo", key) }

func osRelease() string {
	for line := range strings.SplitSeq(readOr("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "unknown"
}

// cgroupMode tells cgroup v2 (unified), v1 with the unified hierarchy
// beside it (hybrid, as on the build machine) and plain v1 apart.
func cgroupMode() string {
	switch {
	case exists("/sys/fs/cgroup/cgroup.controllers"):
		return "v2"
	case exists("/sys/fs/cgroup/unified"):
		return "v1 (hybrid)"
	case exists("/sys/fs/cgroup/memory"):
		return "v1"
	}
	return "unknown"
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// diskOf says which filesystem and block device hold dir, from
// /proc/self/mountinfo (the longest mount point above dir) and sysfs:
// "ext4 on /dev/vda (virtio_blk, rotational=1)".
func diskOf(dir string) string {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return dir + ": " + err.Error()
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return dir + ": " + err.Error()
	}
	defer func() { _ = f.Close() }() // read only
	var mnt, fstype, source string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(pf) < 5 || len(sf) < 2 {
			continue
		}
		mp := pf[4]
		if (resolved == mp || strings.HasPrefix(resolved, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(mnt) {
			mnt, fstype, source = mp, sf[0], sf[1]
		}
	}
	if mnt == "" {
		return dir + ": no mount found"
	}
	out := fmt.Sprintf("%s on %s", fstype, source)
	if dev, ok := strings.CutPrefix(source, "/dev/"); ok {
		out += " (" + blockInfo(dev) + ")"
	}
	return out
}

// blockInfo names the driver and model of a block device (or of the disk
// a partition is on) and whether the kernel takes it for rotational.
func blockInfo(dev string) string {
	sys, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", dev))
	if err != nil {
		return "no sysfs entry"
	}
	if exists(filepath.Join(sys, "partition")) {
		sys = filepath.Dir(sys)
	}
	var parts []string
	if drv, err := os.Readlink(filepath.Join(sys, "device/driver")); err == nil {
		parts = append(parts, filepath.Base(drv))
	}
	if b, err := os.ReadFile(filepath.Join(sys, "device/model")); err == nil && strings.TrimSpace(string(b)) != "" {
		parts = append(parts, strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile(filepath.Join(sys, "queue/rotational")); err == nil {
		parts = append(parts, "rotational="+strings.TrimSpace(string(b)))
	}
	return strings.Join(parts, ", ")
}
