package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestSystemdReloadHonest is issue 18 §2-3 on an installed box: a reload
// that rejects a spec fails `systemctl reload kilnd` (ExecReload is kilnd
// --reload, which waits for the answer over the socket), STATUS= and
// `kiln pipelines` say which file and line while the old set keeps running,
// and plain `journalctl -u kilnd` names the cause, with the event's fields
// filterable. About 10 s once the rootfs is cached.
func TestSystemdReloadHonest(t *testing.T) {
	if os.Geteuid() != 0 {
		requireReal(t, "needs root (systemd-nspawn)")
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireReal(t, tool+" not found: run 'make deps' (as root)")
		}
	}
	deb := newest(filepath.Join(repoRoot(t), "bin/packages", "kiln_*_"+runtime.GOARCH+".deb"))
	if deb == "" {
		requireReal(t, "no bin/packages/kiln_*_"+runtime.GOARCH+".deb: run 'make packages' (make test does)")
	}
	rootfs := cachedRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := boot(t, ctx, rootfs, map[string]string{deb: "/opt/kiln.deb"})
	defer func() {
		if t.Failed() {
			m.diag(context.Background())
		}
	}()
	m.must(ctx, "dpkg -i /opt/kiln.deb && systemctl start kilnd")
	m.must(ctx, "cat >/etc/kiln/pipelines/e2e.yaml <<'EOF'\n"+e2eSpec+"EOF")
	if out := m.must(ctx, "systemctl reload kilnd && journalctl -u kilnd --no-pager -o cat"); !strings.Contains(out, "pipelines reloaded: ") {
		t.Errorf("a good reload: no ExecReload answer in the journal:\n%s", lastLines(out, 10))
	}

	const bad = "/etc/kiln/pipelines/bad.yaml"
	m.must(ctx, "printf 'data: {format: csvv, label: y}\\ntrain: {image: a}\\nserve: {image: b}\\n' >"+bad)
	if out, err := m.sh(ctx, "systemctl reload kilnd"); err == nil {
		t.Errorf("systemctl reload with a bad spec succeeded:\n%s", out)
	}
	if s := m.show(ctx, "kilnd.service", "ActiveState", "StatusText"); s["ActiveState"] != "active" ||
		!strings.HasPrefix(s["StatusText"], "reload rejected: "+bad+":1:") {
		t.Errorf("after a rejected reload: %v; want active and StatusText reload rejected: %s:1: ...", s, bad)
	}
	out := m.must(ctx, "journalctl -u kilnd --no-pager -o cat")
	for _, want := range []string{
		"kilnd: reload rejected, old pipelines keep running: " + bad + ":1:", // ExecReload's own stderr
		"pipelines reload rejected (api) by uid:0: " + bad + ":1:",           // the event's line
	} {
		if !strings.Contains(out, want) {
			t.Errorf("journalctl -u kilnd lacks %q:\n%s", want, lastLines(out, 15))
		}
	}
	// The event's fields are journal fields.
	if out := m.must(ctx, "journalctl -u kilnd --no-pager -o cat EVENT=pipelines.reload_rejected"); !strings.Contains(out, bad+":1:") {
		t.Errorf("journalctl EVENT=pipelines.reload_rejected: %q; want the rejection", out)
	}
	if out := m.must(ctx, "journalctl -u kilnd --no-pager -o cat PIPELINE=e2e"); !strings.Contains(out, "pipeline e2e ") {
		t.Errorf("journalctl PIPELINE=e2e: %q; want e2e's events (its images are missing)", out)
	}
	if out := m.must(ctx, "kiln pipelines"); !strings.Contains(out, "e2e ") || !strings.Contains(out, "rejected "+bad+": "+bad+":1:") {
		t.Errorf("kiln pipelines after a rejected reload:\n%s\nwant e2e loaded and bad.yaml rejected with its error", out)
	}

	m.must(ctx, "rm "+bad+" && systemctl reload kilnd")
	if s := m.show(ctx, "kilnd.service", "StatusText"); !strings.HasPrefix(s["StatusText"], "ready: ") {
		t.Errorf("StatusText after a good reload = %q; want ready: ...", s["StatusText"])
	}
}
