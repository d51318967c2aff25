package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	cacheDir = "/var/cache/kiln-test"
	// rootfsBuildTimeout bounds the one-time debootstrap (cold cache).
	rootfsBuildTimeout = 6 * time.Minute
	// cmdTimeout bounds one command inside the machine.
	cmdTimeout = 60 * time.Second
)

// cachedRootfs returns the cached Debian rootfs, building it first when the
// cache lacks it. The key is a hash of mkrootfs.sh, which holds the package
// list and the preparation; older keys are removed.
func cachedRootfs(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs("mkrootfs.sh")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	key := hex.EncodeToString(sum[:])[:16]
	dest := filepath.Join(cacheDir, "rootfs-"+key)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// One builder at a time (another test binary may be at it).
	lock, err := os.OpenFile(filepath.Join(cacheDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(filepath.Join(dest, "usr/lib/systemd/systemd")); err == nil {
		return dest
	}
	t.Logf("building the e2e rootfs %s with debootstrap (once; cached)", dest)
	ctx, cancel := context.WithTimeout(context.Background(), rootfsBuildTimeout)
	defer cancel()
	start := time.Now()
	if out, err := run(ctx, script, dest); err != nil {
		t.Fatalf("mkrootfs.sh: %v\n%s", err, lastLines(out, 20))
	}
	t.Logf("rootfs built in %s", time.Since(start).Round(time.Second))
	old, _ := filepath.Glob(filepath.Join(cacheDir, "rootfs-*"))
	for _, o := range old {
		if o != dest {
			_ = os.RemoveAll(o)
		}
	}
	return dest
}

// machine is one systemd-nspawn container booted from a copy of the rootfs.
type machine struct {
	t       *testing.T
	name    string
	dir     string // holds root/ and nspawn.log
	root    string
	cmd     *exec.Cmd
	exited  chan struct{}
	initPID int
	cgroups []string // the machine's cgroup folder in each hierarchy
}

// boot copies rootfs, stages files (host path -> path inside), and boots it.
// Everything is undone at cleanup.
func boot(t *testing.T, ctx context.Context, rootfs string, stage map[string]string) *machine {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "kiln-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{t: t, name: fmt.Sprintf("kilne2e-%d", os.Getpid()), dir: dir, root: filepath.Join(dir, "root"), exited: make(chan struct{})}
	t.Cleanup(m.destroy)
	if out, err := run(ctx, "cp", "-a", "--reflink=auto", rootfs, m.root); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	for src, dst := range stage {
		if out, err := run(ctx, "cp", "-a", src, filepath.Join(m.root, dst)); err != nil {
			t.Fatalf("stage %s: %v: %s", src, err, out)
		}
	}
	procs := m.makeCgroups()

	logf, err := os.Create(filepath.Join(dir, "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The launcher moves itself into the machine's own cgroups (so the inner
	// containers do not land in the host's) and becomes systemd-nspawn.
	// FIELD-NOTES: --keep-unit and --register=no without machined on the
	// host; CAP_NET_ADMIN and @keyring for runc inside.
	args := []string{"-c", `for f in $KILN_E2E_PROCS; do echo $$ >"$f"; done; exec "$@"`, "sh",
		"systemd-nspawn", "-D", m.root, "-b", "--register=no", "--keep-unit", "--console=passive",
		"-M", m.name, "--capability=CAP_NET_ADMIN", "--system-call-filter=@keyring"}
	m.cmd = exec.Command("sh", args...)
	m.cmd.Env = append(os.Environ(), "KILN_E2E_PROCS="+strings.Join(procs, " "))
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() { _ = m.cmd.Wait(); close(m.exited) }()

	// The container's systemd is the child of systemd-nspawn.
	err = eventually(ctx, 20*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-m.exited:
			return errors.New("systemd-nspawn exited")
		default:
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.cmd.Process.Pid, m.cmd.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == "systemd" {
				m.initPID = pid
				return nil
			}
		}
		return errors.New("no systemd child of systemd-nspawn yet")
	})
	if err != nil {
		t.Fatalf("boot: %v\n%s", err, m.log())
	}
	err = eventually(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		out, _ := m.sh(ctx, "systemctl is-system-running --wait")
		if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
			return fmt.Errorf("system state %q", s)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("boot: %v\n%s", err, m.log())
	}
	if out, _ := m.sh(ctx, "systemctl --failed --no-legend --plain"); strings.TrimSpace(out) != "" {
		t.Logf("units failed at boot (not kiln's):\n%s", out)
	}
	return m
}

// makeCgroups creates the machine's folder in every cgroup hierarchy (cpuset
// needs cpus and mems copied from its parent) and returns their cgroup.procs.
func (m *machine) makeCgroups() []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	var procs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || (fs[2] != "cgroup" && fs[2] != "cgroup2") || !strings.HasPrefix(fs[1], "/sys/fs/cgroup") {
			continue
		}
		dir := filepath.Join(fs[1], m.name)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			m.t.Logf("cgroup %s: %v", dir, err)
			continue
		}
		m.cgroups = append(m.cgroups, dir)
		for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(fs[1], k)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, k), v, 0o644)
			}
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	return procs
}

// sh runs a shell script inside the machine as root, with a clean
// environment, and returns its combined output. nsenter bypasses nspawn's
// seccomp filter and capability bounds: what must run under them goes
// through systemd inside (the kilnd service does).
func (m *machine) sh(ctx context.Context, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return run(ctx, "nsenter", "-t", strconv.Itoa(m.initPID), "-a", "--",
		"/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=",
		"/bin/sh", "-c", script)
}

// must runs script and fails the test with its output when it fails.
func (m *machine) must(ctx context.Context, script string) string {
	m.t.Helper()
	out, err := m.sh(ctx, script)
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", script, err, lastLines(out, 30))
	}
	return out
}

// show returns systemctl show's properties of unit.
func (m *machine) show(ctx context.Context, unit string, props ...string) map[string]string {
	m.t.Helper()
	out := m.must(ctx, "systemctl show "+unit+" -p "+strings.Join(props, ","))
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	return got
}

// diag logs what explains a failure: kilnd's status and journal.
func (m *machine) diag(ctx context.Context) {
	out, _ := m.sh(ctx, "systemctl status --no-pager -l kilnd.service kilnd.socket containerd.service 2>&1 | head -n 40; journalctl --no-pager -n 60 -u kilnd")
	m.t.Logf("diagnostics:\n%s", out)
}

func (m *machine) log() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "nspawn.log"))
	return lastLines(string(b), 20)
}

// destroy powers the machine off (SIGTERM makes nspawn ask systemd inside for
// an orderly poweroff), kills what is left, and removes the copy, the
// cgroups, nspawn's /run entries and any mount under the machine's folder.
func (m *machine) destroy() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(15 * time.Second):
			m.t.Logf("systemd-nspawn did not stop in 15s; killing it")
			if m.initPID > 0 {
				_ = syscall.Kill(m.initPID, syscall.SIGKILL) // ends the whole pid namespace
			}
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.exited
		}
	}
	// Mounts left under the copy (none after a clean poweroff), deepest first.
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], m.dir+"/") {
				mounts = append(mounts, f[1])
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
		for _, mp := range mounts {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	// Cgroups: empty once the machine's processes are gone; rmdir deepest first.
	for _, cg := range m.cgroups {
		_ = eventually(context.Background(), 5*time.Second, 100*time.Millisecond, func() error { return removeCgroup(cg) })
		if _, err := os.Stat(cg); err == nil {
			m.t.Errorf("cgroup %s left behind", cg)
		}
	}
	for _, d := range []string{"propagate", "unix-export", "incoming"} {
		_ = os.RemoveAll(filepath.Join("/run/systemd/nspawn", d, m.name))
		_ = os.Remove(filepath.Join("/run/systemd/nspawn", d)) // only when empty
	}
	_ = os.Remove("/run/systemd/nspawn/locks")
	_ = os.Remove("/run/systemd/nspawn")
	if m.dir != "" {
		if err := os.RemoveAll(m.dir); err != nil {
			m.t.Errorf("remove %s: %v", m.dir, err)
		}
	}
}

// removeCgroup removes a cgroup folder and its children (cgroupfs files
// cannot be unlinked; folders go with rmdir once empty of processes).
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}
