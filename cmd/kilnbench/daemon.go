package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

func init() { register(Group{Name: "daemon", Run: benchDaemon}) }

// daemonPipelines are the two pipelines the figures are taken with: the
// runnable example as shipped, and a copy of it under another name (the
// example data is the only data the example images train on).
var daemonPipelines = []string{"cancer", "cancer-b"}

// benchDaemon takes BENCH.md's daemon figures as its table defines them:
// kilnd with 2 pipelines, each with a live and a warm standby model
// serving in containers, containerd connected. On that root it seeds a
// 1M-event database (and, as a daemon that has served for a while has, a
// full prediction log for one pipeline), then times 5 starts to READY
// (re-attaching the 4 serving tasks each time) and keeps the last one up
// for the idle window: RSS at its end and CPU over it. An empty daemon's
// figures are not taken: they are not the ones that count.
func benchDaemon(ctx context.Context, opt Options) []Figure {
	const (
		rssName, rssGoal     = "daemon.idle_rss_mb", "<= 40"
		cpuName, cpuGoal     = "daemon.idle_cpu_pct", "<= 0.5"
		readyName, readyGoal = "daemon.ready_ms", "<= 300"
	)
	fail := func(why string) []Figure {
		return []Figure{unmeasured(readyName, "ms", readyGoal, why), unmeasured(rssName, "MB", rssGoal, why),
			unmeasured(cpuName, "%", cpuGoal, why)}
	}
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	switch {
	case addr == "":
		return fail("needs a containerd: run under .ci/with-containerd (make bench does)")
	case os.Geteuid() != 0:
		return fail("needs root for containers")
	}
	kilnd := filepath.Join(opt.Bin, "kilnd")
	if _, err := os.Stat(kilnd); err != nil {
		return fail(fmt.Sprintf("no %s (run make build): %v", kilnd, err))
	}
	spec, err1 := os.ReadFile("examples/pipelines/cancer.yaml")
	data, err2 := os.ReadFile("examples/tabular/data/breast_cancer.csv")
	if err := errors.Join(err1, err2); err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	events, predictions, idle := 1_000_000, 1_000_000, 60*time.Second
	if opt.Quick {
		events, predictions, idle = 20_000, 2_000, 5*time.Second
	}

	// Two pipelines, each with a live model and a warm standby.
	l, stop, err := startLoop(ctx, kilnd, addr, "daemon", daemonPipelines[0], string(spec))
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	logHint := func() string {
		b, _ := os.ReadFile(filepath.Join(l.root, "kilnd.log"))
		return "; kilnd: " + lastLine(string(b))
	}
	paths := config.NewPaths(l.root, "")
	second := strings.Replace(string(spec), "name: cancer", "name: "+daemonPipelines[1], 1)
	if err := os.WriteFile(filepath.Join(paths.PipelinesDir, daemonPipelines[1]+".yaml"), []byte(second), 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch root
		return fail(err.Error())
	}
	if rr, err := l.c.ReloadPipelines(ctx); err != nil || !rr.OK {
		return fail(fmt.Sprintf("reload with the second pipeline: %v %s", err, rr.Error))
	}
	for _, p := range daemonPipelines {
		if err := monLiveAndStandby(ctx, l.c, l.root, p, data); err != nil {
			return fail(err.Error() + logHint())
		}
	}
	serving, err := daemonServing(ctx, l, addr)
	if err != nil {
		return fail(err.Error() + logHint())
	}

	// The history of a daemon that has run a while, written while it is
	// stopped (the serving containers run on, as across any restart).
	if err := stopKilnd(l.proc); err != nil {
		return fail(err.Error())
	}
	if err := seedEvents(ctx, paths.StateDir, events); err != nil {
		return fail("seed events: " + err.Error())
	}
	scratch, err := os.MkdirTemp("", "kbd")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(scratch) }() // best-effort cleanup of the backend's socket
	plog, err := writePredLog(ctx, scratch, filepath.Join(paths.StateDir, "predictions"), daemonPipelines[0], predictions)
	if err != nil {
		return fail("seed the prediction log: " + err.Error())
	}

	const starts = 5
	var readies []float64
	var proc *exec.Cmd
	for i := range starts {
		if proc != nil {
			if err := stopKilnd(proc); err != nil {
				return fail(err.Error())
			}
		}
		var readyMS float64
		if readyMS, proc, err = startKilnd(ctx, kilnd, l.root); err != nil {
			return fail(fmt.Sprintf("start %d: %v", i+1, err))
		}
		readies = append(readies, readyMS)
	}
	// The last start stays up for the idle window.
	defer func() { _ = stopKilnd(proc) }() // best effort: stop() removes the root next
	st, err := l.c.Status(ctx)
	if err != nil {
		return fail(err.Error())
	}
	if !st.Containerd.OK || st.Pipelines != len(daemonPipelines) {
		return fail(fmt.Sprintf("after the restarts: containerd ok=%v (%s), %d pipelines", st.Containerd.OK, st.Containerd.Detail, st.Pipelines))
	}
	if _, err := daemonServing(ctx, l, addr); err != nil {
		return fail("after the restarts: " + err.Error() + logHint())
	}
	ctrd, _, _ := strings.Cut(st.Containerd.Detail, " at ") // "containerd 1.6.20~ds1 at /tmp/kc.x/c.sock"
	setup := fmt.Sprintf("%d pipelines (examples/pipelines/cancer.yaml and a renamed copy), %s, %s connected; "+
		"%d events in the database; a full prediction log for %s: %s",
		len(daemonPipelines), serving, ctrd, st.Store.EventSeq, daemonPipelines[0], plog.short())

	time.Sleep(5 * time.Second) // let start-up work settle before the idle window
	pid := proc.Process.Pid
	cpu0, err := procCPU(pid)
	if err != nil {
		return fail(err.Error())
	}
	// Sampled every tenth of the window, so a figure over its goal shows
	// when in the window the CPU went and how RSS grew.
	var trace []string
	prev, end := cpu0, time.Now().Add(idle)
	for step := idle / 10; time.Now().Before(end); {
		select {
		case <-time.After(min(step, time.Until(end))):
		case <-ctx.Done():
			return fail("interrupted")
		}
		c, err1 := procCPU(pid)
		r, err2 := procRSS(pid)
		if err1 == nil && err2 == nil {
			trace = append(trace, fmt.Sprintf("%.0fms/%.1fMB", float64((c-prev).Milliseconds()), float64(r)/(1<<20)))
			prev = c
		}
	}
	cpu1, err1 := procCPU(pid)
	rss, err2 := procRSS(pid)
	if err := errors.Join(err1, err2); err != nil {
		return fail(err.Error())
	}
	// Still as set up at the end of the window: nothing stopped while idle.
	if _, err := daemonServing(ctx, l, addr); err != nil {
		return fail("after the idle window: " + err.Error() + logHint())
	}
	cpuPct := (cpu1 - cpu0).Seconds() / idle.Seconds() * 100
	tr := "CPU/RSS by tenth of the window: " + strings.Join(trace, " ")
	return []Figure{
		measured(readyName, median(readies), "ms", readyGoal, fmt.Sprintf("exec -> READY=1, median of %d starts (%s), each re-attaching the serving tasks; %s",
			starts, fmtMS(readies), setup)),
		measured(rssName, float64(rss)/(1<<20), "MB", rssGoal, fmt.Sprintf("kilnd VmRSS after %s idle, set up as for daemon.ready_ms; %s", idle, tr)),
		measured(cpuName, cpuPct, "%", cpuGoal, fmt.Sprintf("kilnd utime+stime over %s idle, set up as for daemon.ready_ms; %s", idle, tr)),
	}
}

// daemonServing checks that every pipeline has one live and one standby
// model and that containerd runs a serving task for each, and says so.
func daemonServing(ctx context.Context, l *loopKilnd, addr string) (string, error) {
	var models []string
	for _, p := range daemonPipelines {
		ms, err := l.c.Models(ctx, p)
		if err != nil {
			return "", err
		}
		var live, standby []string
		for _, m := range ms {
			switch m.State {
			case "live":
				live = append(live, m.ID)
			case "standby":
				standby = append(standby, m.ID)
			}
		}
		if len(live) != 1 || len(standby) != 1 {
			return "", fmt.Errorf("pipeline %s: live %v, standby %v; want one of each", p, live, standby)
		}
		models = append(models, live[0], standby[0])
	}
	out, err := exec.CommandContext(ctx, "ctr", "-a", addr, "-n", l.ns, "tasks", "ls").Output()
	if err != nil {
		return "", fmt.Errorf("ctr tasks ls: %w", err)
	}
	running := 0
	for _, id := range models {
		// runtime.ContainerID ends a serving container's ID with the model ID.
		suffix := "-" + strings.ReplaceAll(id, "/", "-")
		for line := range strings.SplitSeq(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && strings.HasPrefix(f[0], "kiln-serve-") && strings.HasSuffix(f[0], suffix) && f[2] == "RUNNING" {
				running++
				break
			}
		}
	}
	if running != len(models) {
		return "", fmt.Errorf("%d of the serving tasks of %v running", running, models)
	}
	return fmt.Sprintf("%d models serving in containers (%s: live and standby)", running, strings.Join(models, ", ")), nil
}

// seedEvents appends n events to the database under stateDir.
func seedEvents(ctx context.Context, stateDir string, n int) error {
	s, err := storage.Open(stateDir, storage.Options{LockTimeout: time.Second})
	if err != nil {
		return err
	}
	// Seeding is set-up, not the figure: batches of events per transaction.
	const batch = 5000
	for i := 0; i < n; i += batch {
		err := s.Update(ctx, func(tx *storage.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				if _, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "bench.seed", Pipeline: daemonPipelines[0],
					Details: map[string]string{"i": strconv.Itoa(j)}}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return errors.Join(err, s.Close())
		}
	}
	return s.Close()
}

// startKilnd starts kilnd on root and times exec -> READY=1 on a private
// NOTIFY_SOCKET, the same signal systemd waits for.
func startKilnd(ctx context.Context, kilnd, root string) (float64, *exec.Cmd, error) {
	sockDir, err := os.MkdirTemp("", "kbn")
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = os.RemoveAll(sockDir) }() // best-effort cleanup
	notifyPath := filepath.Join(sockDir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = conn.Close() }() // listening side only; nothing to flush
	cmd := exec.CommandContext(ctx, kilnd, "--root", root)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	logf, err := os.Create(filepath.Join(root, "kilnd.log"))
	if err != nil {
		return 0, nil, err
	}
	// kilnd writes the log through its own copy of the descriptor; closing
	// ours loses nothing.
	defer func() { _ = logf.Close() }()
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	buf := make([]byte, 4096)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			_ = stopKilnd(cmd)
			log, _ := os.ReadFile(logf.Name())
			return 0, nil, fmt.Errorf("no READY=1 from kilnd: %v; log: %s", err, lastLine(string(log)))
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			return float64(time.Since(t0).Microseconds()) / 1000, cmd, nil
		}
	}
}

func stopKilnd(cmd *exec.Cmd) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kilnd exit: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("kilnd did not stop within 30s of SIGTERM")
	}
}

// procCPU is the process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(fields[11], 10, 64)
	st, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clkTck = 100 // USER_HZ on Linux
	ticks := ut + st
	if ticks > math.MaxInt64/uint64(time.Second) {
		return 0, fmt.Errorf("implausible CPU time in /proc/%d/stat: %d ticks", pid, ticks)
	}
	return time.Duration(ticks) * time.Second / clkTck, nil
}

// procRSS is VmRSS from /proc/PID/status, in bytes.
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
