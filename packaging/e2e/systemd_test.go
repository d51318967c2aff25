package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// e2eBudget bounds TestSystemd once the rootfs is cached (boot, install, all
// checks, purge, the bundle, the quick start, poweroff): about 80-90 s here; CI's whole run must stay
// under 20 minutes.
const e2eBudget = 4 * time.Minute

// A pipeline spec the reload check adds: valid, its images need not exist.
const e2eSpec = `data: {label: y}
train: {image: kiln.local/trainer:1}
serve: {image: kiln.local/server:1}
`

func TestSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		requireReal(t, "needs root (debootstrap, systemd-nspawn)")
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireReal(t, tool+" not found: run 'make deps' (as root)")
		}
	}
	repo := repoRoot(t)
	deb := newest(filepath.Join(repo, "bin/packages", "kiln_*_"+runtime.GOARCH+".deb"))
	if deb == "" {
		requireReal(t, "no bin/packages/kiln_*_"+runtime.GOARCH+".deb: run 'make packages' (make test does)")
	}
	t.Logf("package under test: %s", filepath.Base(deb))
	rootfs := cachedRootfs(t)

	ctx, cancel := context.WithTimeout(context.Background(), e2eBudget)
	defer cancel()
	start := time.Now()
	stage := map[string]string{deb: "/opt/kiln.deb"}
	// The offline bundle of the same version, when make bundle wrote it.
	bundle := ""
	if v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(deb), "kiln_"), "-1_"+runtime.GOARCH+".deb"); v != "" {
		if b := filepath.Join(repo, "bin", "kiln-"+v+"-offline.tar.gz"); fileExists(b) {
			bundle = b
			stage[b] = "/opt/kiln-offline.tar.gz"
		}
	}
	lead := leadPrereqs(repo)
	for _, img := range lead.images {
		stage[img] = "/opt/" + filepath.Base(img)
	}
	m := boot(t, ctx, rootfs, stage)
	t.Logf("booted in %s", time.Since(start).Round(10*time.Millisecond))
	defer func() {
		if t.Failed() {
			m.diag(context.Background())
		}
	}()

	// step runs a subtest; a failed step stops the rest, which build on it.
	// check runs one that nothing later depends on.
	stopped := false
	subtest := func(name string, f func(t *testing.T), stopOnFail bool) {
		if stopped {
			return
		}
		ok := t.Run(name, func(t *testing.T) { m.t = t; f(t) })
		m.t = t
		if !ok && stopOnFail {
			stopped = true
			t.FailNow()
		}
	}
	step := func(name string, f func(t *testing.T)) { subtest(name, f, true) }
	check := func(name string, f func(t *testing.T)) { subtest(name, f, false) }

	step("package installs groups, folders and units", func(t *testing.T) {
		out := m.must(ctx, "dpkg -i /opt/kiln.deb")
		if !strings.Contains(out, "kilnd.socket listens") {
			t.Errorf("postinst did not announce the socket:\n%s", out)
		}
		m.must(ctx, "getent group kiln && getent group kiln-admin")
		stat := m.must(ctx, "stat -c '%n %a %U %G' /var/lib/kiln /var/lib/kiln/drop /var/lib/kiln/feedback /var/lib/kiln/quarantine /etc/kiln/pipelines")
		for _, want := range []string{"/var/lib/kiln 755 root root", "/var/lib/kiln/drop 2775 root kiln",
			"/var/lib/kiln/feedback 2775 root kiln", "/var/lib/kiln/quarantine 2750 root kiln", "/etc/kiln/pipelines 755 root root"} {
			if !strings.Contains(stat, want+"\n") {
				t.Errorf("want %q in:\n%s", want, stat)
			}
		}
		m.must(ctx, "dpkg-query -W -f='${Conffiles}' kiln | grep -q /etc/kiln/kiln.yaml")
		m.must(ctx, "test -f /usr/share/kiln/examples/pipelines/pumps.yaml")
		if out := m.must(ctx, "ls -A /etc/kiln/pipelines"); strings.TrimSpace(out) != "" {
			t.Errorf("the example must not be enabled; /etc/kiln/pipelines has:\n%s", out)
		}
		if got := m.show(ctx, "kilnd.service", "UnitFileState")["UnitFileState"]; got != "enabled" {
			t.Errorf("kilnd.service UnitFileState=%s, want enabled", got)
		}
	})

	step("the socket listens and kilnd waits for it", func(t *testing.T) {
		sock := m.show(ctx, "kilnd.socket", "ActiveState", "SubState")
		if sock["ActiveState"] != "active" || sock["SubState"] != "listening" {
			t.Errorf("kilnd.socket %v, want active/listening", sock)
		}
		if out := m.must(ctx, "stat -c '%F %a' /run/kiln/kiln.sock"); strings.TrimSpace(out) != "socket 666" {
			t.Errorf("/run/kiln/kiln.sock: %s, want a socket with mode 666", out)
		}
		if got := m.show(ctx, "kilnd.service", "ActiveState")["ActiveState"]; got != "inactive" {
			t.Errorf("kilnd.service is %s before any client, want inactive (socket activation)", got)
		}
	})

	step("the first kiln status starts kilnd; READY and STATUS reach systemd", func(t *testing.T) {
		out := m.must(ctx, "kiln status")
		if !strings.Contains(out, "systemd") {
			t.Errorf("kiln status:\n%s", out)
		}
		// Type=notify: active/running only after READY=1.
		s := m.show(ctx, "kilnd.service", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
		if s["ActiveState"] != "active" || s["SubState"] != "running" {
			t.Errorf("kilnd.service %v, want active/running", s)
		}
		if !strings.HasPrefix(s["StatusText"], "ready") {
			t.Errorf("StatusText=%q, want kilnd's ready status", s["StatusText"])
		}
		st := status(t, m, ctx)
		if !st.Systemd || st.State != "ready" {
			t.Errorf("kiln status -o json: systemd=%v state=%q, want true, ready", st.Systemd, st.State)
		}
		if out := m.must(ctx, "journalctl -u kilnd -o cat --no-pager"); !strings.Contains(out, "socket-activated") {
			t.Errorf("kilnd did not take the socket from systemd; journal:\n%s", lastLines(out, 20))
		}
	})

	step("kiln and kilnd report version, commit and build date", func(t *testing.T) {
		d := m.must(ctx, "kilnd --version")
		re := regexp.MustCompile(`^kilnd (\S+) \(commit ([0-9a-f]{7,}), built (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ), go`)
		sub := re.FindStringSubmatch(d)
		if sub == nil || sub[1] == "dev" {
			t.Fatalf("kilnd --version = %q, want version, commit and build date set at link time", d)
		}
		// kiln version shows what dpkg shows beside git's version.
		pv := strings.TrimSpace(m.must(ctx, "dpkg-query -W -f='${Version}' kiln"))
		v := m.must(ctx, "kiln version")
		for _, want := range []string{"kiln   package " + pv + ", git " + sub[1], "kilnd  git " + sub[1], "commit " + sub[2], "built " + sub[3]} {
			if !strings.Contains(v, want) {
				t.Errorf("kiln version lacks %q:\n%s", want, v)
			}
		}
		// The package version is derived from the same git describe.
		if !strings.Contains(pv, sub[2]) && !strings.HasPrefix(pv, strings.TrimPrefix(strings.SplitN(sub[1], "-", 2)[0], "v")) {
			t.Errorf("package version %s does not match kilnd %s (commit %s)", pv, sub[1], sub[2])
		}
	})

	step("the sandbox keeps what kilnd needs", func(t *testing.T) {
		s := m.show(ctx, "kilnd.service", "PrivateDevices", "DevicePolicy", "DeviceAllow", "KillMode",
			"FileDescriptorStoreMax", "ProtectHome", "Wants", "Requires", "After")
		if s["PrivateDevices"] != "no" || !strings.Contains(s["DeviceAllow"], "char-nvidia* rw") {
			t.Errorf("/dev/nvidia* must stay reachable for NVML: PrivateDevices=%s DevicePolicy=%s DeviceAllow=%s",
				s["PrivateDevices"], s["DevicePolicy"], s["DeviceAllow"])
		}
		if s["KillMode"] != "process" || s["FileDescriptorStoreMax"] == "0" || s["ProtectHome"] != "yes" {
			t.Errorf("KillMode=%s FileDescriptorStoreMax=%s ProtectHome=%s", s["KillMode"], s["FileDescriptorStoreMax"], s["ProtectHome"])
		}
		if !strings.Contains(s["Wants"], "containerd.service") || strings.Contains(s["Requires"], "containerd") {
			t.Errorf("Wants=%s Requires=%s: want containerd wanted, not required", s["Wants"], s["Requires"])
		}
		// kilnd runs with the bounding set, not as a fully privileged root.
		pid := m.show(ctx, "kilnd.service", "MainPID")["MainPID"]
		capbnd := m.must(ctx, "grep CapBnd /proc/"+pid+"/status")
		if strings.Contains(capbnd, "000001ffffffffff") || strings.Contains(capbnd, "000003ffffffffff") {
			t.Errorf("kilnd has every capability: %s", capbnd)
		}
	})

	step("the watchdog restarts a hung kilnd", func(t *testing.T) {
		m.must(ctx, `mkdir -p /etc/systemd/system/kilnd.service.d && printf '[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n' >/etc/systemd/system/kilnd.service.d/e2e-watchdog.conf && systemctl daemon-reload && systemctl restart kilnd`)
		before := m.show(ctx, "kilnd.service", "MainPID", "NRestarts", "WatchdogUSec")
		if before["WatchdogUSec"] != "3s" {
			t.Fatalf("drop-in not applied: WatchdogUSec=%s", before["WatchdogUSec"])
		}
		// Let kilnd pet the watchdog a few times, proving a healthy kilnd is kept.
		time.Sleep(4 * time.Second)
		if s := m.show(ctx, "kilnd.service", "MainPID"); s["MainPID"] != before["MainPID"] {
			t.Fatalf("a healthy kilnd was restarted: MainPID %s -> %s", before["MainPID"], s["MainPID"])
		}
		m.must(ctx, "kill -STOP "+before["MainPID"])
		var after map[string]string
		err := eventually(ctx, 20*time.Second, 250*time.Millisecond, func() error {
			after = m.show(ctx, "kilnd.service", "MainPID", "NRestarts", "ActiveState")
			if after["NRestarts"] == before["NRestarts"] || after["MainPID"] == before["MainPID"] || after["ActiveState"] != "active" {
				return fmt.Errorf("kilnd %v (before %v)", after, before)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if out := m.must(ctx, "journalctl -u kilnd --no-pager -o cat"); !strings.Contains(out, "Watchdog timeout") {
			t.Errorf("no watchdog timeout in the journal:\n%s", lastLines(out, 10))
		}
		m.must(ctx, "rm -r /etc/systemd/system/kilnd.service.d && systemctl daemon-reload && systemctl restart kilnd")
	})

	step("systemctl reload re-reads the pipelines", func(t *testing.T) {
		m.must(ctx, "cat >/etc/kiln/pipelines/e2e.yaml <<'EOF'\n"+e2eSpec+"EOF")
		// The folder watch reloads on its own; let it finish first, or its
		// reload may land after the SIGHUP one and be the last.
		err := eventually(ctx, 15*time.Second, 200*time.Millisecond, func() error {
			if st := status(t, m, ctx); st.LastReload == nil || st.LastReload.Trigger != "folder" {
				return fmt.Errorf("the folder watch has not reloaded yet: %+v", st.LastReload)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now().UTC()
		m.must(ctx, "systemctl reload kilnd")
		err = eventually(ctx, 15*time.Second, 200*time.Millisecond, func() error {
			st := status(t, m, ctx)
			// ExecReload is kilnd --reload: the reload comes over the API.
			if r := st.LastReload; r == nil || r.Trigger != "api" || r.Time.Before(before) || !r.OK {
				return fmt.Errorf("last reload %+v, want an OK api reload", r)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if out := m.must(ctx, "kiln pipelines"); !strings.Contains(out, "e2e") {
			t.Errorf("kiln pipelines lacks e2e after the reload:\n%s", out)
		}
		if s := m.show(ctx, "kilnd.service", "ActiveState"); s["ActiveState"] != "active" {
			t.Errorf("after the reload kilnd is %s, want active (RELOADING=1 then READY=1)", s["ActiveState"])
		}
	})

	step("the journal carries structured fields", func(t *testing.T) {
		out := m.must(ctx, "journalctl -u kilnd -o verbose --no-pager SYSLOG_IDENTIFIER=kilnd")
		for _, want := range []string{"MESSAGE=pipelines reloaded (folder): added e2e", "EVENT=pipelines.reloaded", "SEQ=", "PIPELINE=e2e", "PART=storage", "CODE_FUNC="} {
			if !strings.Contains(out, "    "+want) {
				t.Errorf("journal lacks field %s; kilnd's entries end with:\n%s", want, lastLines(out, 30))
			}
		}
	})

	step("kilnd stays up when containerd stops, and says so", func(t *testing.T) {
		pid := m.show(ctx, "kilnd.service", "MainPID")["MainPID"]
		m.must(ctx, "systemctl stop containerd")
		out, err := m.sh(ctx, "kiln doctor")
		if err == nil || !regexp.MustCompile(`(?m)^FAIL\s+containerd`).MatchString(out) {
			t.Errorf("kiln doctor with containerd down: %v\n%s", err, out)
		}
		if st := status(t, m, ctx); st.Containerd.OK {
			t.Errorf("kiln status says containerd is fine: %+v", st.Containerd)
		}
		s := m.show(ctx, "kilnd.service", "ActiveState", "MainPID")
		if s["ActiveState"] != "active" || s["MainPID"] != pid {
			t.Errorf("kilnd %v after containerd stopped, want active with MainPID %s", s, pid)
		}
		m.must(ctx, "systemctl start containerd")
		err = eventually(ctx, 30*time.Second, 500*time.Millisecond, func() error {
			if st := status(t, m, ctx); !st.Containerd.OK {
				return fmt.Errorf("containerd still down for kilnd: %s", st.Containerd.Detail)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	// The two checks below need the example images and data (make images);
	// without them they skip, naming what is missing, or fail under
	// KILN_REQUIRE_REAL=1.
	step("a pipeline trains and serves inside", func(t *testing.T) {
		lead.need(t)
		trainAndServe(t, ctx, m)
	})
	check("restart leaves the serving container running and the endpoint answers across it", func(t *testing.T) {
		lead.need(t)
		restartKeepsServing(t, ctx, m)
	})

	step("remove stops what cannot work without kilnd and keeps state; purge removes it and says so", func(t *testing.T) {
		// A container of kiln's namespace without kiln's labels: remove
		// leaves it, purge deletes it.
		if _, err := m.sh(ctx, "test -f /opt/tabular-server.tar"); err == nil {
			m.must(ctx, "ctr -n kiln images import /opt/tabular-server.tar >/dev/null && ctr -n kiln run -d --null-io kiln.local/tabular-server:1 e2e-purge >/dev/null")
		}
		removeKiln(t, ctx, m, lead.missing == "")
		for _, p := range []string{"/etc/kiln/kiln.yaml", "/etc/kiln/pipelines/e2e.yaml"} {
			if _, err := m.sh(ctx, "test -e "+p); err != nil {
				t.Errorf("dpkg -r removed %s; remove must keep state and configuration", p)
			}
		}
		containers := m.must(ctx, "ctr -n kiln containers ls -q 2>/dev/null | sort")
		if lead.missing == "" && !strings.Contains(containers, "e2e-purge\n") {
			t.Errorf("dpkg -r deleted a container without kiln's labels; left: %q", containers)
		}
		out := m.must(ctx, "dpkg --purge kiln")
		// /run/kiln went with dpkg -r already.
		for _, d := range []string{"/var/lib/kiln", "/etc/kiln", "/run/kiln"} {
			if d != "/run/kiln" && !strings.Contains(out, "kiln purge: removed "+d) {
				t.Errorf("purge did not say it removed %s:\n%s", d, out)
			}
			if _, err := m.sh(ctx, "test -e "+d); err == nil {
				t.Errorf("%s still exists after purge", d)
			}
		}
		if !strings.Contains(out, "containerd namespace kiln") {
			t.Errorf("purge did not report kiln's containers:\n%s", out)
		}
		if want := fmt.Sprintf("deleted %d container(s)", len(strings.Fields(containers))); !strings.Contains(out, want) {
			t.Errorf("purge did not say %q (containers before: %q):\n%s", want, containers, out)
		}
		if ns := m.must(ctx, "ctr namespaces ls -q"); strings.Contains(ns, "kiln") {
			t.Errorf("containerd namespace kiln left after purge: %q", ns)
		}
		if out, err := m.sh(ctx, "ls /lib/systemd/system/kilnd.* /usr/bin/kilnd /usr/bin/kiln 2>&1"); err == nil {
			t.Errorf("package files left after purge:\n%s", out)
		}
		if s := m.show(ctx, "kilnd.socket", "ActiveState"); s["ActiveState"] == "active" {
			t.Errorf("kilnd.socket still active after purge")
		}
		// The groups stay (files elsewhere may carry them), as purge says.
		t.Logf("purge said:\n%s", strings.TrimSpace(out))
	})
	step("the offline bundle installs with no network", func(t *testing.T) {
		if bundle == "" {
			requireReal(t, "no bin/kiln-VERSION-offline.tar.gz for "+filepath.Base(deb)+": run 'make bundle' (make test does)")
		}
		m.must(ctx, "mkdir -p /opt/b && tar -C /opt/b -xzf /opt/kiln-offline.tar.gz")
		// A damaged bundle is refused before anything is installed.
		out, err := m.sh(ctx, `cp -a /opt/b /opt/bad && for f in /opt/bad/*/packages/*.deb; do echo x >>"$f"; done && unshare -n sh /opt/bad/*/install.sh`)
		if err == nil || !strings.Contains(out, "does not match SHA256SUMS") {
			t.Errorf("install.sh accepted a damaged bundle: %v\n%s", err, out)
		}
		if _, err := m.sh(ctx, "dpkg-query -W kiln"); err == nil {
			t.Fatalf("a damaged bundle installed kiln")
		}
		// unshare -n: a network namespace with nothing but lo.
		out = m.must(ctx, "unshare -n sh /opt/b/*/install.sh 2>&1")
		for _, want := range []string{"verifying checksums", "installing packages/kiln_", "kiln doctor:", "kiln is installed", "next: the quick start"} {
			if !strings.Contains(out, want) {
				t.Errorf("install.sh output lacks %q:\n%s", want, out)
			}
		}
		if imgs := m.must(ctx, "ls /opt/b/*/images/"); strings.Contains(imgs, ".tar") {
			if !strings.Contains(out, "kiln images import") {
				t.Errorf("install.sh did not import the images with kiln images import:\n%s", out)
			}
			if ls := m.must(ctx, "kiln images ls"); !strings.Contains(ls, "tabular-server") {
				t.Errorf("kiln images ls after install.sh:\n%s", ls)
			}
		}
		if s := m.show(ctx, "kilnd.service", "ActiveState"); s["ActiveState"] != "active" {
			t.Errorf("kilnd is %s after install.sh, want active", s["ActiveState"])
		}
		t.Logf("install.sh said:\n%s", lastLines(out, 15))
	})
	step("the README's installed-site quick start runs command by command", func(t *testing.T) {
		lead.need(t)
		installedQuickstart(t, ctx, m)
	})
	check("workloads run under a reserved id a local account cannot reach", func(t *testing.T) {
		lead.need(t)
		workloadsIsolated(t, ctx, m)
	})
	check("dpkg -r stops the quick start's endpoint; a reinstall serves it again", func(t *testing.T) {
		lead.need(t)
		removeReinstall(t, ctx, m)
	})
	t.Logf("e2e under systemd took %s", time.Since(start).Round(100*time.Millisecond))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// status is `kiln status -o json` inside the machine.
func status(t *testing.T, m *machine, ctx context.Context) apiStatus {
	t.Helper()
	out, err := m.sh(ctx, "kiln status -o json")
	var st apiStatus
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		t.Fatalf("kiln status -o json: %v, %v\n%s", err, jerr, out)
	}
	return st
}

// apiStatus is the part of daemon/api.Status the test reads (decoded by
// name, so this package needs no import of kiln's API).
type apiStatus struct {
	State      string `json:"state"`
	Systemd    bool   `json:"systemd"`
	Containerd struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"containerd"`
	LastReload *struct {
		OK      bool      `json:"ok"`
		Time    time.Time `json:"time"`
		Trigger string    `json:"trigger"`
	} `json:"last_reload"`
}
