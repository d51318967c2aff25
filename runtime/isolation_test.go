package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// probeEnv makes the test binary a prober: it runs as another local
// account (uid/gid 1000, the first human account on a Debian box), tries
// each probe and prints what happened, then exits before any test runs.
const probeEnv = "KILN_RUNTIME_TEST_PROBE"

type probe struct {
	Name string `json:"name"`
	Op   string `json:"op"` // kill0 | read | write | connect
	Pid  int    `json:"pid,omitempty"`
	Path string `json:"path,omitempty"`
}

func init() {
	if os.Getenv(probeEnv) == "" {
		return
	}
	var ps []probe
	if err := json.Unmarshal([]byte(os.Getenv(probeEnv)), &ps); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := map[string]string{"whoami": fmt.Sprintf("%d:%d %v", os.Getuid(), os.Getgid(), must(os.Getgroups()))}
	for _, p := range ps {
		var err error
		switch p.Op {
		case "kill0":
			err = syscall.Kill(p.Pid, 0)
		case "read":
			_, err = os.ReadFile(p.Path)
		case "write":
			err = os.WriteFile(p.Path, []byte("tampered"), 0o644)
		case "connect":
			var c net.Conn
			if c, err = net.Dial("unix", p.Path); err == nil {
				_ = c.Close()
			}
		default:
			err = errors.New("unknown probe op " + p.Op)
		}
		out[p.Name] = "ok"
		if err != nil {
			out[p.Name] = err.Error()
		}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	os.Exit(0)
}

func must[T any](v T, _ error) T { return v }

// asLocalUser runs the probes as uid/gid 1000 with no supplementary groups
// and returns each probe's outcome ("ok" or the error).
func asLocalUser(t *testing.T, ps []probe) map[string]string {
	t.Helper()
	// The test binary sits in go's private build folder; uid 1000 runs a
	// copy from a folder it may enter.
	bin := filepath.Join(scratchOpen(t), "prober")
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ps)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{probeEnv + "=" + string(b)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("prober as uid 1000: %v: %s", err, out)
	}
	res := map[string]string{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("prober said %q: %v", out, err)
	}
	if res["whoami"] != "1000:1000 []" {
		t.Fatalf("prober ran as %s; want 1000:1000 and no groups", res["whoami"])
	}
	t.Logf("as uid 1000: %v", res)
	return res
}

// scratchOpen is a scratch folder any account may enter, as /var/lib/kiln
// (0755) is: what keeps other accounts out must be kiln's own doing.
func scratchOpen(t *testing.T) string {
	t.Helper()
	dir := scratch(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitFile waits until path exists (a task wrote it).
func waitFile(t *testing.T, path string, task *Task) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-task.Exited():
			t.Fatalf("%s exited before writing %s", task.ID(), path)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workloads are a serving task on a socket and a training task that holds
// a secret in its model folder, in folders any account may enter up to
// kiln's own; either may be absent.
type workloads struct {
	train, serve *Task
	ws, sock     string
}

func startServer(t *testing.T, r *Runtime, w *workloads) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	dir := scratchOpen(t)
	modelDir := filepath.Join(dir, "model")
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(modelDir, "model.json"), []byte(`{"weights":[1]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sid := uniqueID("iso-serve")
	cleanupTask(t, r, sid)
	srv := ServeSpec{Common: Common{ID: sid, Image: testboxRef, LogFile: filepath.Join(dir, "serve.log"), Args: []string{"serve-sock"}},
		ModelDir: modelDir, SocketDir: filepath.Join(dir, "s")}
	var err error
	if w.serve, err = r.Serve(ctx, srv); err != nil {
		t.Fatal(err)
	}
	w.sock = srv.SocketPath()
	if err := w.serve.WaitReady(ctx, "/ping"); err != nil {
		t.Fatal(err)
	}
}

func startTrainer(t *testing.T, r *Runtime, w *workloads) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	w.ws = filepath.Join(scratchOpen(t), "ws")
	tid := uniqueID("iso-train")
	cleanupTask(t, r, tid)
	var err error
	if w.train, err = r.Train(ctx, TrainSpec{Common: Common{ID: tid, Image: testboxRef, LogFile: filepath.Join(w.ws, "train.log"),
		Args: []string{"hold", "/opt/ml/model/secret", "weights"}}, Workspace: w.ws}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(w.ws, "model", "secret"), w.train)
}

func (w *workloads) probes() []probe {
	var ps []probe
	if w.serve != nil {
		sp := int(w.serve.Pid())
		ps = append(ps,
			probe{Name: "signal server", Op: "kill0", Pid: sp},
			probe{Name: "read served model via /proc", Op: "read", Path: fmt.Sprintf("/proc/%d/root/opt/ml/model/model.json", sp)},
			probe{Name: "connect serve.sock", Op: "connect", Path: w.sock})
	}
	if w.train != nil {
		tp := int(w.train.Pid())
		ps = append(ps,
			probe{Name: "signal trainer", Op: "kill0", Pid: tp},
			probe{Name: "read trained model via /proc", Op: "read", Path: fmt.Sprintf("/proc/%d/root/opt/ml/model/secret", tp)},
			probe{Name: "write run output via /proc", Op: "write", Path: fmt.Sprintf("/proc/%d/root/opt/ml/output/x", tp)},
			probe{Name: "read run model", Op: "read", Path: filepath.Join(w.ws, "model", "secret")},
			probe{Name: "write run model", Op: "write", Path: filepath.Join(w.ws, "model", "x")},
			probe{Name: "write run output", Op: "write", Path: filepath.Join(w.ws, "output", "x")},
			probe{Name: "read run log", Op: "read", Path: filepath.Join(w.ws, "train.log")})
	}
	return ps
}

func (w *workloads) stop(t *testing.T) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	for _, task := range []*Task{w.train, w.serve} {
		if task == nil {
			continue
		}
		if _, err := task.Stop(ctx, 5*time.Second); err != nil {
			t.Error(err)
		}
		if err := task.Delete(ctx); err != nil {
			t.Error(err)
		}
	}
	*w = workloads{}
}

// TestLocalAccountCannotReachWorkloads is issue 18's second local account:
// uid 1000, outside every kiln group, tries to signal the serving and
// training processes, read their models through /proc/PID/root, talk to the
// model's socket around the endpoint, and read or tamper with the run's
// folders. Every try must fail. The /proc and socket probes against a
// container that runs as uid 1000 (what kiln did before workload ids)
// succeed, so the probes can tell.
func TestLocalAccountCannotReachWorkloads(t *testing.T) {
	r := newTestRuntime(t)
	var w workloads
	startServer(t, r, &w)
	startTrainer(t, r, &w)
	su, _ := w.serve.UID()
	tu, _ := w.train.UID()
	if !DefaultIDRange.contains(su) || !DefaultIDRange.contains(tu) || su == tu {
		t.Errorf("server uid %d, trainer uid %d; want two different ids of %s", su, tu, DefaultIDRange)
	}
	ps := w.probes()
	res := asLocalUser(t, ps)
	for _, p := range ps {
		if res[p.Name] == "ok" {
			t.Errorf("uid 1000 could %s", p.Name)
		} else if !strings.Contains(res[p.Name], "permission denied") && !strings.Contains(res[p.Name], "operation not permitted") {
			t.Errorf("%s: %s; want permission denied", p.Name, res[p.Name])
		}
	}
	if b, err := os.ReadFile(filepath.Join(w.ws, "model", "secret")); err != nil || string(b) != "weights" {
		t.Errorf("run's model = %q, %v; want it untouched", b, err)
	}
	ws := w.ws
	w.stop(t)
	// Deleted, the trainer's id is free again and owns nothing on disk.
	_ = filepath.WalkDir(ws, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st := info.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s is %d:%d after its container was deleted; want root's", path, st.Uid, st.Gid)
			}
		}
		return nil
	})

	// The control: one workload at a time under uid 1000 itself, as before.
	asUser, err := New(r.Address(), testNamespace, r.log, WithIDRange(IDRange{First: 1000, Count: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = asUser.Close() }) // after the tasks' cleanups, which run first
	for _, start := range []func(*testing.T, *Runtime, *workloads){startServer, startTrainer} {
		start(t, asUser, &w)
		res = asLocalUser(t, w.probes())
		for _, name := range []string{"signal server", "read served model via /proc", "connect serve.sock",
			"signal trainer", "read trained model via /proc", "write run output via /proc"} {
			if got, ok := res[name]; ok && got != "ok" {
				t.Errorf("control (workload as uid 1000): %s: %s; want ok, else the probe proves nothing", name, got)
			}
		}
		w.stop(t)
	}
}

// TestTrainingJobConfined is issue 13's check from inside a training job
// that runs beside another: no network but lo, no way to write the host,
// no capabilities, and another run's data unreadable even when its folder
// is mounted in by mistake (the workload ids differ; under one shared uid,
// as before, the read succeeded).
func TestTrainingJobConfined(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, time.Minute)
	dir := scratch(t)
	peerID := uniqueID("peer")
	cleanupTask(t, r, peerID)
	peer, err := r.Train(ctx, TrainSpec{Common: Common{ID: peerID, Image: testboxRef, LogFile: filepath.Join(dir, "peer.log"),
		Args: []string{"hold", "/opt/ml/output/secret", "peer data"}}, Workspace: filepath.Join(dir, "peer")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = peer.Stop(ctx, 5*time.Second); _ = peer.Delete(ctx) }()
	waitFile(t, filepath.Join(dir, "peer", "output", "secret"), peer)
	own := filepath.Join(dir, "own")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := runDiagSpec(t, r, TrainSpec{Common: Common{
		Env: map[string]string{"DIAG_READ": "/opt/ml/input/data/peer/secret", "DIAG_WRITE": "/opt/ml/input/data/own/x",
			"DIAG_DIAL": "192.0.2.1:80"}},
		Channels: map[string]string{"peer": filepath.Join(dir, "peer", "output"), "own": own}})
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := peer.UID()
	if d.UID == int(pu) || !DefaultIDRange.contains(uint32(d.UID)) || d.GID != d.UID {
		t.Errorf("job uid:gid %d:%d, peer uid %d; want its own workload id of %s for both", d.UID, d.GID, pu, DefaultIDRange)
	}
	if !strings.Contains(d.Read, "permission denied") {
		t.Errorf("reading the peer run's output: %q; want permission denied", d.Read)
	}
	if !slices.Equal(d.Interfaces, []string{"lo"}) || !strings.Contains(d.Dial, "network is unreachable") {
		t.Errorf("interfaces %v, dial 192.0.2.1:80: %q; want only lo, network unreachable", d.Interfaces, d.Dial)
	}
	if d.RootfsWritable || d.ConfigWritable || !strings.Contains(d.Write, "read-only file system") {
		t.Errorf("rootfs writable %v, config writable %v, write to a data channel: %q; want no writes to the host", d.RootfsWritable, d.ConfigWritable, d.Write)
	}
	if d.CapEff != "0000000000000000" || d.CapBnd != "0000000000000000" || d.NoNewPrivs != "1" {
		t.Errorf("CapEff %s CapBnd %s NoNewPrivs %s; want no capabilities, none to gain", d.CapEff, d.CapBnd, d.NoNewPrivs)
	}
	if !slices.Equal(d.Pids, []string{"1"}) {
		t.Errorf("processes visible: %v; want only its own", d.Pids)
	}
}

// TestWorkloadIDsPerContainer starts containers at once through two
// runtimes (two kilnds on one containerd allocate without talking to each
// other): every container gets an id of its own, and an id is free again
// once its container is gone.
func TestWorkloadIDsPerContainer(t *testing.T) {
	r1 := newTestRuntime(t)
	r2, err := New(r1.Address(), testNamespace+"-2", r1.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r2.Close() }) // after the tasks' cleanups, which run first
	importFile(t, r2, archives.testbox.File)
	ctx := testCtx(t, time.Minute)
	dir := scratch(t)
	var mu sync.Mutex
	tasks := map[string]*Task{}
	var wg sync.WaitGroup
	for i := range 6 {
		r := []*Runtime{r1, r2}[i%2]
		id := uniqueID(fmt.Sprintf("ids%d", i))
		cleanupTask(t, r, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			task, err := r.Train(ctx, TrainSpec{Common: Common{ID: id, Image: testboxRef, LogFile: filepath.Join(dir, id+".log"),
				Args: []string{"sleep", "1m"}}, Workspace: filepath.Join(dir, id)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			tasks[id] = task
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	byUID := map[uint32]string{}
	for id, task := range tasks {
		uid, ok := task.UID()
		if !ok || !DefaultIDRange.contains(uid) {
			t.Errorf("%s: uid %d, %v; want a workload id", id, uid, ok)
		}
		if other, dup := byUID[uid]; dup {
			t.Errorf("%s and %s both hold uid %d", id, other, uid)
		}
		byUID[uid] = id
		if st, err := os.Stat(filepath.Join(dir, id, "model")); err != nil || st.Sys().(*syscall.Stat_t).Uid != uid || st.Mode().Perm() != 0o700 {
			t.Errorf("%s model folder: %v, %v; want mode 0700 owned by uid %d", id, st.Mode(), err, uid)
		}
	}
	// Free the lowest id; the next container takes it.
	low := slices.Min(slices.Collect(func(yield func(uint32) bool) {
		for u := range byUID {
			if !yield(u) {
				return
			}
		}
	}))
	lowID := byUID[low]
	if err := tasks[lowID].r.Remove(ctx, lowID); err != nil {
		t.Fatal(err)
	}
	delete(tasks, lowID)
	next := uniqueID("ids-next")
	cleanupTask(t, r1, next)
	task, err := r1.Train(ctx, TrainSpec{Common: Common{ID: next, Image: testboxRef, LogFile: filepath.Join(dir, "next.log"),
		Args: []string{"sleep", "1m"}}, Workspace: filepath.Join(dir, next)})
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := task.UID(); u != low {
		t.Errorf("after removing the holder of %d, the next container got %d; want %d", low, u, low)
	}
	for _, task := range tasks {
		_, _ = task.Stop(ctx, time.Second)
	}
	_, _ = task.Stop(ctx, time.Second)
}

// TestCheckIDRange: a local account or a subordinate range inside the
// workload range is named with its file and line; this machine has none.
func TestCheckIDRange(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	passwd := write("passwd", "root:x:0:0::/root:/bin/sh\n# note\nalice:x:1879048200:1000::/home/alice:/bin/sh\n")
	group := write("group", "kiln:x:999:\n")
	subuid := write("subuid", "alice:100000:65536\nbob:1879000000:100000\n")
	got, err := CheckIDRange(DefaultIDRange, passwd, group, subuid, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{passwd + ":3: alice has id 1879048200", subuid + ":2: bob may map ids 1879000000-1879099999"}
	if !slices.Equal(got, want) {
		t.Errorf("CheckIDRange() = %q; want %q", got, want)
	}
	got, err = CheckIDRange(DefaultIDRange, "/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")
	if err != nil || len(got) != 0 {
		t.Errorf("this machine: %q, %v; want no account in %s", got, err, DefaultIDRange)
	}
	if _, err := New("/nonexistent.sock", "x", nil, WithIDRange(IDRange{First: 0, Count: 10})); !errors.Is(err, ErrBadSpec) {
		t.Errorf("a range with uid 0: %v; want ErrBadSpec", err)
	}
}

// TestSysusersNamesWorkloadBlock keeps the package's sysusers.d entry and
// the allocator on the same block.
func TestSysusersNamesWorkloadBlock(t *testing.T) {
	b, err := os.ReadFile("../packaging/sysusers.d/kiln.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`u kiln-workloads %d "kiln workload ids %s, one per container"`, WorkloadIDBase, DefaultIDRange)
	if !strings.Contains(string(b), want) || DefaultIDRange.First != WorkloadIDBase+1 {
		t.Errorf("packaging/sysusers.d/kiln.conf lacks %s (the block after the base id %d)", want, WorkloadIDBase)
	}
}

// TestRemoveHandsFoldersBack: a container removed by ID (the sweep's and
// gc's path, which never made a Task of it) hands its workload id's folders
// back to root as Task.Delete does, so the id, free again, owns nothing.
func TestRemoveHandsFoldersBack(t *testing.T) {
	r := newTestRuntime(t)
	var w workloads
	startTrainer(t, r, &w)
	w.train.Detach()
	if err := r.Remove(testCtx(t, 30*time.Second), w.train.ID()); err != nil {
		t.Fatal(err)
	}
	owned := 0
	_ = filepath.WalkDir(w.ws, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		if info, err := d.Info(); err == nil {
			owned++
			if st := info.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s is %d:%d after Remove; want root's", path, st.Uid, st.Gid)
			}
		}
		return nil
	})
	if owned < 3 {
		t.Fatalf("walked %d entries of %s; the check would be vacuous", owned, w.ws)
	}
}
