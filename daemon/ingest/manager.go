package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Store is what ingest needs of the lineage store (storage.Store implements it).
type Store interface {
	PutBlob(ctx context.Context, r io.Reader) (storage.BlobRef, error)
	NewBlobBatch() *storage.BlobBatch
	OpenBlob(ref storage.BlobRef) (*os.File, error)
	Update(ctx context.Context, fn func(*storage.Tx) error) error
	View(fn func(*storage.Tx) error) error
	DiskFree() (free, total uint64, err error)
}

var _ Store = (*storage.Store)(nil)

// Options configure a Manager.
type Options struct {
	Store         Store
	DropDir       string // drop/<pipeline>/ live under it
	FeedbackDir   string // feedback/<pipeline>/
	QuarantineDir string // quarantine/<pipeline>/<dN>/
	// MinFree is the daemon's disk.min_free: below it ingest pauses (and says so).
	MinFree int64
	// Workers is how many batches are taken at once. Default 16: a small file costs a few
	// file creations and fsyncs, which wait on the disk, not the CPU, and concurrent ones
	// share journal commits (one worker takes 3.7 ms a file here, sixteen 1.1 ms). Files
	// over smallFile are read at most two at a time: they are CPU-bound (hash and parse).
	Workers int
	Log     *slog.Logger
	// Status, when set, is told a one-line status when ingest pauses and resumes (the
	// daemon hands it to sd_notify STATUS=).
	Status func(string)
	// Observe, when set, is told of each step a file takes (the benchmark's hook).
	Observe func(Observation)
}

// Observation is one step of one drop, for measurements.
type Observation struct {
	Step    string // "seen" (an event or rescan named it), "committed", "duplicate", "quarantined"
	Path    string // the drop path (for a batch, its folder)
	Dataset string
	Time    time.Time
}

// Manager watches the drop and feedback folders of the loaded pipelines and ingests what
// lands there. One goroutine (the coordinator) owns all watch state; workers read batches.
type Manager struct {
	opt Options
	log *slog.Logger

	specs   atomic.Pointer[map[string]*config.Pipeline]
	specsCh chan struct{}

	index *index

	mu     sync.Mutex
	status Status

	leaseWarned atomic.Bool
	big         chan struct{} // semaphore: files read by streaming
}

// ParallelFiles is how many big files (over 1 MiB) are read at once, each hashed on its own
// core while it is parsed: more would only make them compete for the same cores and disk.
const ParallelFiles = 2

// Status is what ingest is doing, for `kiln status` and the API.
type Status struct {
	Paused    string    `json:"paused,omitempty"` // why ingest is paused; "" when running
	Pending   int       `json:"pending"`          // entries waiting to settle or for a worker
	Busy      int       `json:"busy"`             // batches being read
	Ingested  int64     `json:"ingested"`         // versions committed since start
	Rescans   int64     `json:"rescans"`          // folder rescans (start, overflow)
	Pipelines []string  `json:"pipelines"`        // pipelines being watched
	Since     time.Time `json:"since"`
}

// New builds a Manager; Run starts it.
func New(opt Options) (*Manager, error) {
	if opt.Store == nil || opt.DropDir == "" || opt.FeedbackDir == "" || opt.QuarantineDir == "" {
		return nil, errors.New("ingest: Store, DropDir, FeedbackDir and QuarantineDir are required")
	}
	if opt.Workers <= 0 {
		opt.Workers = 16
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opt: opt, log: opt.Log, specsCh: make(chan struct{}, 1), index: newIndex(), big: make(chan struct{}, ParallelFiles)}
	empty := map[string]*config.Pipeline{}
	m.specs.Store(&empty)
	return m, nil
}

// SetPipelines hands the manager a new pipeline set: added pipelines get their folders
// created and watched (and rescanned), removed ones stop being watched; their folders and
// history stay. The set is taken as is and must not be changed afterwards.
func (m *Manager) SetPipelines(specs map[string]*config.Pipeline) {
	cp := make(map[string]*config.Pipeline, len(specs))
	for k, v := range specs {
		cp[k] = v
	}
	m.specs.Store(&cp)
	select {
	case m.specsCh <- struct{}{}:
	default:
	}
}

// Status reports what ingest is doing.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.status
	s.Pipelines = append([]string(nil), s.Pipelines...)
	return s
}

func (m *Manager) setStatus(f func(*Status)) {
	m.mu.Lock()
	f(&m.status)
	m.mu.Unlock()
}

func (m *Manager) observe(step, path, dataset string) {
	if m.opt.Observe != nil {
		m.opt.Observe(Observation{Step: step, Path: path, Dataset: dataset, Time: time.Now()})
	}
}

// Run watches and ingests until ctx ends. It loads the index of what was ingested before,
// rescans every folder (so files that arrived while kilnd was down are taken), then follows
// fsnotify; an inotify queue overflow triggers another rescan.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.index.load(m.opt.Store); err != nil {
		return fmt.Errorf("ingest: load index: %w", err)
	}
	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("ingest: inotify: %w", err)
	}
	defer func() { _ = w.Close() }() // stopping: nothing left to watch
	c := &coord{
		m: m, w: w,
		specs:   map[string]*config.Pipeline{},
		sources: map[string]*source{},
		batches: map[string]candKey{},
		cands:   map[candKey]*cand{},
		jobs:    make(chan *job),
		results: make(chan *result, m.opt.Workers),
		scans:   map[*source]bool{},
		byPipe:  map[string][]*source{},
	}
	m.setStatus(func(s *Status) { s.Since = time.Now().UTC() })
	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range m.opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range c.jobs {
				c.results <- m.process(wctx, j)
			}
		}()
	}
	err = c.loop(ctx)
	close(c.jobs)
	stopWorkers()
	// Drain results so workers can finish the batch they hold.
	go func() {
		for range c.results {
		}
	}()
	wg.Wait()
	close(c.results)
	return err
}

// diskLow says why ingest must wait, when taking need more bytes would leave less than
// disk.min_free.
func (m *Manager) diskLow(need int64) string {
	if m.opt.MinFree <= 0 {
		return ""
	}
	free, _, err := m.opt.Store.DiskFree()
	if err != nil {
		return "cannot read free disk space: " + err.Error()
	}
	avail := int64(math.MaxInt64) // more than any need: no filesystem reports 8 EiB free
	if free < math.MaxInt64 {
		avail = int64(free)
	}
	if avail-need < m.opt.MinFree {
		return fmt.Sprintf("%s free on the state disk, %s needed to keep disk.min_free %s", humanBytes(avail), humanBytes(need), humanBytes(m.opt.MinFree))
	}
	return ""
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", float64(n)/float64(div), "KMGTPE"[exp])
}

func sortedStrings(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// makeDropDir creates a pipeline's drop or feedback folder so that the
// people who feed kiln can write to it: group-writable, owned by the group
// of its parent (kiln, as the package's tmpfiles.d makes /var/lib/kiln/drop).
// No setgid bit: the unit's RestrictSUIDSGID= forbids making one. An
// existing folder is left as the operator set it.
func makeDropDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o775); err != nil && !os.IsExist(err) {
		return err
	}
	if err := os.Chmod(dir, 0o775); err != nil { // the umask took the group's write bit
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(parent, &st); err != nil {
		return err
	}
	return os.Chown(dir, -1, int(st.Gid))
}
