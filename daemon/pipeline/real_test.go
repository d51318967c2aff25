package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/daemon/pipeline/pipelinetest"
	"github.com/kiln-edge/kiln/daemon/serve"
	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// needReal skips t without a private containerd and root, or fails it
// under KILN_REQUIRE_REAL=1, which CI sets so these tests never silently skip.
func needReal(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	why := ""
	switch {
	case addr == "":
		why = "KILN_TEST_CONTAINERD is not set: run with .ci/with-containerd (as root), which starts a private containerd"
	case os.Geteuid() != 0:
		why = "containers, mounts and leases need root"
	}
	if why != "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatalf("KILN_REQUIRE_REAL=1 but %s", why)
		}
		t.Skip(why)
	}
	return addr
}

// containers is the test's twin of the daemon's adapter (daemon/containers.go)
// from pipeline.Runtime to package runtime: the same specs, no supervision.
type containers struct {
	rt      *runtime.Runtime
	sockets string
}

var _ pipeline.Runtime = (*containers)(nil)

func (c *containers) Resolve(ctx context.Context, ref string) (string, error) {
	return c.rt.Resolve(ctx, ref)
}

func (c *containers) trainSpec(job pipeline.TrainJob) runtime.TrainSpec {
	return runtime.TrainSpec{
		Common: runtime.Common{ID: job.ContainerID, Image: job.Image, Pipeline: job.Pipeline, Env: job.Env, LogFile: job.LogPath,
			Labels:    runtime.Identity{Installation: job.Installation, Digest: job.Digest}.Labels(),
			Resources: runtime.Resources{MemoryBytes: job.Resources.Memory, CPUs: job.Resources.CPUs, Pids: job.Resources.Pids}},
		Workspace: job.Workspace, Channels: job.Channels, Hyperparameters: job.Hyperparameters,
		JobName: job.Env["TRAINING_JOB_NAME"], RunID: job.Run, Dataset: job.Env["KILN_DATASET"], Timeout: job.Timeout, Grace: time.Second,
	}
}

func (c *containers) StartTraining(ctx context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	s := c.trainSpec(job)
	t, err := c.rt.Train(ctx, s)
	if err != nil {
		return nil, err
	}
	return training{t, s}, nil
}

func (c *containers) AttachTraining(ctx context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	t, err := c.rt.Adopt(ctx, job.ContainerID, runtime.Identity{Installation: job.Installation, Digest: job.Digest})
	if err != nil {
		return nil, err
	}
	return training{t, c.trainSpec(job)}, nil
}

type training struct {
	t    *runtime.Task
	spec runtime.TrainSpec
}

func (tr training) Wait(ctx context.Context) (pipeline.TrainResult, error) {
	exit, err := tr.t.Wait(ctx)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	res := pipeline.TrainResult{ExitCode: int(exit.Code), OOM: exit.OOM, TimedOut: exit.TimedOut, Failure: exit.Failure,
		ModelDir: tr.spec.ModelDir(), OutputDir: tr.spec.OutputDir()}
	return res, tr.t.Delete(context.WithoutCancel(ctx))
}

func (tr training) Cancel(ctx context.Context) error {
	_, err := tr.t.Stop(ctx, time.Second)
	return err
}

func (c *containers) serveSpec(job pipeline.ServeJob) runtime.ServeSpec {
	return runtime.ServeSpec{
		Common: runtime.Common{ID: job.ContainerID, Image: job.Image, Pipeline: job.Pipeline, LogFile: job.LogPath,
			Labels:    runtime.Identity{Installation: job.Installation, Digest: job.Digest}.Labels(),
			Resources: runtime.Resources{MemoryBytes: job.Resources.Memory, CPUs: job.Resources.CPUs, Pids: job.Resources.Pids}},
		ModelDir: job.ModelDir, ModelID: job.Model, SocketDir: filepath.Join(c.sockets, job.ContainerID),
	}
}

func (c *containers) StartServing(ctx context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	s := c.serveSpec(job)
	if err := os.MkdirAll(s.SocketDir, 0o755); err != nil {
		return nil, err
	}
	t, err := c.rt.Serve(ctx, s)
	if err != nil {
		return nil, err
	}
	return serving{t, job.Model}, nil
}

func (c *containers) AttachServing(ctx context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	t, err := c.rt.Adopt(ctx, job.ContainerID, runtime.Identity{Installation: job.Installation, Digest: job.Digest})
	if err != nil {
		return nil, err
	}
	select {
	case <-t.Exited():
		_ = t.Delete(context.WithoutCancel(ctx))
		return nil, errors.New("serving container exited")
	default:
	}
	return serving{t, job.Model}, nil
}

type serving struct {
	t     *runtime.Task
	model string
}

func (s serving) Model() string                                     { return s.model }
func (s serving) DialContext(ctx context.Context) (net.Conn, error) { return s.t.DialContext(ctx) }
func (s serving) Ready(ctx context.Context) error                   { return s.t.WaitReady(ctx, "/ping") }
func (s serving) Stop(ctx context.Context) error {
	if _, err := s.t.Stop(ctx, time.Second); err != nil {
		return err
	}
	return s.t.Delete(ctx)
}

// realEndpoints opens real serve.Endpoints on unix sockets.
type realEndpoints struct {
	dir string
	mu  sync.Mutex
	eps map[string]*serve.Endpoint
}

type realEndpoint struct{ ep *serve.Endpoint }

func (e realEndpoint) Start() {}
func (e realEndpoint) Flip(b pipeline.Backend) pipeline.Backend {
	if prev := e.ep.Flip(b); prev != nil {
		return prev
	}
	return nil
}
func (e realEndpoint) Live() pipeline.Backend {
	if b := e.ep.Live(); b != nil {
		return b
	}
	return nil
}
func (e realEndpoint) WaitIdle(ctx context.Context, model string) error {
	return e.ep.WaitIdle(ctx, model)
}

func (r *realEndpoints) Open(spec *config.Pipeline) (pipeline.Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ep, ok := r.eps[spec.Name]; ok {
		return realEndpoint{ep}, nil
	}
	ep, err := serve.New(serve.Options{Pipeline: spec.Name, Protocol: spec.Serve.Protocol, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", filepath.Join(r.dir, spec.Name+".sock"))
	if err != nil {
		return nil, err
	}
	go func() { _ = ep.Serve(l) }()
	r.eps[spec.Name] = ep
	return realEndpoint{ep}, nil
}

func (r *realEndpoints) Close(p string) error {
	r.mu.Lock()
	ep := r.eps[p]
	delete(r.eps, p)
	r.mu.Unlock()
	if ep == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ep.Shutdown(ctx)
}

const realSpec = `name: cancer
data: {format: csv, label: diagnosis}
train:
  image: kiln.local/tabular-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
serve:
  image: kiln.local/tabular-server:1
  resources: {memory: 256Mi}
  standby: stop
evaluate: {gate: {min: 0.8}}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
monitor: {cooldown: 1s}
`

// TestRealAutomaticRollback drives the automatic rollback path with real
// containers and the real endpoint: the example trainer makes m1 and m2
// from two batches of the breast cancer data, m2 goes live with m1 its
// standby (serve.standby: stop, so stopped); the monitor's EnsureStandby
// starts m1's container, a stale alarm is void, and the real alarm's
// rollback flips the endpoint to m1 under load with no failed request,
// m2 rolled_back, its batch suspect and its container stopped.
func TestRealAutomaticRollback(t *testing.T) {
	addr := needReal(t)
	dir, err := os.MkdirTemp("", "kr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	const ns = "kiln-test-pipeline"
	rt, err := runtime.New(addr, ns, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	built, err := images.BuildAll(ctx, filepath.Join(dir, "images"), images.Examples)
	if err != nil {
		t.Fatalf("build the example images: %v", err)
	}
	for _, b := range built {
		f, err := os.Open(b.File)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rt.Import(ctx, f, nil)
		_ = f.Close()
		if err != nil {
			t.Fatalf("import %s: %v", b.File, err)
		}
	}

	store := storagetest.OpenAt(t, filepath.Join(dir, "state"), storage.Options{})
	sockets := filepath.Join(dir, "s")
	eps := &realEndpoints{dir: dir, eps: map[string]*serve.Endpoint{}}
	mgr := pipeline.New(pipeline.Deps{Store: store, Runtime: &containers{rt: rt, sockets: sockets}, Endpoints: eps,
		GPUs: pipelinetest.NoGPUs{}, Paths: config.NewPaths(dir, ""), Log: log})
	sp, err := config.ParsePipeline("cancer.yaml", []byte(realSpec))
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	mgr.Start(mctx, map[string]*config.Pipeline{"cancer": sp})
	t.Cleanup(func() {
		stop()
		mgr.Wait()
		// Stop what the pipeline left serving; containers outlive a Manager.
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		for _, model := range []string{"cancer/m1", "cancer/m2"} {
			if _, err := store.Model(model); err != nil {
				continue
			}
			id, ident := servingID(t, store, model)
			if task, err := rt.Adopt(sctx, id, ident); err == nil {
				_, _ = task.Stop(sctx, time.Second)
				_ = task.Delete(sctx)
			}
		}
		_ = eps.Close("cancer")
	})

	data, err := os.ReadFile("../../examples/tabular/data/breast_cancer.csv")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	header, rows := lines[0], lines[1:]
	addBatch := func(rows []string) {
		var train, hold strings.Builder
		train.WriteString(header + "\n")
		hold.WriteString(header + "\n")
		for i, r := range rows {
			if i%5 == 0 {
				hold.WriteString(r + "\n")
			} else {
				train.WriteString(r + "\n")
			}
		}
		tr, err := store.PutBlob(ctx, strings.NewReader(train.String()))
		if err != nil {
			t.Fatal(err)
		}
		ho, err := store.PutBlob(ctx, strings.NewReader(hold.String()))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Update(ctx, func(tx *storage.Tx) error {
			d, err := tx.CreateDataset(storage.Dataset{Pipeline: "cancer", Kind: storage.KindData, State: storage.DatasetAccepted,
				Rows: int64(len(rows)), Train: &tr, Holdout: &ho})
			if err != nil {
				return err
			}
			_, err = tx.Append(storage.Event{Actor: "kilnd", Kind: "dataset.accepted", Pipeline: "cancer", Refs: []string{d.ID}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitModel := func(id string) storage.Model {
		t.Helper()
		for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if m, err := store.Model(id); err == nil && m.State != storage.ModelCandidate && m.State != storage.ModelEvaluating {
				return m
			}
		}
		t.Fatalf("timed out waiting for %s to be evaluated", id)
		return storage.Model{}
	}
	person := pipeline.Request{Pipeline: "cancer", Actor: "uid:0"}

	half := len(rows) / 2
	addBatch(rows[:half])
	if m := waitModel("cancer/m1"); m.State != storage.ModelLive {
		t.Fatalf("m1 = %s %q; want live", m.State, m.Reason)
	}
	addBatch(rows[half:])
	if m := waitModel("cancer/m2"); m.State != storage.ModelLive {
		// As good as m1 or not: a person puts it live, as kiln promote --force.
		if err := mgr.Promote(ctx, person, "cancer/m2", true); err != nil {
			t.Fatalf("promote m2 (%s %q): %v", m.State, m.Reason, err)
		}
	}
	if live := mgr.Live("cancer"); live != "cancer/m2" {
		t.Fatalf("live = %s; want cancer/m2", live)
	}
	time.Sleep(1100 * time.Millisecond) // monitor.cooldown: 1s

	// Load on the endpoint through the whole switch.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(dir, "cancer.sock"))
	}}}
	feature := func(r string) string { // the row without its label (the last column)
		return r[:strings.LastIndexByte(r, ',')]
	}
	var sent, failed atomic.Int64
	var lastFail atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; loadCtx.Err() == nil; i += 4 {
				resp, err := hc.Post("http://cancer/invocations", "text/csv", strings.NewReader(feature(rows[i%len(rows)])+"\n"))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					lastFail.Store(err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					lastFail.Store(fmt.Sprintf("%d %s", resp.StatusCode, body))
				}
			}
		}()
	}

	// The monitor: standby started for a replay, a stale alarm void, the rollback.
	b, err := mgr.EnsureStandby(ctx, "cancer")
	if err != nil || b.Model() != "cancer/m1" {
		t.Fatalf("EnsureStandby = %v, %v; want m1's backend", b, err)
	}
	alarm := pipeline.Request{Pipeline: "cancer", Actor: pipeline.ActorKilnd, Trigger: pipeline.TriggerMonitor, Reason: "standby better",
		Details: map[string]string{"p_value": "0.001"}}
	if err := mgr.Rollback(ctx, alarm, "cancer/m1"); !errors.Is(err, pipeline.ErrStale) {
		t.Errorf("rollback about m1 (not live) = %v; want ErrStale", err)
	}
	if err := mgr.Rollback(ctx, alarm, "cancer/m2"); err != nil {
		t.Fatalf("automatic rollback: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // requests on the new live model
	stopLoad()
	wg.Wait()
	if n := failed.Load(); n != 0 || sent.Load() < 20 {
		t.Errorf("%d of %d requests failed across the rollback (last: %v); want none of at least 20", n, sent.Load(), lastFail.Load())
	}
	if live := mgr.Live("cancer"); live != "cancer/m1" {
		t.Errorf("live after the rollback = %s; want cancer/m1", live)
	}
	if m, _ := store.Model("cancer/m2"); m.State != storage.ModelRolledBack {
		t.Errorf("m2 = %s; want rolled_back", m.State)
	}
	if d, _ := store.Dataset("cancer/d2"); d.Suspect != "cancer/m2" {
		t.Errorf("d2 suspect = %q; want cancer/m2", d.Suspect)
	}
	deadline := time.Now().Add(time.Minute)
	m2ctr, m2id := servingID(t, store, "cancer/m2")
	for {
		task, err := rt.Adopt(ctx, m2ctr, m2id)
		if err != nil {
			break // gone
		}
		select {
		case <-task.Exited():
		default:
			if time.Now().After(deadline) {
				t.Fatal("m2's serving container still runs a minute after the rollback")
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		break
	}
	t.Logf("%d requests through the rollback, none failed", sent.Load())
}
