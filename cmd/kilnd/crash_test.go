package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/kiln-edge/kiln/daemon/crashpoint"
	kruntime "github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// crashSpec is the rollback scenario's pipeline (autoSpec) with the
// smallest retention allowed, so GC has the fewest models to keep.
var crashSpec = autoSpec + "retention: {models: 2}\n"

// crashStep is one stage of the scenario: act once, then (in the crash
// run) kill kilnd at each named crash point in turn and at random moments,
// then let it settle.
type crashStep struct {
	name   string
	act    func(c *crashRun)
	points []string
	random int // kills after a random delay
	done   func(c *crashRun) bool
}

// crashRun drives one kilnd root through the scenario, with or without
// kills, and checks the invariants after every kill and restart.
type crashRun struct {
	t         *testing.T
	addr, ns  string
	root      string
	k         *kilnd
	rng       *rand.Rand
	data      cancerRows
	dropped   map[string]string // path in a drop folder -> sha256 of its content
	kills     int
	byPoint   map[string]int
	maxAnswer time.Duration
}

// TestCrashAnywhere is issue 13's crash harness: the rollback scenario
// (data, training, evaluation, promotion, a corrupted batch promoted,
// labelled feedback, the monitor's rollback, GC) runs once uninterrupted as
// the reference, then again with kilnd SIGKILLed at >= 50 points: at each
// named crash point (KILN_CRASHPOINT, see daemon/crashpoint) and after
// seeded random delays. After every kill the store's event chain verifies,
// every acknowledged file is in exactly one dataset version and no GPU
// lease outlives its run; after every restart the endpoint answers within
// a second; when each step settles, containerd holds exactly the
// containers, snapshots and mounts the records want; at the end the state
// is the reference's. KILN_CRASH_SEED replays a seed; KILN_CRASH_LOGDIR
// keeps every killed kilnd's log there.
func TestCrashAnywhere(t *testing.T) {
	addr := containerdAddr(t)
	needRoot(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KILN_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("KILN_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("crash seed %d (replay with KILN_CRASH_SEED=%d)", seed, seed)
	t0 := time.Now()
	// Namespaces of their own: runc keeps task state per namespace outside
	// the private containerd's folders, and a run killed before its clean-up
	// would leave names a fixed namespace collides with.
	ns := "kiln-test-crash-" + strconv.Itoa(os.Getpid())
	ref := newCrashRun(t, addr, ns+"-ref", seed)
	ref.play(false)
	want := ref.final()
	t.Logf("reference run: %s; %+v", time.Since(t0).Round(time.Second), want)

	t1 := time.Now()
	c := newCrashRun(t, addr, ns, seed)
	c.play(true)
	got := c.final()
	t.Logf("crash run: %d kills in %s, by point %v; endpoint answered %s at most after READY",
		c.kills, time.Since(t1).Round(time.Second), c.byPoint, c.maxAnswer.Round(time.Millisecond))
	if c.kills < 50 {
		t.Errorf("%d kills; want at least 50", c.kills)
	}
	if !slices.Equal(got.datasets, want.datasets) {
		t.Errorf("accepted dataset digests after crashes:\n%v\nwant the reference's\n%v", got.datasets, want.datasets)
	}
	if got.live != want.live {
		t.Errorf("live model files digest %s; want the reference's %s", got.live, want.live)
	}
	if fmt.Sprint(got.states) != fmt.Sprint(want.states) {
		t.Errorf("models by state %v; want the reference's %v", got.states, want.states)
	}
	// Stricter than the models: a run lost to a crash (failed, then trained
	// again by the next trigger) would still converge on models.
	if fmt.Sprint(got.runs) != fmt.Sprint(want.runs) {
		t.Errorf("runs by state %v; want the reference's %v", got.runs, want.runs)
	}
}

func newCrashRun(t *testing.T, addr, ns string, seed uint64) *crashRun {
	imgDir, err := exampleImages()
	if err != nil {
		t.Fatalf("build example images: %v", err)
	}
	// A fast GC interval is not needed: GC runs at every start.
	c := &crashRun{t: t, addr: addr, ns: ns, rng: rand.New(rand.NewPCG(seed, 13)), data: loadCancer(t),
		dropped: map[string]string{}, byPoint: map[string]int{}}
	c.root = newRoot(t, "containerd: {address: "+addr+", namespace: "+ns+"}\n")
	writeFile(t, filepath.Join(c.root, "etc/kiln/pipelines/cancer.yaml"), crashSpec)
	t.Cleanup(func() { removeContainers(t, addr, ns) })
	c.k = startKilnd(t, c.root)
	c.k.expect("READY=1")
	if st, err := c.k.client().Status(context.Background()); err != nil || st.Pipelines != 1 {
		t.Fatalf("status = %+v, %v; want the cancer pipeline loaded", st, err)
	}
	c.k.importExamples(t, imgDir)
	return c
}

// The scenario. Feedback is a fixed set of files (not "until it rolls
// back"), so both runs ingest the same versions.
func (c *crashRun) steps() []crashStep {
	ms := func(id, state string) func(*crashRun) bool {
		return func(c *crashRun) bool { return modelsOf(c.t, c.k)[id].State == state }
	}
	return []crashStep{{
		name: "first batch: ingest, train, evaluate, promote",
		act: func(c *crashRun) {
			c.drop("drop", "d1.csv", labelledCSV(c.data.header, c.data.rows[:300], c.data.labels[:300]))
		},
		points: []string{"ingest.after-blob-put", "ingest.after-commit", "train.after-queued", "train.after-run-persisted",
			"train.after-container-start", "train.after-model-blobs", "train.after-candidate", "eval.after-evaluating",
			"eval.after-serving-start", "promote.after-flip"},
		random: 8,
		done:   ms("cancer/m1", "live"),
	}, {
		name: "corrupted batch promoted, the first model standby",
		act: func(c *crashRun) {
			var bad [][]string
			var swapped []string
			for i := 300; i < len(c.data.rows); i++ {
				bad = append(bad, scaled(c.data.rows[i], 1, 1))
				swapped = append(swapped, other(c.data.labels[i]))
			}
			c.drop("drop", "d2.csv", labelledCSV(c.data.header, bad, swapped))
			// The same content again: a duplicate, never a second version.
			c.drop("drop", "d1-again.csv", labelledCSV(c.data.header, c.data.rows[:300], c.data.labels[:300]))
		},
		points: []string{"ingest.after-commit", "train.after-run-persisted", "train.after-container-start",
			"train.after-candidate", "eval.after-serving-start", "promote.after-persist"},
		random: 7,
		done: func(c *crashRun) bool {
			m := modelsOf(c.t, c.k)
			return m["cancer/m2"].State == "live" && m["cancer/m1"].State == "standby"
		},
	}, {
		// The first file is enough for the monitor to roll back (15
		// labels). The rollback happens once: the seed picks the one point
		// of it this run kills at.
		name:   "labelled feedback, the monitor rolls back",
		act:    func(c *crashRun) { c.feedback(0) },
		points: []string{decide},
		random: 6,
		done: func(c *crashRun) bool {
			m := modelsOf(c.t, c.k)
			return m["cancer/m1"].State == "live" && m["cancer/m2"].State == "rolled_back" && c.scored() >= 1
		},
	}, {
		name: "more feedback ingested and scored",
		act: func(c *crashRun) {
			for i := 1; i < 4; i++ {
				c.feedback(i)
			}
		},
		points: []string{"ingest.after-blob-put", "feedback.after-predict", "feedback.after-record"},
		random: 5,
		done:   func(c *crashRun) bool { return c.scored() >= 4 },
	}, {
		name:   "GC",
		act:    func(c *crashRun) {},
		points: []string{"gc.after-store", "gc.after-store"},
		random: 4,
		done: func(c *crashRun) bool {
			_, _, err := c.k.kiln(nil, "gc")
			return err == nil
		},
	}}
}

// decide stands for the rollback's crash point, picked by the seed.
const decide = "decide"

// feedback drops the ith file of labelled rows from the true distribution.
func (c *crashRun) feedback(i int) {
	var rows [][]string
	var labels []string
	for j := range 50 {
		r := (i*50 + j) % 300
		rows = append(rows, scaled(c.data.rows[r], 1, 10+i))
		labels = append(labels, c.data.labels[r])
	}
	c.drop("feedback", fmt.Sprintf("fb%d.csv", i), labelledCSV(c.data.header, rows, labels))
}

func (c *crashRun) scored() int {
	n := 0
	for _, e := range eventsOf(c.t, c.k) {
		if e.Kind == "feedback.scored" {
			n++
		}
	}
	return n
}

func (c *crashRun) play(crash bool) {
	// The points of the rollback's one switch: the monitor's action
	// recorded, the switch recorded, flipped, its suspect work dropped, the
	// rolled-back container's stop.
	rollback := []string{"rollback.after-persist", "rollback.after-flip", "rollback.before-drop-suspect-work",
		"promote.before-stop-replaced", "monitor.after-act"}
	pick := rollback[c.rng.IntN(len(rollback))]
	if crash {
		c.t.Logf("the rollback's crash point this run: %s", pick)
	}
	for _, s := range c.steps() {
		for i, p := range s.points {
			if p == decide {
				s.points[i] = pick
			}
		}
		ts := time.Now()
		if !crash {
			s.act(c)
			waitLong(c.t, 3*time.Minute, s.name, func() bool { return s.done(c) })
			c.settled(s.name)
			c.t.Logf("reference step %q: %s", s.name, time.Since(ts).Round(100*time.Millisecond))
			continue
		}
		// Every life of kilnd in this step but the last is killed: the
		// first named point is armed before the step acts, so ingest's
		// points see its files.
		c.restart(s.points[0])
		s.act(c)
		c.lifeEnds(s.points[0])
		for _, p := range s.points[1:] {
			c.restart(p)
			c.lifeEnds(p)
		}
		for range s.random {
			c.restart("")
			c.lifeEnds("")
		}
		c.restart("")
		waitLong(c.t, time.Minute, s.name+" after the crashes", func() bool { return s.done(c) })
		c.settled(s.name)
		c.t.Logf("crash step %q: %s, %d kills so far", s.name, time.Since(ts).Round(100*time.Millisecond), c.kills)
	}
}

// restart stops the current kilnd (killed already, or SIGTERMed when
// alive: the first life of a step) and starts the next one, armed at point.
func (c *crashRun) restart(point string) {
	t := c.t
	if c.k != nil {
		select {
		case <-c.k.done:
			c.k.done <- nil
		default:
			_ = c.k.cmd.Process.Signal(syscall.SIGTERM)
			if err := c.k.wait(); err != nil {
				t.Fatalf("kilnd stop: %v\n%s", err, c.k.stderr)
			}
		}
	}
	if c.k != nil {
		c.k.notify.Close() // ends the reader of readyOrDead
		if dir := os.Getenv("KILN_CRASH_LOGDIR"); dir != "" {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("life%03d.log", c.kills)), c.k.stderr.Bytes(), 0o644)
		}
	}
	live := c.checkDead()
	t.Setenv(crashpoint.EnvVar, point)
	c.k = startKilnd(t, c.root)
	t.Setenv(crashpoint.EnvVar, "")
	ready := c.readyOrDead()
	if !ready || live == "" {
		return
	}
	// The endpoint answers within a second of READY (the live container is
	// re-adopted, not restarted). A kilnd killed by its crash point during
	// this second is no failure of the endpoint.
	hc := endpointClient(filepath.Join(c.root, "run/kiln/serve/cancer.sock"))
	hc.Timeout = time.Second
	t0 := time.Now()
	for !invokeOK(hc, c.data.rows[0]) {
		if c.exited() {
			return
		}
		if time.Since(t0) > time.Second {
			t.Fatalf("endpoint of %s not answering %s after READY (restart %d)", live, time.Since(t0).Round(time.Millisecond), c.kills)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.maxAnswer = max(c.maxAnswer, time.Since(t0))
}

// readyOrDead waits for READY=1 or the process's end (a crash point may
// fire before READY: restore re-runs evaluations). It keeps reading the
// notify socket for the whole life, as systemd does: a queue left full
// (net.unix.max_dgram_qlen, 10 here) would hold kilnd's notifications up.
func (c *crashRun) readyOrDead() bool {
	ready := make(chan struct{})
	go func(conn *net.UnixConn) {
		buf := make([]byte, 4096)
		seen := false
		for {
			_ = conn.SetReadDeadline(time.Time{})
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if !seen && strings.Contains(string(buf[:n]), "READY=1") {
				close(ready)
				seen = true
			}
		}
	}(c.k.notify)
	select {
	case <-ready:
		return true
	case err := <-c.k.done:
		c.k.done <- err
		return false
	case <-time.After(20 * time.Second):
		c.t.Fatalf("kilnd neither READY nor dead after 20s:\n%s", c.k.stderr)
		return false
	}
}

func (c *crashRun) exited() bool {
	select {
	case err := <-c.k.done:
		c.k.done <- err
		return true
	default:
		return false
	}
}

// lifeEnds waits for the armed point to kill kilnd; a point not reached
// within a few seconds, and a life with no point, end by SIGKILL from here
// after a seeded random delay.
func (c *crashRun) lifeEnds(point string) {
	wait := time.Duration(c.rng.Int64N(int64(1500 * time.Millisecond)))
	if point != "" {
		wait = 4 * time.Second
	}
	select {
	case err := <-c.k.done:
		c.k.done <- err
	case <-time.After(wait):
		_ = c.k.cmd.Process.Kill()
		<-c.k.done
		c.k.done <- nil
		c.kills++
		c.byPoint["timer"]++
		c.t.Logf("kill %d: SIGKILL after %s (armed %q)", c.kills, wait.Round(time.Millisecond), point)
		return
	}
	c.kills++
	if point != "" && strings.Contains(c.k.stderr.String(), "crashpoint: "+point) {
		c.byPoint[point]++
		c.t.Logf("kill %d: crash point %s", c.kills, point)
		return
	}
	c.t.Fatalf("kilnd exited by itself (armed %q):\n%s", point, c.k.stderr)
}

// checkDead opens the store of a dead kilnd, as the next one will find it:
// the event chain verifies, every acknowledged file (gone from its drop
// folder) is in exactly one dataset version and no file in two, and every
// GPU lease belongs to a run that may still hold it. It returns the live
// model, if any.
func (c *crashRun) checkDead() (live string) {
	t := c.t
	s, err := storage.Open(filepath.Join(c.root, "var/lib/kiln"), storage.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open the store after kill %d: %v", c.kills, err)
	}
	defer s.Close()
	if err := s.Verify(context.Background()); err != nil {
		t.Fatalf("event chain after kill %d: %v", c.kills, err)
	}
	err = s.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets("cancer")
		if err != nil {
			return err
		}
		for path, digest := range c.dropped {
			var in []string
			for _, d := range ds {
				for _, f := range d.Files {
					if f.Blob.Digest == digest {
						in = append(in, d.ID)
					}
				}
			}
			_, statErr := os.Lstat(path)
			acked := errors.Is(statErr, os.ErrNotExist)
			if len(in) > 1 || acked && len(in) != 1 {
				t.Errorf("after kill %d: %s (acknowledged %v) is in dataset versions %v; want exactly one", c.kills, filepath.Base(path), acked, in)
			}
		}
		runs, err := tx.Runs("cancer")
		if err != nil {
			return err
		}
		leases, err := tx.Leases()
		if err != nil {
			return err
		}
		for _, l := range leases {
			i := slices.IndexFunc(runs, func(r storage.Run) bool { return r.ID == l.Run })
			if i < 0 || (runs[i].State != storage.RunRunning && runs[i].State != storage.RunQueued) {
				t.Errorf("after kill %d: GPU lease %+v outlives its run", c.kills, l)
			}
		}
		deps, err := tx.Deployments("cancer")
		for _, d := range deps {
			if d.State == storage.DeployLive {
				live = d.Model
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("read the store after kill %d: %v", c.kills, err)
	}
	return live
}

// drop renames text into root's drop or feedback folder and remembers its
// digest for the acknowledgement check.
func (c *crashRun) drop(folder, name, text string) {
	dir := filepath.Join(c.root, "var/lib/kiln", folder, "cancer")
	writeFile(c.t, filepath.Join(dir, "."+name+".part"), text)
	if err := os.Rename(filepath.Join(dir, "."+name+".part"), filepath.Join(dir, name)); err != nil {
		c.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(text))
	c.dropped[filepath.Join(dir, name)] = "sha256:" + hex.EncodeToString(sum[:])
}

// settled checks, with the pipeline at rest, that containerd holds exactly
// what the records want: a running serving container for the live and the
// standby model and nothing else of kiln's (no training container, no
// container of a rejected, retired or rolled-back model), no snapshot
// without its container, and no mount of a task that is gone.
func (c *crashRun) settled(step string) {
	t := c.t
	want := map[string]bool{}
	for id, m := range modelsOf(t, c.k) {
		if m.State == "live" || m.State == "standby" {
			want[id] = true
		}
	}
	cl, err := client.New(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := namespaces.WithNamespace(context.Background(), c.ns)
	// Replaced containers stop once their requests drain; give that a moment.
	var got map[string]string
	var keys map[string]bool
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got, keys = map[string]string{}, map[string]bool{}
		ctrs, err := cl.Containers(ctx, `labels."`+kruntime.LabelKind+`"`)
		if err != nil {
			t.Fatalf("list containers: %v", err)
		}
		for _, ctr := range ctrs {
			info, err := ctr.Info(ctx)
			if err != nil {
				continue
			}
			keys[info.SnapshotKey] = true
			who := info.Labels[kruntime.LabelModel]
			if info.Labels[kruntime.LabelKind] == kruntime.KindTrain {
				who = "train " + info.Labels[kruntime.LabelRun]
			}
			state := "no task"
			if task, err := ctr.Task(ctx, nil); err == nil {
				if st, err := task.Status(ctx); err == nil {
					state = string(st.Status)
				}
			}
			got[who] = state
		}
		ok := len(got) == len(want)
		for id := range want {
			ok = ok && got[id] == string(client.Running)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: kiln containers %v; want exactly %v running (records)", step, got, want)
		}
	}
	var orphans []string
	err = cl.SnapshotService(kruntime.DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive && !keys[info.Name] {
			orphans = append(orphans, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk snapshots: %v", err)
	}
	if len(orphans) > 0 {
		t.Errorf("%s: active snapshots without a container: %v", step, orphans)
	}
	if m := c.strayMounts(got); len(m) > 0 {
		t.Errorf("%s: mounts left behind: %v", step, m)
	}
}

// strayMounts lists mounts under the kiln root, and task rootfs mounts in
// this namespace of the private containerd whose container is not running.
func (c *crashRun) strayMounts(running map[string]string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	stateDir := filepath.Join(filepath.Dir(c.addr), "state")
	tasks := filepath.Join(stateDir, "io.containerd.runtime.v2.task", c.ns) + "/"
	cl, err := client.New(c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	ctx := namespaces.WithNamespace(context.Background(), c.ns)
	var stray []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		switch {
		case strings.HasPrefix(mp, c.root+"/"):
			stray = append(stray, mp)
		case strings.HasPrefix(mp, tasks):
			id, _, _ := strings.Cut(strings.TrimPrefix(mp, tasks), "/")
			ctr, err := cl.LoadContainer(ctx, id)
			if err != nil {
				stray = append(stray, mp)
				continue
			}
			if task, err := ctr.Task(ctx, nil); err != nil {
				stray = append(stray, mp)
			} else if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
				stray = append(stray, mp)
			}
		}
	}
	return stray
}

// crashFinal is what the two runs must agree on.
type crashFinal struct {
	datasets []string       // accepted versions' digests, sorted
	live     string         // digest of the live model's files
	states   map[string]int // models by state
	runs     map[string]int // runs by state
}

func (c *crashRun) final() crashFinal {
	_ = c.k.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.k.wait(); err != nil {
		c.t.Fatalf("kilnd stop: %v", err)
	}
	c.checkDead()
	s, err := storage.Open(filepath.Join(c.root, "var/lib/kiln"), storage.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	defer s.Close()
	out := crashFinal{states: map[string]int{}, runs: map[string]int{}}
	err = s.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets("cancer")
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.State == storage.DatasetAccepted {
				out.datasets = append(out.datasets, string(d.Kind)+" "+d.Digest)
			}
		}
		sort.Strings(out.datasets)
		rs, err := tx.Runs("cancer")
		if err != nil {
			return err
		}
		for _, r := range rs {
			out.runs[string(r.State)]++
		}
		ms, err := tx.Models("cancer")
		if err != nil {
			return err
		}
		for _, m := range ms {
			out.states[string(m.State)]++
			if m.State == storage.ModelLive {
				h := sha256.New()
				for _, f := range m.Files {
					fmt.Fprintf(h, "%s %s\n", f.Path, f.Blob.Digest)
				}
				out.live = hex.EncodeToString(h.Sum(nil))
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	for path := range c.dropped {
		if _, err := os.Lstat(path); err == nil {
			c.t.Errorf("%s is still in its drop folder at the end", path)
		}
	}
	return out
}
