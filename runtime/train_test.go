package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/examples/tabular/model"
)

// TestTrainAndServeExample trains the example on the shipped dataset minus
// every fifth row, serves the model through its socket and through TCP 8080
// in its own netns, and scores the held-back rows through the server.
func TestTrainAndServeExample(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 3*time.Minute)
	dir := scratch(t)

	data, err := os.ReadFile("../examples/tabular/data/breast_cancer.csv")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	train := []string{lines[0]}
	var holdout, holdY []string
	for i, l := range lines[1:] {
		if i%5 == 0 {
			cut := strings.LastIndex(l, ",")
			holdout, holdY = append(holdout, l[:cut]), append(holdY, l[cut+1:])
		} else {
			train = append(train, l)
		}
	}
	channel := filepath.Join(dir, "train")
	if err := os.MkdirAll(channel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(channel, "part-0.csv"), []byte(strings.Join(train, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	id := uniqueID("train")
	cleanupTask(t, r, id)
	ws := filepath.Join(dir, "ws")
	task, err := r.Train(ctx, TrainSpec{
		Common:          Common{ID: id, Image: images_trainerRef(), Pipeline: "bc", LogFile: filepath.Join(dir, "train.log"), Resources: Resources{MemoryBytes: 256 << 20, CPUs: 1, Pids: 64}},
		Workspace:       ws,
		Channels:        map[string]string{"train": channel},
		Hyperparameters: map[string]string{"label": "diagnosis"},
		RunID:           "bc/r1", Dataset: "bc/d1", Timeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	exit, err := task.Wait(ctx)
	var log bytes.Buffer
	_ = ReadLog(task.LogFile(), &log)
	if err != nil || !exit.OK() {
		t.Fatalf("training Wait() = %+v, %v; log:\n%s", exit, err, log.String())
	}
	if !strings.Contains(log.String(), "validation accuracy") {
		t.Errorf("training log = %q; want the trainer's summary", log.String())
	}
	if task.Labels()[LabelRun] != "bc/r1" || task.Labels()[LabelImage] != archives.trainer.Digest {
		t.Errorf("labels = %v; want the run and the image digest", task.Labels())
	}
	if err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	var met map[string]float64
	if b, err := os.ReadFile(filepath.Join(ws, "output", "metrics.json")); err != nil || json.Unmarshal(b, &met) != nil {
		t.Fatalf("metrics.json: %v", err)
	}
	modelDir := filepath.Join(ws, "model")
	if _, err := model.Load(filepath.Join(modelDir, "model.json")); err != nil {
		t.Fatal(err)
	}

	// Serve through a socket in a bind-mounted folder.
	sid := uniqueID("serve-sock")
	cleanupTask(t, r, sid)
	srv, err := r.Serve(ctx, ServeSpec{Common: Common{ID: sid, Image: archives.server.Ref, Pipeline: "bc",
		LogFile: filepath.Join(dir, "serve.log")}, ModelDir: modelDir, SocketDir: filepath.Join(dir, "s"), ModelID: "bc/m1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitReady(ctx, "/ping"); err != nil {
		t.Fatal(err)
	}
	body := strings.Join(holdout, "\n") + "\n"
	got := post(t, srv.HTTPClient(), "/invocations", "text/csv", body)
	preds := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(preds) != len(holdY) {
		t.Fatalf("%d predictions for %d rows: %q", len(preds), len(holdY), got)
	}
	ok := 0
	for i := range preds {
		if preds[i] == holdY[i] {
			ok++
		}
	}
	acc := float64(ok) / float64(len(holdY))
	t.Logf("accuracy through the serving container on %d unseen rows: %.4f (trainer's validation accuracy %.4f)", len(holdY), acc, met["validation_accuracy"])
	if acc < 0.9 {
		t.Errorf("accuracy on unseen rows = %.3f; want >= 0.9", acc)
	}

	// The same model over TCP 8080 in the container's own netns (the
	// server binds all addresses there; nothing is published on the host).
	tid := uniqueID("serve-tcp")
	cleanupTask(t, r, tid)
	tcp, err := r.Serve(ctx, ServeSpec{Common: Common{ID: tid, Image: archives.server.Ref, Pipeline: "bc",
		LogFile: filepath.Join(dir, "tcp.log")}, ModelDir: modelDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := tcp.WaitReady(ctx, "/v2/health/ready"); err != nil {
		t.Fatal(err)
	}
	row := strings.Split(holdout[0], ",")
	req := `{"inputs":[{"name":"input","shape":[1,` + strconv.Itoa(len(row)) + `],"datatype":"FP64","data":[` + holdout[0] + `]}]}`
	v2 := post(t, tcp.HTTPClient(), "/v2/models/bc/infer", "application/json", req)
	if !strings.Contains(v2, `"data":["`+preds[0]+`"]`) {
		t.Errorf("v2 infer = %s; want label %s", v2, preds[0])
	}
	if c, err := http.Get("http://127.0.0.1:8080/ping"); err == nil {
		c.Body.Close()
		t.Logf("note: something on the host answers 127.0.0.1:8080 (not the container)")
	}
	for _, s := range []*Task{srv, tcp} {
		exit, err := s.Stop(ctx, 5*time.Second)
		if err != nil || exit.Code != 0 || !exit.Stopped {
			t.Errorf("Stop(%s) = %+v, %v; want a clean stop on SIGTERM", s.ID(), exit, err)
		}
		if err := s.Delete(ctx); err != nil {
			t.Error(err)
		}
	}
}

func images_trainerRef() string { return archives.trainer.Ref }

func post(t *testing.T, hc *http.Client, path, ct, body string) string {
	t.Helper()
	resp, err := hc.Post("http://task"+path, ct, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}

type diagOut struct {
	UID            int               `json:"uid"`
	GID            int               `json:"gid"`
	CapEff         string            `json:"CapEff"`
	CapBnd         string            `json:"CapBnd"`
	NoNewPrivs     string            `json:"NoNewPrivs"`
	Seccomp        string            `json:"Seccomp"`
	RootfsWritable bool              `json:"rootfs_writable"`
	RootfsOptions  string            `json:"rootfs_options"`
	TmpWritable    bool              `json:"tmp_writable"`
	ConfigWritable bool              `json:"config_writable"`
	Interfaces     []string          `json:"interfaces"`
	Env            map[string]string `json:"env"`
	Dev            []string          `json:"dev"`
	Read           string            `json:"read"`
	Hyper          string            `json:"hyperparameters"`
	Write          string            `json:"write"`
	Dial           string            `json:"dial"`
	Pids           []string          `json:"pids"`
}

// runDiag runs testbox diag as a training task and decodes what it saw.
func runDiag(t *testing.T, r *Runtime, c Common) (diagOut, error) {
	t.Helper()
	return runDiagSpec(t, r, TrainSpec{Common: c})
}

// runDiagSpec is runDiag with the rest of a TrainSpec (channels).
func runDiagSpec(t *testing.T, r *Runtime, s TrainSpec) (diagOut, error) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	dir := scratch(t)
	c := s.Common
	c.ID, c.Image, c.LogFile, c.Args = uniqueID("diag"), testboxRef, filepath.Join(dir, "log"), []string{"diag"}
	cleanupTask(t, r, c.ID)
	s.Common, s.Workspace, s.Hyperparameters, s.RunID, s.Dataset, s.JobName = c, filepath.Join(dir, "ws"), map[string]string{"k": "v"}, "p/r1", "p/d3", "job-1"
	task, err := r.Train(ctx, s)
	if err != nil {
		return diagOut{}, err
	}
	defer task.Delete(ctx)
	exit, err := task.Wait(ctx)
	var log bytes.Buffer
	_ = ReadLog(task.LogFile(), &log)
	if err != nil || !exit.OK() {
		t.Fatalf("diag Wait() = %+v, %v; log:\n%s", exit, err, log.String())
	}
	var d diagOut
	if err := json.Unmarshal(log.Bytes(), &d); err != nil {
		t.Fatalf("diag output %q: %v", log.String(), err)
	}
	return d, nil
}

func TestHardeningVisibleInside(t *testing.T) {
	r := newTestRuntime(t)
	d, err := runDiag(t, r, Common{Resources: Resources{Pids: 32}})
	if err != nil {
		t.Fatal(err)
	}
	if !DefaultIDRange.contains(uint32(d.UID)) || d.CapEff != "0000000000000000" || d.NoNewPrivs != "1" || d.Seccomp != "2" {
		t.Errorf("uid %d CapEff %s NoNewPrivs %s Seccomp %s; want a workload id (%s), 0000000000000000, 1, 2", d.UID, d.CapEff, d.NoNewPrivs, d.Seccomp, DefaultIDRange)
	}
	if !strings.HasPrefix(d.RootfsOptions, "ro,") {
		t.Errorf("rootfs mount options %q; want ro", d.RootfsOptions)
	}
	if d.RootfsWritable || !d.TmpWritable || d.ConfigWritable {
		t.Errorf("rootfs writable %v, /tmp writable %v, config writable %v; want false, true, false", d.RootfsWritable, d.TmpWritable, d.ConfigWritable)
	}
	if !slices.Equal(d.Interfaces, []string{"lo"}) {
		t.Errorf("interfaces = %v; want only lo", d.Interfaces)
	}
	want := map[string]string{"TRAINING_JOB_NAME": "job-1", "KILN_RUN_ID": "p/r1", "KILN_DATASET": "p/d3"}
	for k, v := range want {
		if d.Env[k] != v {
			t.Errorf("env %s = %q; want %q", k, d.Env[k], v)
		}
	}
	if !strings.Contains(d.Hyper, `"k": "v"`) {
		t.Errorf("hyperparameters.json = %q", d.Hyper)
	}

	// Relaxing names one default and leaves the rest.
	d, err = runDiag(t, r, Common{Relax: []Relax{RelaxWritableRootfs}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.RootfsOptions, "rw,") || !DefaultIDRange.contains(uint32(d.UID)) || d.Seccomp != "2" {
		t.Errorf("relaxed writable-rootfs: rootfs %q uid %d seccomp %s; want rw, a workload id, 2", d.RootfsOptions, d.UID, d.Seccomp)
	}
	if _, err := runDiag(t, r, Common{Relax: []Relax{"everything"}}); !errors.Is(err, ErrBadSpec) {
		t.Errorf("unknown relaxation: %v; want ErrBadSpec", err)
	}
}

func TestLimitsOOMTimeoutStopFailure(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 2*time.Minute)
	start := func(name string, c Common, timeout time.Duration) *Task {
		t.Helper()
		dir := scratch(t)
		c.ID, c.Image, c.LogFile = uniqueID(name), testboxRef, filepath.Join(dir, "log")
		cleanupTask(t, r, c.ID) //nolint:contextcheck // runs at test cleanup, after ctx ended: it makes its own
		task, err := r.Train(ctx, TrainSpec{Common: c, Workspace: filepath.Join(dir, "ws"), Timeout: timeout, Grace: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}

	hog := start("hog", Common{Args: []string{"hog"}, Resources: Resources{MemoryBytes: 48 << 20}}, 0)
	sleeper := start("sleep", Common{Args: []string{"sleep", "1m"}, Resources: Resources{MemoryBytes: 32 << 20, Pids: 20}}, 0)
	stubborn := start("stubborn", Common{Args: []string{"sleep", "1m", "ignore-term"}}, time.Second)
	failing := start("fail", Common{Args: []string{"fail", "bad", "data"}}, 0)

	if exit, err := hog.Wait(ctx); err != nil || !exit.OOM || exit.Code != 137 {
		t.Errorf("memory hog: Wait() = %+v, %v; want OOM, exit 137", exit, err)
	} else if !strings.Contains(exit.Reason(), "OOM") {
		t.Errorf("Reason() = %q", exit.Reason())
	}

	time.Sleep(200 * time.Millisecond)
	m, err := sleeper.Metrics(ctx)
	if err != nil {
		t.Errorf("Metrics() = %v", err)
	} else if m.MemoryLimitBytes != 32<<20 || m.PidsLimit != 20 || m.Pids == 0 {
		t.Errorf("Metrics() = %+v; want the 32 MiB limit, pids limit 20", m)
	}
	exit, err := sleeper.Stop(ctx, 5*time.Second)
	if err != nil || !exit.Stopped || exit.Code != 0 || exit.OK() {
		t.Errorf("Stop() = %+v, %v; want Stopped, exit 0 (it handles SIGTERM)", exit, err)
	}

	exit, err = stubborn.Wait(ctx)
	if err != nil || !exit.TimedOut || exit.Code != 137 {
		t.Errorf("timeout: Wait() = %+v, %v; want TimedOut and SIGKILL (137) after the grace", exit, err)
	}
	var log bytes.Buffer
	_ = ReadLog(stubborn.LogFile(), &log)
	if !strings.Contains(log.String(), "got SIGTERM") {
		t.Errorf("log = %q; want SIGTERM first", log.String())
	}

	exit, err = failing.Wait(ctx)
	if err != nil || exit.Code != 1 || exit.Failure != "bad data\n" {
		t.Errorf("failure: Wait() = %+v, %v; want exit 1 with /opt/ml/output/failure", exit, err)
	}
	for _, task := range []*Task{hog, sleeper, stubborn, failing} {
		if err := task.Delete(ctx); err != nil {
			t.Error(err)
		}
	}
}

func TestCDIInjection(t *testing.T) {
	cdiDir := scratch(t)
	lib := filepath.Join(cdiDir, "libfake.txt")
	if err := os.WriteFile(lib, []byte("fake driver 1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := `cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      env: ["FAKE_GPU=0", "NVIDIA_VISIBLE_DEVICES=void"]
      deviceNodes:
        - path: /dev/kiln-fake-gpu0
          hostPath: /dev/null
containerEdits:
  mounts:
    - hostPath: ` + lib + `
      containerPath: /usr/lib/libfake.txt
      options: [ro, nosuid, nodev, bind]
`
	if err := os.WriteFile(filepath.Join(cdiDir, "fake.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTestRuntime(t, WithCDIDirs(cdiDir))
	t.Setenv("DIAG_READ", "") // not forwarded: the container env is the spec's alone
	d, err := runDiag(t, r, Common{GPUs: []string{"nvidia.com/gpu=0"}, Env: map[string]string{"DIAG_READ": "/usr/lib/libfake.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Env["FAKE_GPU"] != "0" || !slices.Contains(d.Dev, "kiln-fake-gpu0") || d.Read != "fake driver 1.0\n" {
		t.Errorf("inside: env %v, /dev %v, mount %q; want the CDI edits", d.Env, d.Dev, d.Read)
	}
	_, err = runDiag(t, r, Common{GPUs: []string{"nvidia.com/gpu=7"}})
	if !errors.Is(err, ErrCDIDevice) || !strings.Contains(err.Error(), "nvidia.com/gpu=7") {
		t.Errorf("unknown device: %v; want ErrCDIDevice naming nvidia.com/gpu=7", err)
	}
}
