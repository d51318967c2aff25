package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// privateContainerd is a containerd of one test's own (the way
// .ci/with-containerd starts the shared one), so the test may stop, restart
// and freeze it without disturbing the other tests.
type privateContainerd struct {
	t    *testing.T
	dir  string
	addr string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

func startPrivateContainerd(t *testing.T) *privateContainerd {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("containerd"); err != nil {
		needReal(t, "containerd is not installed (make deps)")
	}
	dir, err := os.MkdirTemp("", "kc")
	if err != nil {
		t.Fatal(err)
	}
	c := &privateContainerd{t: t, dir: dir, addr: filepath.Join(dir, "c.sock")}
	writeFile(t, filepath.Join(dir, "config.toml"), fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[1]s/c.sock"
[ttrpc]
  address = "%[1]s/t.sock"
[debug]
  address = ""
`, dir))
	t.Cleanup(c.cleanup)
	c.start()
	return c
}

func (c *privateContainerd) start() {
	c.t.Helper()
	_ = os.Remove(c.addr)
	c.log = &bytes.Buffer{}
	c.cmd = exec.Command("containerd", "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for range 100 {
		if err := exec.Command("ctr", "-a", c.addr, "version").Run(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("private containerd did not answer within 10s:\n%s", c.log.String())
}

// stop ends containerd as systemctl stop does (SIGTERM); shims and their
// containers live on.
func (c *privateContainerd) stop() {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.cmd.Wait()
}

func (c *privateContainerd) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// cleanup removes what the test left: its containers, the containerd, the
// shims serving this containerd's address (found by their command line,
// killed by pid) and the mounts under its folder.
func (c *privateContainerd) cleanup() {
	if c.cmd != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		removeContainers(c.t, c.addr, faultNS)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(c.addr)) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		lines := strings.Split(string(b), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if f := strings.Fields(lines[i]); len(f) > 1 && strings.HasPrefix(f[1], c.dir+"/") {
				_ = exec.Command("umount", "-l", f[1]).Run()
			}
		}
	}
	_ = os.RemoveAll(c.dir)
}

const faultNS = "kiln-test-faults"

func predictOK(k *kilnd, rows string, n int) error {
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer")
	cmd.Stdin = strings.NewReader(rows)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kiln predict: %v: %s", err, errb.String())
	}
	if got := len(strings.Split(strings.TrimSpace(string(out)), "\n")); got != n {
		return fmt.Errorf("kiln predict answered %d lines; want %d", got, n)
	}
	return nil
}

// TestContainerdStoppedRestartedWedged: a model is live on kilnd's own
// containerd; that containerd is then frozen (SIGSTOP, a wedged daemon),
// stopped, and started again. kilnd says so each time (status, doctor,
// events), keeps answering on the endpoint from the serving container whose
// shim outlives containerd, and recovers on its own: the same container
// serves afterwards, and a new batch trains and goes live.
func TestContainerdStoppedRestartedWedged(t *testing.T) {
	c := startPrivateContainerd(t)
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	root := newRoot(t, "containerd: {address: "+c.addr+", namespace: "+faultNS+"}\n")
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), cancerSpec)
	k := startKilnd(t, root)
	k.expect("READY=1")
	k.importExamples(t, imgDir)
	data := cancerCSV(t)
	lines := strings.SplitAfter(string(data), "\n")
	dropData(t, root, "a.csv", strings.Join(lines[:301], ""))
	waitLong(t, 3*time.Minute, "a live model", func() bool { return liveModel(t, k) != "" })
	first := liveModel(t, k)
	rows, labels := featureRows(t, data, "diagnosis", 20)
	if err := predictOK(k, rows, len(labels)); err != nil {
		t.Fatal(err)
	}
	servePid := servingPid(t, c.addr)

	// Wedged: containerd alive but not answering.
	c.signal(syscall.SIGSTOP)
	t0 := time.Now()
	st, err := k.client().Status(context.Background())
	if err != nil || st.Containerd.OK {
		t.Errorf("status with containerd frozen = %+v, %v; want containerd not ok", st.Containerd, err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("status took %s with containerd frozen; want its probe bounded (2s)", d)
	}
	if err := predictOK(k, rows, len(labels)); err != nil {
		t.Errorf("endpoint with containerd frozen: %v", err)
	}
	waitLong(t, 15*time.Second, "the containerd.unreachable event", func() bool { return countEvents(eventsOf(t, k), "containerd.unreachable") == 1 })
	c.signal(syscall.SIGCONT)
	waitLong(t, 15*time.Second, "the containerd.reachable event after SIGCONT", func() bool { return countEvents(eventsOf(t, k), "containerd.reachable") == 1 })

	// Stopped: kilnd stays up and says so; the endpoint keeps serving.
	c.stop()
	waitLong(t, 15*time.Second, "the second containerd.unreachable event", func() bool { return countEvents(eventsOf(t, k), "containerd.unreachable") == 2 })
	st, err = k.client().Status(context.Background())
	if err != nil || st.Containerd.OK || !strings.Contains(st.Containerd.Detail, "unreachable since") || !strings.Contains(st.Containerd.Detail, "retrying") {
		t.Errorf("status with containerd stopped = %+v, %v; want the outage's start and the retry named", st.Containerd, err)
	}
	out, _, _ := k.kiln(nil, "status")
	if !strings.Contains(out, "unavailable: containerd at "+c.addr) {
		t.Errorf("kiln status with containerd stopped:\n%s", out)
	}
	if doc, err := k.client().Doctor(context.Background()); err != nil || findCheck(doc, "containerd").Result != api.CheckFail {
		t.Errorf("doctor with containerd stopped: %+v, %v; want the containerd check failing", findCheck(doc, "containerd"), err)
	}
	for range 3 {
		if err := predictOK(k, rows, len(labels)); err != nil {
			t.Errorf("endpoint with containerd stopped: %v", err)
		}
		time.Sleep(time.Second) // past the first retries of the lost waits
	}

	// Restarted: kilnd reconnects on its own.
	t1 := time.Now()
	c.start()
	waitLong(t, 40*time.Second, "containerd reachable again", func() bool { return countEvents(eventsOf(t, k), "containerd.reachable") == 2 })
	t.Logf("containerd restart seen by kilnd after %s", time.Since(t1).Round(time.Millisecond))
	if st, err := k.client().Status(context.Background()); err != nil || !st.Containerd.OK {
		t.Errorf("status after the restart = %+v, %v; want containerd ok", st.Containerd, err)
	}
	if err := predictOK(k, rows, len(labels)); err != nil {
		t.Errorf("endpoint after containerd restarted: %v", err)
	}
	if pid := servingPid(t, c.addr); pid != servePid {
		t.Errorf("serving task pid %s after the restarts; want %s, the same container untouched", pid, servePid)
	}
	if n := countEvents(eventsOf(t, k), "serve.exited") + countEvents(eventsOf(t, k), "serve.failed"); n != 0 {
		t.Errorf("%d serving exits recorded; want none: a containerd restart is not a crash", n)
	}

	// And it still works: a new batch trains and goes live.
	dropData(t, root, "b.csv", lines[0]+strings.Join(lines[301:], ""))
	waitLong(t, 3*time.Minute, "a second model live after the restart", func() bool {
		m := liveModel(t, k)
		return m != "" && m != first
	})
	for _, r := range runsOf(t, k) {
		if r.State != "succeeded" {
			t.Errorf("run %s is %s (%s); want every run succeeded across the containerd outages", r.ID, r.State, r.Reason)
		}
	}
}

func liveModel(t *testing.T, k *kilnd) string {
	ms, err := k.client().Models(context.Background(), "cancer")
	if err != nil {
		return ""
	}
	for _, m := range ms {
		if m.State == "rejected" {
			t.Fatalf("model %s rejected: %s", m.ID, m.Reason)
		}
		if m.State == "live" {
			return m.ID
		}
	}
	return ""
}

// servingPid is the host pid of the one running serving task in the test's
// namespace, as containerd reports it.
func servingPid(t *testing.T, addr string) string {
	t.Helper()
	out, err := exec.Command("ctr", "-a", addr, "-n", faultNS, "tasks", "ls").Output()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v", err)
	}
	var pids []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && strings.Contains(f[0], "serve") && f[2] == "RUNNING" {
			pids = append(pids, f[1])
		}
	}
	if len(pids) != 1 {
		t.Fatalf("serving tasks running: %q; want one\n%s", pids, out)
	}
	return pids[0]
}
