package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	Identity                 Identity
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
	if _, err := r.Train(ctx, TrainSpec{Common: Common{ID: s.ID, Image: testboxRef, LogFile: s.Log, Labels: s.Identity.Labels(),
		Args: []string{"lines", "20", "100ms", "7"}}, Workspace: s.Workspace, RunID: "p/r7"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	select {}
}

// TestReadoptAfterKilndDies SIGKILLs the process that started a task, then
// a fresh Runtime re-adopts it with its log and exit code, removes an
// unwanted container of its own installation, and leaves alone those of
// another installation: one unwanted, one holding a wanted name.
func TestReadoptAfterKilndDies(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 2*time.Minute)
	dir := scratch(t)
	// Every test's containers share the namespace; a fresh installation
	// makes them all foreign to this one.
	mine := Identity{Installation: uniqueID("install-a"), Digest: "sha256:0a0a0a0a"}
	spec := childSpec{Addr: r.Address(), ID: uniqueID("adopt"), Log: filepath.Join(dir, "log"), Workspace: filepath.Join(dir, "ws"), Identity: mine}
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

	sleeper := func(id string, labels map[string]string) {
		t.Helper()
		cleanupTask(t, r, id)
		st, err := r.Train(ctx, TrainSpec{Common: Common{ID: id, Image: testboxRef, LogFile: filepath.Join(dir, id+".log"),
			Labels: labels, Args: []string{"sleep", "1m"}}, Workspace: filepath.Join(dir, id)})
		if err != nil {
			t.Fatal(err)
		}
		st.Detach()
	}
	// An unwanted container of this installation, left by nobody; one of
	// another installation; and one of another installation under a name
	// this one wants.
	stray := uniqueID("stray")
	sleeper(stray, Identity{Installation: mine.Installation, Digest: "sha256:0b0b0b0b"}.Labels())
	other := Identity{Installation: uniqueID("install-b"), Digest: mine.Digest}
	alien := uniqueID("alien")
	sleeper(alien, other.Labels())
	squatter := uniqueID("squat")
	sleeper(squatter, other.Labels())

	if _, err := r.Adopt(ctx, squatter, mine); !errors.Is(err, ErrForeign) {
		t.Errorf("Adopt(%s of another installation) = %v; want ErrForeign", squatter, err)
	}
	want := map[string]Identity{spec.ID: mine, "t-gone-1": mine, squatter: mine}
	rep, err := r.Reconcile(ctx, mine.Installation, want, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Running) != 1 || rep.Running[0].ID() != spec.ID {
		t.Fatalf("Reconcile() running = %v; want %s", rep.Running, spec.ID)
	}
	if !slices.ContainsFunc(rep.Vanished, func(v Vanished) bool { return v.ID == "t-gone-1" && v.Exit == nil }) {
		t.Errorf("Reconcile() vanished = %+v; want t-gone-1 without an exit", rep.Vanished)
	}
	if !slices.ContainsFunc(rep.Vanished, func(v Vanished) bool { return v.ID == squatter && strings.Contains(v.Reason, other.Installation) }) {
		t.Errorf("Reconcile() vanished = %+v; want %s, held by installation %s", rep.Vanished, squatter, other.Installation)
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
	// reported with its exit status; the foreign containers stay, running.
	rep, err = r.Reconcile(ctx, mine.Installation, map[string]Identity{spec.ID: mine}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Removed, stray) || slices.Contains(rep.Removed, alien) || slices.Contains(rep.Removed, squatter) {
		t.Errorf("Reconcile(grace 0) removed = %v; want %s alone of this test's", rep.Removed, stray)
	}
	if !slices.Contains(rep.Foreign, alien) || !slices.Contains(rep.Foreign, squatter) {
		t.Errorf("Reconcile(grace 0) foreign = %v; want %s and %s", rep.Foreign, alien, squatter)
	}
	if !slices.ContainsFunc(rep.Vanished, func(v Vanished) bool { return v.ID == spec.ID && v.Exit != nil && v.Exit.Code == 7 }) {
		t.Errorf("Reconcile() vanished = %+v; want %s with exit 7", rep.Vanished, spec.ID)
	}
	all, err := r.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{alien, squatter} {
		i := slices.IndexFunc(all, func(c Container) bool { return c.ID == id })
		if i < 0 || !all[i].Foreign(mine.Installation) || all[i].Identity != other {
			t.Errorf("Containers() = %+v; want %s listed, foreign, with identity %+v", all, id, other)
			continue
		}
		if st := taskStatus(ctx, t, r, id); st != "running" {
			t.Errorf("foreign %s is %s after two reconciles; want it running, untouched", id, st)
		}
	}
}

// taskStatus is a container's task status as containerd reports it.
func taskStatus(ctx context.Context, t *testing.T, r *Runtime, id string) string {
	t.Helper()
	ctr, _, err := r.loadContainer(ctx, id)
	if err != nil {
		return err.Error()
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return err.Error()
	}
	st, err := task.Status(ctx)
	if err != nil {
		return err.Error()
	}
	return string(st.Status)
}
