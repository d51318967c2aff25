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

// benchPipelines are the two specs the idle figures are taken with.
var benchPipelines = map[string]string{
	"pumps": `name: pumps
data: {format: csv, label: condition}
train: {image: kiln.local/tabular-trainer:1}
serve: {image: kiln.local/tabular-server:1}
`,
	"fans": `name: fans
data: {format: csv, label: state}
train: {image: kiln.local/tabular-trainer:1}
serve: {image: kiln.local/tabular-server:1}
`,
}

// benchDaemon takes BENCH.md's daemon figures: start -> READY with a
// 1M-event database, then RSS and CPU after a minute idle with 2 pipelines.
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
	kilnd := filepath.Join(opt.Bin, "kilnd")
	if _, err := os.Stat(kilnd); err != nil {
		return fail(fmt.Sprintf("no %s (run make build): %v", kilnd, err))
	}
	root, err := os.MkdirTemp("/var/tmp", "kb")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(root) }() // best-effort cleanup of scratch state

	events, idle := 1_000_000, 60*time.Second
	if opt.Quick {
		events, idle = 20_000, 5*time.Second
	}
	paths := config.NewPaths(root, "")
	if err := seedDaemonRoot(ctx, paths, events); err != nil {
		return fail("seed state: " + err.Error())
	}
	// A full prediction log for one pipeline, as a daemon that has served
	// for a while has: written through a real endpoint (see monitor.go).
	predictions := 1_000_000
	if opt.Quick {
		predictions = 20_000
	}
	scratch, err := os.MkdirTemp("", "kbd")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(scratch) }() // best-effort cleanup of the backend's socket
	plog, err := writePredLog(ctx, scratch, filepath.Join(paths.StateDir, "predictions"), "pumps", predictions)
	if err != nil {
		return fail("seed the prediction log: " + err.Error())
	}

	const starts = 5
	var readies []float64
	for i := range starts {
		last := i == starts-1
		readyMS, proc, err := startKilnd(ctx, kilnd, root)
		if err != nil {
			return fail(err.Error())
		}
		readies = append(readies, readyMS)
		if !last {
			if err := stopKilnd(proc); err != nil {
				return fail(err.Error())
			}
			continue
		}
		// The last start stays up for the idle figures.
		time.Sleep(5 * time.Second) // let start-up work settle before the idle window
		cpu0, err := procCPU(proc.Process.Pid)
		if err != nil {
			_ = stopKilnd(proc)
			return fail(err.Error())
		}
		// Sampled every tenth of the window, so a figure over its goal
		// shows when in the window the CPU went and how RSS grew.
		var trace []string
		prev, end := cpu0, time.Now().Add(idle)
		for step := idle / 10; time.Now().Before(end); {
			select {
			case <-time.After(min(step, time.Until(end))):
			case <-ctx.Done():
				_ = stopKilnd(proc)
				return fail("interrupted")
			}
			c, err1 := procCPU(proc.Process.Pid)
			r, err2 := procRSS(proc.Process.Pid)
			if err1 == nil && err2 == nil {
				trace = append(trace, fmt.Sprintf("%.0fms/%.1fMB", float64((c-prev).Milliseconds()), float64(r)/(1<<20)))
				prev = c
			}
		}
		cpu1, err1 := procCPU(proc.Process.Pid)
		rss, err2 := procRSS(proc.Process.Pid)
		if err := stopKilnd(proc); err != nil {
			return fail(err.Error())
		}
		if err := errors.Join(err1, err2); err != nil {
			return fail(err.Error())
		}
		cpuPct := (cpu1 - cpu0).Seconds() / idle.Seconds() * 100
		ready := median(readies)
		detail := fmt.Sprintf("%d pipelines, %d-event database, a full prediction log for pumps in <state>/predictions/: %s",
			len(benchPipelines), events, plog.short())
		return []Figure{
			measured(readyName, ready, "ms", readyGoal, fmt.Sprintf("median of %d starts (%s), %s", starts, fmtMS(readies), detail)),
			measured(rssName, float64(rss)/(1<<20), "MB", rssGoal, fmt.Sprintf("VmRSS after %s idle, %s; CPU/RSS by tenth of the window: %s",
				idle, detail, strings.Join(trace, " "))),
			measured(cpuName, cpuPct, "%", cpuGoal, fmt.Sprintf("utime+stime over %s idle, %s; CPU/RSS by tenth of the window: %s",
				idle, detail, strings.Join(trace, " "))),
		}
	}
	return fail("unreachable")
}

// seedDaemonRoot writes the pipelines and a database holding n events.
func seedDaemonRoot(ctx context.Context, p config.Paths, n int) error {
	if err := os.MkdirAll(p.PipelinesDir, 0o755); err != nil {
		return err
	}
	for name, spec := range benchPipelines {
		if err := os.WriteFile(filepath.Join(p.PipelinesDir, name+".yaml"), []byte(spec), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return err
	}
	s, err := storage.Open(p.StateDir, storage.Options{LockTimeout: time.Second})
	if err != nil {
		return err
	}
	// Seeding is set-up, not the figure: batches of events per transaction.
	const batch = 5000
	for i := 0; i < n; i += batch {
		err := s.Update(ctx, func(tx *storage.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				if _, err := tx.Append(storage.Event{Actor: "kilnd", Kind: "bench.seed", Pipeline: "pumps",
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
