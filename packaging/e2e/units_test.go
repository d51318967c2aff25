package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxExposure is the goal for `systemd-analyze security --offline=true`
// (0-10, lower is better); the unit's header says what each remaining
// exposure is needed for.
const maxExposure = 3.0

// unitFile parses a unit file into section -> key -> values (in order; an
// empty assignment resets the list, as systemd does).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", path, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = nil
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestServiceUnit(t *testing.T) {
	u := unitFile(t, filepath.Join(repoRoot(t), "packaging/systemd/kilnd.service"))
	want := []struct{ section, key, value string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "Restart", "on-failure"},
		// A stop never takes containers with it.
		{"Service", "KillMode", "process"},
		// ExecReload waits for the answer: a rejected spec fails the reload.
		{"Service", "ExecReload", "/usr/bin/kilnd --reload"},
		{"Service", "Sockets", "kilnd.socket"},
		{"Service", "StateDirectory", "kiln"},
		{"Service", "RuntimeDirectory", "kiln"},
		{"Service", "RuntimeDirectoryPreserve", "yes"},
		{"Service", "ConfigurationDirectory", "kiln"},
		// Images stream over the socket: home directories stay hidden.
		{"Service", "ProtectHome", "yes"},
		{"Unit", "Wants", "containerd.service"},
	}
	for _, w := range want {
		if got := u[w.section][w.key]; len(got) == 0 || got[len(got)-1] != w.value {
			t.Errorf("[%s] %s = %q, want %q", w.section, w.key, got, w.value)
		}
	}
	if after := strings.Join(u["Unit"]["After"], " "); !strings.Contains(after, "containerd.service") {
		t.Errorf("After=%q lacks containerd.service", after)
	}
	// Requires=/BindsTo=/Requisite= containerd would stop kilnd with it.
	for _, k := range []string{"Requires", "BindsTo", "Requisite", "PartOf"} {
		if v := strings.Join(u["Unit"][k], " "); strings.Contains(v, "containerd") {
			t.Errorf("%s=%q: kilnd must stay up when containerd stops (Wants= only)", k, v)
		}
	}
	if v := u["Service"]["WatchdogSec"]; len(v) == 0 || v[0] == "0" {
		t.Errorf("WatchdogSec=%q, want a watchdog", v)
	}
	if v := u["Service"]["FileDescriptorStoreMax"]; len(v) == 0 {
		t.Error("no FileDescriptorStoreMax=: systemd would drop the endpoints' listeners (FDSTORE=1)")
	} else if n, err := strconv.Atoi(v[len(v)-1]); err != nil || n < 1 {
		t.Errorf("FileDescriptorStoreMax=%q, want > 0", v)
	}

	// NVML opens /dev/nvidiactl, /dev/nvidia0.., /dev/nvidia-uvm: no private
	// /dev, and a device policy that lets the NVIDIA character devices through.
	if v := u["Service"]["PrivateDevices"]; len(v) > 0 && v[len(v)-1] != "no" && v[len(v)-1] != "false" {
		t.Errorf("PrivateDevices=%s hides /dev/nvidia* from NVML", v[len(v)-1])
	}
	policy := "auto"
	if v := u["Service"]["DevicePolicy"]; len(v) > 0 {
		policy = v[len(v)-1]
	}
	if policy != "auto" {
		ok := false
		for _, a := range u["Service"]["DeviceAllow"] {
			f := strings.Fields(a)
			if len(f) >= 1 && (f[0] == "char-nvidia*" || f[0] == "char-nvidiactl") && (len(f) == 1 || strings.Contains(f[1], "r")) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("DevicePolicy=%s without DeviceAllow=char-nvidia* rw: NVML cannot open /dev/nvidia*", policy)
		}
	}
	// Capabilities kilnd's job needs (see the unit's header).
	caps := strings.Join(u["Service"]["CapabilityBoundingSet"], " ")
	for _, c := range []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_LEASE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"} {
		if caps != "" && !strings.Contains(caps, c) {
			t.Errorf("CapabilityBoundingSet lacks %s", c)
		}
	}
	if rn := strings.Join(u["Service"]["RestrictNamespaces"], " "); rn != "" && rn != "no" && !strings.Contains(rn, "net") {
		t.Errorf("RestrictNamespaces=%s forbids setns into a container's network namespace", rn)
	}
}

func TestSocketUnit(t *testing.T) {
	u := unitFile(t, filepath.Join(repoRoot(t), "packaging/systemd/kilnd.socket"))
	for _, w := range []struct{ key, value string }{
		{"ListenStream", "/run/kiln/kiln.sock"},
		{"SocketMode", "0666"},
		{"FileDescriptorName", "api"},
	} {
		if got := u["Socket"][w.key]; len(got) != 1 || got[0] != w.value {
			t.Errorf("[Socket] %s = %q, want %q", w.key, got, w.value)
		}
	}
}

// analyzeRoot makes a root for systemd-analyze --root: the host's units plus
// kiln's, and an executable at ExecStart's path (bin/kilnd when built).
func analyzeRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		requireReal(t, "systemd-analyze not found (apt-get install systemd)")
	}
	root := t.TempDir()
	units := filepath.Join(root, "usr/lib/systemd")
	for _, d := range []string{units, filepath.Join(root, "usr/bin"), filepath.Join(root, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	hostUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(hostUnits); err != nil {
		hostUnits = "/lib/systemd/system" // not usrmerged
	}
	if out, err := run(ctx, "cp", "-a", hostUnits, units+"/"); err != nil {
		t.Fatalf("copy host units: %v: %s", err, out)
	}
	repo := repoRoot(t)
	for _, u := range []string{"kilnd.service", "kilnd.socket"} {
		if out, err := run(ctx, "cp", filepath.Join(repo, "packaging/systemd", u), filepath.Join(units, "system", u)); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	kilnd := filepath.Join(repo, "bin/kilnd")
	if _, err := os.Stat(kilnd); err != nil {
		kilnd = "/bin/true" // verify only needs an executable there
	}
	for src, dst := range map[string]string{kilnd: "usr/bin/kilnd", "/bin/kill": "bin/kill"} {
		if out, err := run(ctx, "cp", src, filepath.Join(root, dst)); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	return root
}

func TestUnitsVerify(t *testing.T) {
	root := analyzeRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, "systemd-analyze", "verify", "--man=no", "--root="+root, "kilnd.service", "kilnd.socket")
	// verify exits 0 on warnings: any output is a finding.
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestServiceSecurity(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		requireReal(t, "systemd-analyze not found (apt-get install systemd)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unit := filepath.Join(repoRoot(t), "packaging/systemd/kilnd.service")
	out, err := run(ctx, "systemd-analyze", "security", "--offline=true", "--no-pager", unit)
	m := regexp.MustCompile(`Overall exposure level for kilnd\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v; no exposure level in:\n%s", err, lastLines(out, 20))
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("kilnd.service exposure %.1f (goal <= %.1f)", score, maxExposure)
	if score > maxExposure {
		var findings []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "✗") {
				findings = append(findings, l)
			}
		}
		t.Errorf("exposure %.1f > %.1f; findings:\n%s", score, maxExposure, strings.Join(findings, "\n"))
	}
}

// TestSysusersTmpfiles applies kiln's sysusers.d and tmpfiles.d files to an
// empty root and checks the groups, owners and modes they make.
func TestSysusersTmpfiles(t *testing.T) {
	if os.Geteuid() != 0 {
		requireReal(t, "needs root (systemd-tmpfiles chowns)")
	}
	for _, tool := range []string{"systemd-sysusers", "systemd-tmpfiles"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireReal(t, tool+" not found (apt-get install systemd)")
		}
	}
	repo := repoRoot(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := run(ctx, "systemd-sysusers", "--root="+root, filepath.Join(repo, "packaging/sysusers.d/kiln.conf")); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	gids := map[string]string{}
	for _, l := range strings.Split(string(group), "\n") {
		if f := strings.Split(l, ":"); len(f) >= 3 {
			gids[f[0]] = f[2]
		}
	}
	for _, g := range []string{"kiln", "kiln-admin"} {
		if gids[g] == "" {
			t.Errorf("group %s not created; /etc/group:\n%s", g, group)
		}
	}
	if out, err := run(ctx, "systemd-tmpfiles", "--root="+root, "--create", filepath.Join(repo, "packaging/tmpfiles.d/kiln.conf")); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for _, w := range []struct {
		path string
		mode os.FileMode
		gid  string
	}{
		{"etc/kiln/pipelines", 0o755, "0"},
		{"var/lib/kiln", 0o755, "0"},
		{"var/lib/kiln/drop", 0o775 | os.ModeSetgid, gids["kiln"]},
		{"var/lib/kiln/feedback", 0o775 | os.ModeSetgid, gids["kiln"]},
		{"var/lib/kiln/quarantine", 0o750 | os.ModeSetgid, gids["kiln"]},
	} {
		out, err := run(ctx, "stat", "-c", "%g", filepath.Join(root, w.path))
		fi, serr := os.Stat(filepath.Join(root, w.path))
		if err != nil || serr != nil {
			t.Errorf("%s: %v %v", w.path, err, serr)
			continue
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSticky); got != w.mode {
			t.Errorf("%s: mode %v, want %v", w.path, got, w.mode)
		}
		if got := strings.TrimSpace(out); got != w.gid {
			t.Errorf("%s: gid %s, want %s", w.path, got, w.gid)
		}
	}
}

func TestMaintainerScriptsParse(t *testing.T) {
	repo := repoRoot(t)
	scripts, _ := filepath.Glob(filepath.Join(repo, "packaging/scripts/*/*"))
	scripts = append(scripts, filepath.Join(repo, "packaging/bundle/install.sh"))
	if len(scripts) < 7 {
		t.Fatalf("found only %d maintainer scripts: %v", len(scripts), scripts)
	}
	for _, s := range scripts {
		if out, err := run(context.Background(), "sh", "-n", s); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		// Start, stop and reload need a running systemd; enable/disable do not.
		for i, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			for _, verb := range []string{"systemctl start", "systemctl stop", "systemctl daemon-reload", "systemctl try-restart"} {
				if strings.HasPrefix(l, verb) && !guarded(string(b), i) {
					t.Errorf("%s:%d: %q is not inside an [ -d /run/systemd/system ] guard", s, i+1, l)
				}
			}
		}
	}
}

// guarded reports whether line i of script sits in an if-block testing
// /run/systemd/system: some enclosing (unclosed) if, looking back.
func guarded(script string, i int) bool {
	lines := strings.Split(script, "\n")
	depth := 0
	for j := i - 1; j >= 0; j-- {
		l := strings.TrimSpace(lines[j])
		switch {
		case l == "fi":
			depth++
		case strings.HasPrefix(l, "if "):
			if depth == 0 {
				if strings.Contains(l, "/run/systemd/system") {
					return true
				}
				continue // an enclosing if of another test: look further out
			}
			depth--
		}
	}
	return false
}

func TestPackageVersion(t *testing.T) {
	script := filepath.Join(repoRoot(t), "packaging/version.sh")
	for in, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-rc1":              "1.2.3~rc1",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234.dirty",
		"1.0":                     "1.0",
	} {
		out, err := run(context.Background(), "sh", script, in)
		if err != nil || strings.TrimSpace(out) != want {
			t.Errorf("version.sh %s = %q (%v), want %q", in, strings.TrimSpace(out), err, want)
		}
	}
	// Untagged: a commit hash, even one starting with a digit, is not a version.
	out, err := run(context.Background(), "sh", script, "2f811ef-dirty")
	if err != nil || !regexp.MustCompile(`^0\.0\.0\+git\.[0-9]+\.2f811ef\.dirty$`).MatchString(strings.TrimSpace(out)) {
		t.Errorf("version.sh 2f811ef-dirty = %q (%v), want 0.0.0+git.N.2f811ef.dirty", out, err)
	}
}
