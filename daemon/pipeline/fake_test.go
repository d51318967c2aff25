package pipeline

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
)

// fakeRuntime honours the container contract without containers: training
// is a nearest-centroid fit in a goroutine writing /opt/ml/model into the
// workspace, serving is an HTTP server on a unix socket answering /ping and
// /invocations. Its "containers" outlive a Manager, as real ones outlive
// kilnd, so restart tests can re-attach.
type fakeRuntime struct {
	mu      sync.Mutex
	sockDir string
	trains  map[string]*fakeTraining
	serves  map[string]*fakeServing
	started []string // container IDs in start order
	hold    chan struct{}
	// readyHold, when set, keeps every serving container unready until
	// closed: an evaluation (or a promotion) is then in progress.
	readyHold chan struct{}
	failNext  string // "exit" or "nomodel": the next training fails so
}

func newFakeRuntime(sockDir string) *fakeRuntime {
	return &fakeRuntime{sockDir: sockDir, trains: map[string]*fakeTraining{}, serves: map[string]*fakeServing{}}
}

func (f *fakeRuntime) Resolve(_ context.Context, ref string) (string, error) {
	if strings.Contains(ref, "missing") {
		return "", fmt.Errorf("image %s not found", ref)
	}
	return "sha256:" + strings.Repeat("a", 64), nil
}

type fakeTraining struct {
	done   chan struct{}
	result TrainResult
	cancel chan struct{}
	once   sync.Once
}

func (t *fakeTraining) Wait(ctx context.Context) (TrainResult, error) {
	select {
	case <-t.done:
		return t.result, nil
	case <-ctx.Done():
		return TrainResult{}, ctx.Err()
	}
}

func (t *fakeTraining) Cancel(context.Context) error {
	t.once.Do(func() { close(t.cancel) })
	<-t.done
	return nil
}

func (f *fakeRuntime) StartTraining(_ context.Context, job TrainJob) (Training, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.trains[job.ContainerID]; ok {
		return nil, fmt.Errorf("container %s exists", job.ContainerID)
	}
	t := &fakeTraining{done: make(chan struct{}), cancel: make(chan struct{})}
	f.trains[job.ContainerID] = t
	f.started = append(f.started, job.ContainerID)
	fail := f.failNext
	f.failNext = ""
	hold := f.hold
	go func() {
		defer close(t.done)
		if hold != nil {
			select {
			case <-hold:
			case <-t.cancel:
				t.result = TrainResult{ExitCode: 143}
				return
			}
		}
		t.result = fakeTrain(job, fail)
	}()
	return t, nil
}

func (f *fakeRuntime) AttachTraining(_ context.Context, job TrainJob) (Training, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.trains[job.ContainerID]
	if !ok {
		return nil, fmt.Errorf("no container %s", job.ContainerID)
	}
	return t, nil
}

// fakeTrain fits one centroid per label over the channel's CSV files.
func fakeTrain(job TrainJob, fail string) TrainResult {
	res := TrainResult{ModelDir: filepath.Join(job.Workspace, "model"), OutputDir: filepath.Join(job.Workspace, "output")}
	_ = os.MkdirAll(res.ModelDir, 0o755)
	_ = os.MkdirAll(res.OutputDir, 0o755)
	switch fail {
	case "exit":
		_ = os.WriteFile(filepath.Join(res.OutputDir, "failure"), []byte("bad input: no rows\n"), 0o644)
		res.ExitCode, res.Failure = 2, "bad input: no rows"
		return res
	case "nomodel":
		return res
	}
	label := job.Hyperparameters["label"]
	sums := map[string][]float64{}
	counts := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(job.Channels["train"], "*.csv"))
	for _, path := range files {
		fh, err := os.Open(path)
		if err != nil {
			res.ExitCode = 1
			return res
		}
		r := csv.NewReader(fh)
		header, _ := r.Read()
		li := slices.Index(header, label)
		for {
			rec, err := r.Read()
			if err != nil {
				break
			}
			y := rec[li]
			x := slices.Delete(slices.Clone(rec), li, li+1)
			if sums[y] == nil {
				sums[y] = make([]float64, len(x))
			}
			for i, v := range x {
				f, _ := strconv.ParseFloat(v, 64)
				sums[y][i] += f
			}
			counts[y]++
		}
		fh.Close()
	}
	model := map[string][]float64{}
	for y, s := range sums {
		for i := range s {
			s[i] /= float64(counts[y])
		}
		model[y] = s
	}
	if job.Hyperparameters["quality"] == "bad" {
		model = map[string][]float64{"a": {0, 0}} // one class only: a worse model
	}
	b, _ := json.Marshal(model)
	_ = os.WriteFile(filepath.Join(res.ModelDir, "centroids.json"), b, 0o644)
	_ = os.WriteFile(filepath.Join(res.OutputDir, "metrics.json"), []byte(`{"train_rows": `+strconv.Itoa(len(files))+`}`), 0o644)
	return res
}

type fakeServing struct {
	hold    chan struct{}
	model   string
	sock    string
	srv     *http.Server
	stopped bool
}

func (s *fakeServing) Model() string { return s.model }

func (s *fakeServing) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", s.sock)
}

func (s *fakeServing) Ready(ctx context.Context) error {
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		c, err := s.DialContext(ctx)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *fakeRuntime) stopServing(id string) {
	f.mu.Lock()
	s := f.serves[id]
	delete(f.serves, id)
	f.mu.Unlock()
	if s != nil {
		s.stopped = true
		_ = s.srv.Close()
	}
}

type fakeServingHandle struct {
	*fakeServing
	rt *fakeRuntime
	id string
}

func (h fakeServingHandle) Stop(context.Context) error {
	h.rt.stopServing(h.id)
	return nil
}

func (f *fakeRuntime) StartServing(_ context.Context, job ServeJob) (Serving, error) {
	b, err := os.ReadFile(filepath.Join(job.ModelDir, "centroids.json"))
	if err != nil {
		return nil, fmt.Errorf("model dir: %w", err)
	}
	var model map[string][]float64
	if err := json.Unmarshal(b, &model); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.serves[job.ContainerID]; ok {
		return nil, fmt.Errorf("container %s exists", job.ContainerID)
	}
	sock := filepath.Join(f.sockDir, job.ContainerID+".sock")
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("POST /invocations", func(w http.ResponseWriter, r *http.Request) {
		rows, err := csv.NewReader(r.Body).ReadAll()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, row := range rows {
			fmt.Fprintln(w, nearest(model, row))
		}
	})
	s := &fakeServing{model: job.Model, sock: sock, srv: &http.Server{Handler: mux}, hold: f.readyHold}
	go func() { _ = s.srv.Serve(l) }()
	f.serves[job.ContainerID] = s
	f.started = append(f.started, job.ContainerID)
	return fakeServingHandle{s, f, job.ContainerID}, nil
}

func (f *fakeRuntime) AttachServing(_ context.Context, job ServeJob) (Serving, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.serves[job.ContainerID]
	if !ok {
		return nil, fmt.Errorf("no container %s", job.ContainerID)
	}
	return fakeServingHandle{s, f, job.ContainerID}, nil
}

func (f *fakeRuntime) serving() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.serves {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func nearest(model map[string][]float64, row []string) string {
	best, bestD := "", math.Inf(1)
	labels := make([]string, 0, len(model))
	for y := range model {
		labels = append(labels, y)
	}
	slices.Sort(labels)
	for _, y := range labels {
		c := model[y]
		var d float64
		for i, v := range row {
			x, _ := strconv.ParseFloat(v, 64)
			if i < len(c) {
				d += (x - c[i]) * (x - c[i])
			}
		}
		if d < bestD {
			best, bestD = y, d
		}
	}
	return best
}

// fakeEndpoint records flips; tests ask it what is live.
type fakeEndpoint struct {
	mu    sync.Mutex
	live  Backend
	flips []string
}

func (e *fakeEndpoint) Flip(b Backend) Backend {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.live
	e.live = b
	e.flips = append(e.flips, b.Model())
	return old
}

func (e *fakeEndpoint) Live() Backend {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.live
}

func (e *fakeEndpoint) WaitIdle(context.Context, string) error { return nil }

func (e *fakeEndpoint) Start() {}

func (e *fakeEndpoint) liveModel() string {
	if b := e.Live(); b != nil {
		return b.Model()
	}
	return ""
}

type fakeEndpoints struct {
	mu  sync.Mutex
	eps map[string]*fakeEndpoint
}

func (f *fakeEndpoints) Open(spec *config.Pipeline) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eps == nil {
		f.eps = map[string]*fakeEndpoint{}
	}
	e := &fakeEndpoint{}
	f.eps[spec.Name] = e
	return e, nil
}

func (f *fakeEndpoints) Close(string) error { return nil }

func (f *fakeEndpoints) get(p string) *fakeEndpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eps[p]
}

// noGPUs is a CPU-only box.
type noGPUs struct{}

func (noGPUs) Lease(context.Context, string, string, int, int64) ([]string, error) {
	return nil, errors.New("no NVIDIA driver: CPU-only")
}
func (noGPUs) Release(context.Context, string) error { return nil }
