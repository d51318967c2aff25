package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const childEnv = "KILN_RUNTIME_TEST_CHILD"

type childSpec struct {
	Addr, ID, Log, Workspace string
}

// childMain is a stand-in kilnd: it starts a training task, says so, and
// waits to be SIGKILLed by the test.
func childMain() int {
	var s childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := New(s.Addr, testNamespace, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	if _, err := r.Train(ctx, TrainSpec{Common: Common{ID: s.ID, Image: testboxRef, LogFile: s.Log,
		Args: []string{"lines", "20", "100ms", "7"}}, Workspace: s.Workspace, RunID: "p/r7"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	select {}
}

// TestReadoptAfterKilndDies SIGKILLs the process that started a task, then
// a fresh Runtime re-adopts it with its log and exit code, and removes an
// unwanted kiln container.
func TestReadoptAfterKilndDies(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 2*time.Minute)
	dir := scratch(t)
	spec := childSpec{Addr: r.Address(), ID: uniqueID("adopt"), Log: filepath.Join(dir, "log"), Workspace: filepath.Join(dir, "ws")}
	cleanupTask(t, r, spec.ID)
	b, _ := json.Marshal(spec)
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+string(b))
	var stderr bytes.Buffer
	child.Stderr = &stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "started" {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("child said %q; stderr:\n%s", line, stderr.String())
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	// An unwanted kiln container, left by nobody.
	stray := uniqueID("stray")
	cleanupTask(t, r, stray)
	st, err := r.Train(ctx, TrainSpec{Common: Common{ID: stray, Image: testboxRef, LogFile: filepath.Join(dir, "stray.log"),
		Args: []string{"sleep", "1m"}}, Workspace: filepath.Join(dir, "stray")})
	if err != nil {
		t.Fatal(err)
	}
	st.Detach()

	// Another test's containers share the namespace: only look at ours.
	rep, err := r.Reconcile(ctx, []string{spec.ID, "t-gone-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Running) != 1 || rep.Running[0].ID() != spec.ID {
		t.Fatalf("Reconcile() running = %v; want %s", rep.Running, spec.ID)
	}
	if !slices.ContainsFunc(rep.Vanished, func(v Vanished) bool { return v.ID == "t-gone-1" && v.Exit == nil }) {
		t.Errorf("Reconcile() vanished = %+v; want t-gone-1 without an exit", rep.Vanished)
	}
	if !slices.Contains(rep.Kept, stray) {
		t.Errorf("Reconcile() kept = %v; want the young stray %s spared by the grace period", rep.Kept, stray)
	}
	task := rep.Running[0]
	if task.Labels()[LabelRun] != "p/r7" {
		t.Errorf("adopted labels = %v", task.Labels())
	}
	exit, err := task.Wait(ctx)
	if err != nil || exit.Code != 7 {
		t.Fatalf("adopted Wait() = %+v, %v; want exit 7", exit, err)
	}
	var log bytes.Buffer
	if err := ReadLog(spec.Log, &log); err != nil || !strings.Contains(log.String(), "line 0\n") || !strings.Contains(log.String(), "line 19\n") {
		t.Errorf("log after re-adoption = %q, %v; want lines 0..19", log.String(), err)
	}

	// With no grace, the stray goes; the finished, still wanted task is
	// reported with its exit status.
	rep, err = r.Reconcile(ctx, append(otherTestContainers(t, r, spec.ID, stray), spec.ID), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Removed, stray) {
		t.Errorf("Reconcile(grace 0) removed = %v; want %s", rep.Removed, stray)
	}
	if !slices.ContainsFunc(rep.Vanished, func(v Vanished) bool { return v.ID == spec.ID && v.Exit != nil && v.Exit.Code == 7 }) {
		t.Errorf("Reconcile() vanished = %+v; want %s with exit 7", rep.Vanished, spec.ID)
	}
}

// otherTestContainers lists the namespace's containers except these, so a
// Reconcile with grace 0 does not remove another test's work.
func otherTestContainers(t *testing.T, r *Runtime, except ...string) []string {
	ids, err := r.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(except, id) })
}

func TestSuperviseRestartsWithBackoff(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, time.Minute)
	dir := scratch(t)
	id := uniqueID("crash")
	cleanupTask(t, r, id)
	task, err := r.Serve(ctx, ServeSpec{Common: Common{ID: id, Image: testboxRef, LogFile: filepath.Join(dir, "log"),
		Args: []string{"crash"}}, ModelDir: dir, SocketDir: filepath.Join(dir, "s")})
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	task.Supervise(ctx, RestartPolicy{MaxRestarts: 2, Backoff: 50 * time.Millisecond}, func(e Event) { events = append(events, e) })
	if len(events) != 3 || !events[0].Restarting || !events[1].Restarting || events[2].Restarting || events[2].Err == nil {
		t.Fatalf("events = %+v; want two restarts, then a give-up", events)
	}
	if events[0].Exit.Code != 3 || events[1].Delay != 100*time.Millisecond {
		t.Errorf("events = %+v; want exit 3 and a doubled delay", events)
	}
	var log bytes.Buffer
	_ = ReadLog(task.LogFile(), &log)
	if n := strings.Count(log.String(), "crashing"); n != 3 {
		t.Errorf("log has %d crashes; want 3: %q", n, log.String())
	}
	if err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}
