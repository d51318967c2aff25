package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/daemon/pipeline/pipelinetest"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

type harness struct {
	t     *testing.T
	dir   string
	store *storage.Store
	rt    *pipelinetest.Runtime
	eps   *pipelinetest.Endpoints
	mgr   *pipeline.Manager
	stop  context.CancelFunc
	seed  uint64

	clockMu sync.Mutex
	skew    time.Duration // added to the wall clock: tests step past monitor.cooldown
}

// now is the clock of the store and the Manager.
func (h *harness) now() time.Time {
	h.clockMu.Lock()
	defer h.clockMu.Unlock()
	return time.Now().Add(h.skew)
}

// advance moves the clock on by d.
func (h *harness) advance(d time.Duration) {
	h.clockMu.Lock()
	h.skew += d
	h.clockMu.Unlock()
}

const irisSpec = `name: iris
data: {format: csv, label: y}
train: {image: kiln.local/t:1, hyperparameters: {quality: %s}, retries: %d}
serve: {image: kiln.local/s:1}
evaluate: {gate: {min: 0.7}}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

// person is a command from uid 0, as the API sends it.
func person(p string) pipeline.Request {
	return pipeline.Request{Pipeline: p, Actor: "uid:0", Trigger: pipeline.TriggerManual}
}

func spec(t *testing.T, quality string, retries int) *config.Pipeline {
	t.Helper()
	p, err := config.ParsePipeline("iris.yaml", []byte(fmt.Sprintf(irisSpec, quality, retries)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{t: t, dir: dir, rt: pipelinetest.NewRuntime(dir), eps: &pipelinetest.Endpoints{}}
	h.store = storagetest.OpenAt(t, dir+"/state", storage.Options{Now: h.now})
	return h
}

// start runs a Manager (a "kilnd") over the harness's store and runtime.
func (h *harness) start(specs ...*config.Pipeline) {
	h.t.Helper()
	paths := config.NewPaths(h.dir, "")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h.eps = &pipelinetest.Endpoints{} // a new kilnd opens its endpoints anew
	h.mgr = pipeline.New(pipeline.Deps{Store: h.store, Runtime: h.rt, Endpoints: h.eps, GPUs: pipelinetest.NoGPUs{}, Paths: paths, Log: log, Now: h.now})
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = func() { cancel(); h.mgr.Wait() }
	h.t.Cleanup(h.stop)
	set := map[string]*config.Pipeline{}
	for _, s := range specs {
		set[s.Name] = s
	}
	h.mgr.Start(ctx, set)
}

// addData drops n labelled rows of two well-separated classes, as ingest
// would record them: train and holdout parts and a dataset.accepted event.
// hardRow is a row of class b deep in class a's cluster, unique to each
// version and put in both its train and holdout parts (as rows 0 and 1):
// only a model trained on that version gets it right, so a model trained on
// more versions is strictly better on the same holdout, as the gate
// demands (a tie does not promote).
func hardRow(seed uint64) string {
	return fmt.Sprintf("%.3f,-3.000,b\n", -3-float64(seed)/100)
}

// addData records n labelled rows as a data version with its dataset.accepted event.
func (h *harness) addData(n int) string {
	h.t.Helper()
	tr, ho := h.labelledParts(n, 7, 5, false)
	ctx := context.Background()
	var id string
	err := h.store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted,
			Rows: int64(n), Train: &tr, Holdout: &ho})
		if err != nil {
			return err
		}
		id = d.ID
		_, err = tx.Append(storage.Event{Actor: "kilnd", Kind: "dataset.accepted", Pipeline: "iris", Refs: []string{d.ID}})
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// labelledParts stores n labelled rows of two well-separated classes (flip
// swaps the classes' places) as a train and a holdout part, every holdEvery-th
// row held out; rows 0 and 1 are the version's hard row (see hardRow). stream
// keeps addData's and addFeedback's random rows apart.
func (h *harness) labelledParts(n int, stream uint64, holdEvery int, flip bool) (tr, ho storage.BlobRef) {
	h.t.Helper()
	h.seed++
	rng := rand.New(rand.NewPCG(h.seed, stream))
	var train, hold strings.Builder
	train.WriteString("x1,x2,y\n")
	hold.WriteString("x1,x2,y\n")
	for i := range n {
		y, c := "a", 0.0
		if i%2 == 1 {
			y, c = "b", 5.0
		}
		if flip {
			c = 5 - c
		}
		row := fmt.Sprintf("%.3f,%.3f,%s\n", c+rng.NormFloat64(), c+rng.NormFloat64(), y)
		if i < 2 {
			row = hardRow(h.seed)
		}
		if i%holdEvery == 0 {
			hold.WriteString(row)
		} else {
			train.WriteString(row)
		}
	}
	ctx := context.Background()
	tr, err := h.store.PutBlob(ctx, strings.NewReader(train.String()))
	if err != nil {
		h.t.Fatal(err)
	}
	if ho, err = h.store.PutBlob(ctx, strings.NewReader(hold.String())); err != nil {
		h.t.Fatal(err)
	}
	return tr, ho
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	h.t.Fatalf("timed out waiting for %s; events: %s", what, h.events())
}

func (h *harness) events() string {
	evs, _ := h.store.Events(0, 1000)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind+strings.Join(e.Refs, ","))
	}
	return strings.Join(kinds, " ")
}

func (h *harness) live() string {
	if e := h.eps.Get("iris"); e != nil {
		return e.LiveModel()
	}
	return ""
}

func (h *harness) model(id string) storage.Model {
	h.t.Helper()
	m, err := h.store.Model(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) runs() []storage.Run {
	var rs []storage.Run
	_ = h.store.View(func(tx *storage.Tx) (err error) { rs, err = tx.Runs("iris"); return err })
	return rs
}

func TestDataToLiveThenBetterAndWorseCandidates(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))

	h.addData(200)
	h.waitFor("first model live", func() bool { return h.live() == "iris/m1" })
	m1 := h.model("iris/m1")
	if m1.State != storage.ModelLive || m1.Metrics["accuracy"] < 0.9 || m1.Trainer["train_rows"] != 1 {
		t.Errorf("m1 = %s metrics %v trainer %v; want live with accuracy >= 0.9 measured by kilnd", m1.State, m1.Metrics, m1.Trainer)
	}

	// More data: a candidate as good as live on the same rows replaces it
	// (min_improvement 0), and m1 stays warm as standby.
	h.addData(200)
	h.waitFor("second model live", func() bool { return h.live() == "iris/m2" })
	if m := h.model("iris/m1"); m.State != storage.ModelStandby {
		t.Errorf("m1 after m2 went live = %s; want standby", m.State)
	}
	if m := h.model("iris/m2"); m.Metrics["live_accuracy"] == 0 {
		t.Errorf("m2 metrics %v lack the live model's score on the same rows", m.Metrics)
	}
	if got := plain(h.rt.Serving()); !slices.Equal(got, []string{"kiln-serve-iris-m1", "kiln-serve-iris-m2"}) {
		t.Errorf("serving containers = %v; want live and standby", got)
	}

	// A worse trainer: the candidate is rejected and the live model untouched.
	h.mgr.Apply(map[string]*config.Pipeline{"iris": spec(t, "bad", 0)})
	time.Sleep(50 * time.Millisecond) // let the controller take the new spec
	h.addData(200)
	h.waitFor("third model rejected", func() bool {
		m, err := h.store.Model("iris/m3")
		return err == nil && m.State == storage.ModelRejected
	})
	if m := h.model("iris/m3"); !strings.Contains(m.Reason, "below the gate's min") {
		t.Errorf("m3 reason = %q; want the gate's verdict", m.Reason)
	}
	if h.live() != "iris/m2" {
		t.Errorf("live after a rejected candidate = %s; want iris/m2", h.live())
	}
	h.waitFor("rejected candidate's container stopped", func() bool { return !slices.Contains(plain(h.rt.Serving()), "kiln-serve-iris-m3") })
}

func TestTrainingFailuresKeepLiveModel(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 1))
	h.addData(100)
	h.waitFor("first model live", func() bool { return h.live() == "iris/m1" })

	// A trainer that exits non-zero is retried once (train.retries: 1); the
	// retry writes no model. Both failures are recorded; m1 stays live.
	h.rt.FailNext("exit")
	h.addData(100)
	h.waitFor("a failed run and its retry", func() bool {
		return len(h.runs()) == 3 && h.runs()[2].State != storage.RunRunning && h.runs()[2].State != storage.RunQueued
	})
	rs := h.runs()
	if rs[1].State != storage.RunFailed || !strings.Contains(rs[1].Reason, "trainer exited 2: bad input") {
		t.Errorf("run 2 = %s %q; want failed with the trainer's failure file", rs[1].State, rs[1].Reason)
	}
	if rs[2].Labels["retry_of"] != rs[1].ID || rs[2].State != storage.RunSucceeded {
		t.Errorf("run 3 = %s labels %v; want a successful retry of %s", rs[2].State, rs[2].Labels, rs[1].ID)
	}

	h.rt.FailNext("nomodel")
	h.mgr.Apply(map[string]*config.Pipeline{"iris": spec(t, "good", 0)})
	time.Sleep(50 * time.Millisecond)
	h.addData(100)
	h.waitFor("a run without a model", func() bool {
		rs := h.runs()
		return len(rs) >= 4 && rs[len(rs)-1].State == storage.RunFailed
	})
	if r := h.runs()[len(h.runs())-1]; !strings.Contains(r.Reason, "wrote no model") {
		t.Errorf("last run reason %q; want 'wrote no model'", r.Reason)
	}
	if h.live() == "" {
		t.Error("the live model was disturbed by failed runs")
	}
}

func TestRestartMidTrainingReattaches(t *testing.T) {
	h := newHarness(t)
	release := h.rt.HoldTraining()
	h.start(spec(t, "good", 0))
	h.addData(100)
	h.waitFor("training container started", func() bool { return slices.Contains(plain(h.rt.Started()), "kiln-train-iris-r1") })

	h.stop() // kilnd stops; the training "container" keeps running
	if rs := h.runs(); rs[0].State != storage.RunRunning {
		t.Fatalf("run after kilnd stopped = %s; want still running", rs[0].State)
	}
	release()
	h.start(spec(t, "good", 0))
	h.waitFor("model live after restart", func() bool { return h.live() == "iris/m1" })
	if n := strings.Count(strings.Join(plain(h.rt.Started()), " "), "kiln-train-iris-r1"); n != 1 {
		t.Errorf("training container started %d times; want once, re-attached after restart", n)
	}

	// Another restart: the live model's container is re-adopted, not restarted.
	h.stop()
	h.start(spec(t, "good", 0))
	h.waitFor("endpoint serving after restart", func() bool { return h.live() == "iris/m1" })
	if n := strings.Count(strings.Join(plain(h.rt.Started()), " "), "kiln-serve-iris-m1"); n != 1 {
		t.Errorf("serving container started %d times; want once, re-adopted", n)
	}
}

// TestRestartRunWithoutContainerTrainsAgain: kilnd dies after recording a
// run as running and its container is gone at the next start (never
// created, or removed once it exited): the run trains again instead of
// failing with nothing wrong with it (found by the crash harness).
func TestRestartRunWithoutContainerTrainsAgain(t *testing.T) {
	h := newHarness(t)
	release := h.rt.HoldTraining()
	h.start(spec(t, "good", 0))
	h.addData(100)
	h.waitFor("training container started", func() bool { return slices.Contains(plain(h.rt.Started()), "kiln-train-iris-r1") })
	h.stop()
	h.rt.VanishTraining()
	release()
	h.start(spec(t, "good", 0))
	h.waitFor("model live after restart", func() bool { return h.live() == "iris/m1" })
	if rs := h.runs(); len(rs) != 1 || rs[0].State != storage.RunSucceeded {
		t.Errorf("runs after the restart = %+v; want the one run, succeeded", rs)
	}
	if n := strings.Count(strings.Join(plain(h.rt.Started()), " "), "kiln-train-iris-r1"); n != 2 {
		t.Errorf("training container started %d times; want twice (again after the restart)", n)
	}
}

func TestManualRollbackPinAndCancel(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	h.addData(100)
	h.waitFor("m1 live", func() bool { return h.live() == "iris/m1" })
	h.addData(100)
	h.waitFor("m2 live", func() bool { return h.live() == "iris/m2" })
	ctx := context.Background()

	if err := h.mgr.Rollback(ctx, person("iris"), ""); err != nil {
		t.Fatal(err)
	}
	if h.live() != "iris/m1" || h.model("iris/m2").State != storage.ModelRolledBack || h.model("iris/m1").State != storage.ModelLive {
		t.Errorf("after rollback: live %s, m1 %s, m2 %s; want m1 live, m2 rolled_back", h.live(), h.model("iris/m1").State, h.model("iris/m2").State)
	}
	if err := h.mgr.Rollback(ctx, person("iris"), ""); err == nil {
		t.Error("a second rollback with no standby succeeded")
	}

	// Pin m2: it goes live and automation stops: new data trains, but the
	// candidate is not promoted.
	if err := h.mgr.Pin(ctx, person("iris"), "iris/m2"); err != nil {
		t.Fatal(err)
	}
	if h.live() != "iris/m2" {
		t.Fatalf("live after pin = %s; want iris/m2", h.live())
	}
	h.addData(100)
	h.waitFor("m3 rejected while pinned", func() bool {
		m, err := h.store.Model("iris/m3")
		return err == nil && m.State == storage.ModelRejected && strings.Contains(m.Reason, "pinned")
	})
	if err := h.mgr.Promote(ctx, person(""), "iris/m3", false); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Errorf("promote while pinned = %v; want a refusal naming the pin", err)
	}
	if err := h.mgr.Unpin(ctx, person("iris")); err != nil {
		t.Fatal(err)
	}
	// Through the gate: m3 is as good as live, so it is promoted.
	if err := h.mgr.Promote(ctx, person(""), "iris/m3", false); err != nil {
		t.Fatalf("promote m3: %v", err)
	}
	if h.live() != "iris/m3" {
		t.Errorf("live after promote = %s; want iris/m3", h.live())
	}

	// Cancel a run in flight.
	defer h.rt.HoldTraining()()
	tk, err := h.mgr.Train(ctx, person("iris"))
	if err != nil {
		t.Fatal(err)
	}
	run := tk.Run
	h.waitFor("run running", func() bool { r, _ := h.store.Run(run); return r.State == storage.RunRunning })
	if err := h.mgr.Cancel(ctx, person(""), run); err != nil {
		t.Fatal(err)
	}
	if r, _ := h.store.Run(run); r.State != storage.RunCancelled || r.Reason != "cancelled by uid:0" {
		t.Errorf("cancelled run = %s %q", r.State, r.Reason)
	}
}

// TestRestartMidEvaluation: kilnd stops while a candidate is being
// evaluated (its server not ready yet); the next kilnd re-adopts the
// candidate's container, evaluates it again and promotes it.
func TestRestartMidEvaluation(t *testing.T) {
	h := newHarness(t)
	releaseReady := h.rt.HoldReady()
	h.start(spec(t, "good", 0))
	h.addData(100)
	h.waitFor("candidate evaluating", func() bool {
		m, err := h.store.Model("iris/m1")
		return err == nil && m.State == storage.ModelEvaluating
	})
	h.stop()
	releaseReady()
	h.start(spec(t, "good", 0))
	h.waitFor("the candidate live after restart", func() bool { return h.live() == "iris/m1" })
	if n := strings.Count(strings.Join(plain(h.rt.Started()), " "), "kiln-serve-iris-m1"); n != 1 {
		t.Errorf("candidate's serving container started %d times; want once, re-adopted", n)
	}
	if m := h.model("iris/m1"); m.Metrics["accuracy"] < 0.9 {
		t.Errorf("m1 metrics after re-evaluation = %v", m.Metrics)
	}
}
