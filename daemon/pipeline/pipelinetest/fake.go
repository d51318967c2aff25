package pipelinetest

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
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/runtime"
)

// Runtime is a fake pipeline.Runtime (see the package doc).
type Runtime struct {
	mu      sync.Mutex
	sockDir string
	trains  map[string]*training
	serves  map[string]*serving
	started []string // container IDs in start order
	// hold, when set, keeps every training started meanwhile running until
	// closed; readyHold keeps every serving container started meanwhile
	// unready until closed (an evaluation is then in progress).
	hold      chan struct{}
	readyHold chan struct{}
	failNext  string
}

var _ pipeline.Runtime = (*Runtime)(nil)

// NewRuntime makes a runtime whose serving sockets live in sockDir (keep it
// short: a unix socket path must fit in 108 bytes).
func NewRuntime(sockDir string) *Runtime {
	return &Runtime{sockDir: sockDir, trains: map[string]*training{}, serves: map[string]*serving{}}
}

// HoldTraining keeps trainings started from now on running until release
// is called (or the training is cancelled).
func (f *Runtime) HoldTraining() (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hold = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.hold == ch {
				f.hold = nil
			}
			f.mu.Unlock()
			close(ch)
		})
	}
}

// HoldReady keeps serving containers started from now on unready until
// release is called.
func (f *Runtime) HoldReady() (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.readyHold = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.readyHold == ch {
				f.readyHold = nil
			}
			f.mu.Unlock()
			close(ch)
		})
	}
}

// FailNext makes the next training fail: "exit" (exit 2 with a failure
// file) or "nomodel" (exit 0 and an empty /opt/ml/model).
func (f *Runtime) FailNext(how string) {
	f.mu.Lock()
	f.failNext = how
	f.mu.Unlock()
}

// Started lists container IDs in the order they were started.
func (f *Runtime) Started() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

// Serving lists the serving containers running now, sorted.
func (f *Runtime) Serving() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.serves))
	for id := range f.serves {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Resolve resolves every reference but those containing "missing".
func (f *Runtime) Resolve(_ context.Context, ref string) (string, error) {
	if strings.Contains(ref, "missing") {
		return "", fmt.Errorf("image %s not found", ref)
	}
	return "sha256:" + strings.Repeat("a", 64), nil
}

type training struct {
	done   chan struct{}
	result pipeline.TrainResult
	cancel chan struct{}
	once   sync.Once
}

func (t *training) Wait(ctx context.Context) (pipeline.TrainResult, error) {
	select {
	case <-t.done:
		return t.result, nil
	case <-ctx.Done():
		return pipeline.TrainResult{}, ctx.Err()
	}
}

func (t *training) Cancel(ctx context.Context) error {
	t.once.Do(func() { close(t.cancel) })
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartTraining runs the fit in a goroutine; the ID must be new.
func (f *Runtime) StartTraining(_ context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.trains[job.ContainerID]; ok {
		return nil, fmt.Errorf("container %s exists", job.ContainerID)
	}
	t := &training{done: make(chan struct{}), cancel: make(chan struct{})}
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
				t.result = pipeline.TrainResult{ExitCode: 143} // SIGTERM
				return
			}
		}
		t.result = train(job, fail)
	}()
	return t, nil
}

// AttachTraining re-adopts a training started before (by an earlier Manager).
func (f *Runtime) AttachTraining(_ context.Context, job pipeline.TrainJob) (pipeline.Training, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.trains[job.ContainerID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", runtime.ErrNotFound, job.ContainerID)
	}
	return t, nil
}

// VanishTraining forgets every training container, as containerd would
// not know one that kilnd died before creating, or one removed after it
// exited while its end was not recorded yet. One still held stops without
// writing anything, as a container that is gone does.
func (f *Runtime) VanishTraining() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.trains {
		t.once.Do(func() { close(t.cancel) })
		<-t.done
	}
	clear(f.trains)
}

// train fits one centroid per label over the train channel's CSV files and
// memorizes the rows the centroids get wrong (exceptions.json), so a model
// trained on more versions knows more of their hard rows and scores
// strictly better than one trained on fewer: the gate needs that, since a
// tie does not promote. Hyperparameter quality=bad makes a one-class model
// instead.
func train(job pipeline.TrainJob, fail string) pipeline.TrainResult {
	res := pipeline.TrainResult{ModelDir: filepath.Join(job.Workspace, "model"), OutputDir: filepath.Join(job.Workspace, "output")}
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
	type seen struct{ x, y string }
	var rows []seen
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
			rows = append(rows, seen{strings.Join(x, ","), y})
			if sums[y] == nil {
				sums[y] = make([]float64, len(x))
			}
			for i, v := range x {
				f, _ := strconv.ParseFloat(v, 64)
				sums[y][i] += f
			}
			counts[y]++
		}
		_ = fh.Close()
	}
	model := map[string][]float64{}
	for y, s := range sums {
		for i := range s {
			s[i] /= float64(counts[y])
		}
		model[y] = s
	}
	exceptions := map[string]string{}
	for _, r := range rows {
		if nearest(model, strings.Split(r.x, ",")) != r.y {
			exceptions[r.x] = r.y
		}
	}
	if job.Hyperparameters["quality"] == "bad" {
		model = map[string][]float64{"a": {0, 0}} // one class only: a worse model
		exceptions = nil
	}
	b, _ := json.Marshal(model)
	_ = os.WriteFile(filepath.Join(res.ModelDir, "centroids.json"), b, 0o644)
	if len(exceptions) > 0 {
		b, _ = json.Marshal(exceptions)
		_ = os.WriteFile(filepath.Join(res.ModelDir, "exceptions.json"), b, 0o644)
	}
	_ = os.WriteFile(filepath.Join(res.OutputDir, "metrics.json"), []byte(`{"train_rows": `+strconv.Itoa(len(files))+`}`), 0o644)
	return res
}

type serving struct {
	hold  chan struct{}
	model string
	sock  string
	srv   *http.Server
}

// handle is what StartServing and AttachServing return: a container by ID.
type handle struct {
	*serving
	rt *Runtime
	id string
}

func (s *serving) Model() string { return s.model }

func (s *serving) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", s.sock)
}

func (s *serving) Ready(ctx context.Context) error {
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
			_ = c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Stop stops and removes the container; stopping a removed one is no error
// (as runtime's Stop of a task already gone).
func (h handle) Stop(context.Context) error {
	h.rt.mu.Lock()
	s := h.rt.serves[h.id]
	if s == h.serving {
		delete(h.rt.serves, h.id)
	}
	h.rt.mu.Unlock()
	if s == h.serving {
		return s.srv.Close() // closes the listener: the socket is gone
	}
	return nil
}

// StartServing serves the model folder's centroids; the ID must be new.
func (f *Runtime) StartServing(_ context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	b, err := os.ReadFile(filepath.Join(job.ModelDir, "centroids.json"))
	if err != nil {
		return nil, fmt.Errorf("model dir: %w", err)
	}
	var model map[string][]float64
	if err := json.Unmarshal(b, &model); err != nil {
		return nil, err
	}
	var exceptions map[string]string // rows the trainer memorized; optional
	if b, err := os.ReadFile(filepath.Join(job.ModelDir, "exceptions.json")); err == nil {
		if err := json.Unmarshal(b, &exceptions); err != nil {
			return nil, err
		}
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
			if y, ok := exceptions[strings.Join(row, ",")]; ok {
				fmt.Fprintln(w, y)
				continue
			}
			fmt.Fprintln(w, nearest(model, row))
		}
	})
	s := &serving{model: job.Model, sock: sock, srv: &http.Server{Handler: mux}, hold: f.readyHold}
	go func() { _ = s.srv.Serve(l) }()
	f.serves[job.ContainerID] = s
	f.started = append(f.started, job.ContainerID)
	return handle{s, f, job.ContainerID}, nil
}

// AttachServing re-adopts a running serving container; a stopped one is gone.
func (f *Runtime) AttachServing(_ context.Context, job pipeline.ServeJob) (pipeline.Serving, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.serves[job.ContainerID]
	if !ok {
		return nil, fmt.Errorf("no container %s", job.ContainerID)
	}
	return handle{s, f, job.ContainerID}, nil
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

// Endpoint is a fake pipeline.Endpoint: it records flips and carries no
// traffic (WaitIdle returns at once).
type Endpoint struct {
	mu      sync.Mutex
	live    pipeline.Backend
	flips   []string
	started bool
}

var _ pipeline.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) Flip(b pipeline.Backend) pipeline.Backend {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.live
	e.live = b
	name := ""
	if b != nil {
		name = b.Model()
	}
	e.flips = append(e.flips, name)
	return old
}

func (e *Endpoint) Live() pipeline.Backend {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.live
}

func (e *Endpoint) WaitIdle(context.Context, string) error { return nil }

func (e *Endpoint) Start() {
	e.mu.Lock()
	e.started = true
	e.mu.Unlock()
}

// LiveModel is the model flipped to last, "" when none.
func (e *Endpoint) LiveModel() string {
	if b := e.Live(); b != nil {
		return b.Model()
	}
	return ""
}

// Flips lists the models flipped to, in order.
func (e *Endpoint) Flips() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.flips)
}

// Endpoints is a fake pipeline.Endpoints; Open of an open pipeline returns
// its endpoint (a reload), as the daemon's does.
type Endpoints struct {
	mu  sync.Mutex
	eps map[string]*Endpoint
}

var _ pipeline.Endpoints = (*Endpoints)(nil)

func (f *Endpoints) Open(spec *config.Pipeline) (pipeline.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eps == nil {
		f.eps = map[string]*Endpoint{}
	}
	if e, ok := f.eps[spec.Name]; ok {
		return e, nil
	}
	e := &Endpoint{}
	f.eps[spec.Name] = e
	return e, nil
}

func (f *Endpoints) Close(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.eps, p)
	return nil
}

// Get is pipeline p's endpoint, nil when not open.
func (f *Endpoints) Get(p string) *Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eps[p]
}

// NoGPUs is a CPU-only box: every lease is refused.
type NoGPUs struct{}

var _ pipeline.GPUs = NoGPUs{}

func (NoGPUs) Lease(context.Context, string, string, int, int64) ([]pipeline.LeasedGPU, error) {
	return nil, errors.New("no NVIDIA driver: CPU-only")
}

func (NoGPUs) Release(context.Context, string) error { return nil }
