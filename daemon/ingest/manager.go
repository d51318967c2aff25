package ingest

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	m := &Manager{opt: opt, log: opt.Log, specsCh: make(chan struct{}, 1), index: newIndex(), big: make(chan struct{}, 2)}
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

// source is one watched folder: drop/<p>/ or feedback/<p>/.
type source struct {
	pipeline string
	kind     storage.DatasetKind
	dir      string
}

// cand is one entry at the root of a source: a loose file, or a batch folder.
type cand struct {
	src   *source
	name  string
	batch bool

	state   int // candIdle (batch without _SUCCESS), candWaiting (in the heap), candReady, candBusy
	dirty   bool
	due     time.Time
	hidx    int
	stamp   string
	changed time.Time
}

const (
	candIdle = iota
	candWaiting
	candReady
	candBusy
)

type candKey struct {
	dir, name string
}

type candHeap []*cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h candHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *candHeap) Push(x any) { c := x.(*cand); c.hidx = len(*h); *h = append(*h, c) }
func (h *candHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	c.hidx = -1
	return c
}

// coord is the coordinator's state; only its goroutine touches it.
type coord struct {
	m       *Manager
	w       *fsnotify.Watcher
	specs   map[string]*config.Pipeline
	sources map[string]*source   // root dir -> source
	batches map[string]candKey   // watched batch folder -> its candidate
	cands   map[candKey]*cand    // every entry known
	heap    candHeap             // waiting entries by due time
	ready   []*cand              // settled, waiting for a worker
	busy    int                  //
	jobs    chan *job            //
	results chan *result         //
	paused  string               //
	pauseAt time.Time            // next disk check while paused
	scans   map[*source]bool     // sources to rescan (start, overflow, new pipelines)
	byPipe  map[string][]*source // pipeline -> its two sources
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

func (c *coord) loop(ctx context.Context) error {
	m := c.m
	c.applySpecs(ctx)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if h := testHookLoop.Load(); h != nil {
			(*h)()
		}
		c.rescan()
		c.runDue(time.Now())
		var jobs chan *job
		var next *job
		if c.paused == "" && len(c.ready) > 0 {
			jobs, next = c.jobs, c.ready[0].job(c.specs)
		}
		c.publish()
		wait := time.Hour
		if len(c.heap) > 0 {
			wait = time.Until(c.heap[0].due)
		}
		if c.paused != "" {
			wait = min(wait, time.Until(c.pauseAt))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return nil
		case <-m.specsCh:
			c.applySpecs(ctx)
		case ev, ok := <-c.w.Events:
			if !ok {
				return errors.New("ingest: inotify watcher closed")
			}
			c.event(ev)
			// Drain what is queued before doing anything slower.
			for drained := 0; drained < 4096; drained++ {
				select {
				case ev, ok = <-c.w.Events:
					if !ok {
						return errors.New("ingest: inotify watcher closed")
					}
					c.event(ev)
					continue
				default:
				}
				break
			}
		case err, ok := <-c.w.Errors:
			if !ok {
				return errors.New("ingest: inotify watcher closed")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				m.log.Warn("inotify queue overflowed; rescanning the drop folders", "err", err)
			} else {
				m.log.Warn("inotify error; rescanning the drop folders", "err", err)
			}
			for _, s := range c.sources {
				c.scans[s] = true
			}
		case jobs <- next:
			c.ready[0].state = candBusy
			c.ready = c.ready[1:]
			c.busy++
		case r := <-c.results:
			c.busy--
			c.finished(ctx, r)
		case <-timer.C:
			if c.paused != "" && !time.Now().Before(c.pauseAt) {
				c.checkDisk(ctx)
			}
		}
	}
}

// testHookLoop runs at the top of every coordinator loop; tests block it to let the inotify
// queue overflow.
var testHookLoop atomic.Pointer[func()]

func (c *coord) publish() {
	pending := len(c.ready) + len(c.heap)
	c.m.setStatus(func(s *Status) {
		s.Pending, s.Busy, s.Paused = pending, c.busy, c.paused
	})
}

// applySpecs starts watching added pipelines and stops watching removed ones.
func (c *coord) applySpecs(ctx context.Context) {
	m := c.m
	next := *m.specs.Load()
	for name := range c.specs {
		if _, ok := next[name]; ok {
			continue
		}
		for _, s := range c.byPipe[name] {
			c.unwatchSource(s)
		}
		delete(c.byPipe, name)
		m.log.Info("ingest stopped for removed pipeline; its folders and history are kept", "pipeline", name)
	}
	for name := range next {
		if _, ok := c.specs[name]; ok {
			continue
		}
		for _, s := range []*source{
			{pipeline: name, kind: storage.KindData, dir: filepath.Join(m.opt.DropDir, name)},
			{pipeline: name, kind: storage.KindFeedback, dir: filepath.Join(m.opt.FeedbackDir, name)},
		} {
			if err := makeDropDir(s.dir); err != nil {
				m.log.Error("create ingest folder", "pipeline", name, "dir", s.dir, "err", err)
				continue
			}
			if err := c.w.Add(s.dir); err != nil {
				m.log.Error("watch ingest folder", "pipeline", name, "dir", s.dir, "err", err)
				continue
			}
			c.sources[s.dir] = s
			c.byPipe[name] = append(c.byPipe[name], s)
			c.scans[s] = true
		}
	}
	c.specs = next
	names := make([]string, 0, len(next))
	for n := range next {
		names = append(names, n)
	}
	m.setStatus(func(s *Status) { s.Pipelines = sortedStrings(names) })
	_ = ctx
}

func (c *coord) unwatchSource(s *source) {
	_ = c.w.Remove(s.dir) // already gone when the folder was removed
	delete(c.sources, s.dir)
	delete(c.scans, s)
	for dir, k := range c.batches {
		if k.dir == s.dir {
			_ = c.w.Remove(dir)
			delete(c.batches, dir)
		}
	}
	for k, cd := range c.cands {
		if k.dir != s.dir || cd.state == candBusy {
			continue
		}
		c.drop(cd)
	}
}

// drop forgets a candidate that is not busy.
func (c *coord) drop(cd *cand) {
	if cd.state == candWaiting && cd.hidx >= 0 {
		heap.Remove(&c.heap, cd.hidx)
	}
	if cd.state == candReady {
		for i, r := range c.ready {
			if r == cd {
				c.ready = append(c.ready[:i], c.ready[i+1:]...)
				break
			}
		}
	}
	delete(c.cands, candKey{cd.src.dir, cd.name})
}

// rescan lists the folders marked for it: what arrived while nobody watched, or what an
// overflow hid. Entries already known are only nudged, so nothing is taken twice.
func (c *coord) rescan() {
	if len(c.scans) == 0 {
		return
	}
	for s := range c.scans {
		delete(c.scans, s)
		c.m.setStatus(func(st *Status) { st.Rescans++ })
		ents, err := os.ReadDir(s.dir)
		if err != nil {
			c.m.log.Error("rescan ingest folder", "dir", s.dir, "err", err)
			continue
		}
		for _, e := range ents {
			c.note(s, e.Name(), "")
		}
	}
}

// event routes one fsnotify event to the candidate it concerns.
func (c *coord) event(ev fsnotify.Event) {
	dir, name := filepath.Split(ev.Name)
	dir = filepath.Clean(dir)
	if s, ok := c.sources[dir]; ok {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			if cd := c.cands[candKey{s.dir, name}]; cd != nil {
				c.nudge(cd)
			}
			return
		}
		c.note(s, name, "")
		return
	}
	// Inside a batch folder: _SUCCESS closes it; anything else nudges it.
	if k, ok := c.batches[dir]; ok {
		if s := c.sources[k.dir]; s != nil {
			c.note(s, k.name, name)
		}
		return
	}
	if k, ok := c.batches[filepath.Clean(ev.Name)]; ok && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
		delete(c.batches, filepath.Clean(ev.Name))
		if cd := c.cands[k]; cd != nil {
			c.nudge(cd)
		}
	}
}

// ignoredName: names that are still being written by convention (rsync's .name.XXXX, curl's
// .part, editors' ~, .tmp) and the batch marker itself.
func ignoredName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") ||
		strings.HasSuffix(name, ".part") || strings.HasSuffix(name, "~")
}

// SuccessMarker closes a batch folder.
const SuccessMarker = "_SUCCESS"

// note learns that name (at the root of s) exists or changed. inner is the name of an entry
// inside it when it is a batch folder.
func (c *coord) note(s *source, name, inner string) {
	if ignoredName(name) || name == SuccessMarker {
		return
	}
	k := candKey{s.dir, name}
	cd := c.cands[k]
	if cd == nil {
		cd = &cand{src: s, name: name, hidx: -1}
		c.cands[k] = cd
		c.m.observe("seen", filepath.Join(s.dir, name), "")
	}
	c.nudge(cd)
}

// nudge makes a candidate be checked now, or after its current read when busy.
func (c *coord) nudge(cd *cand) {
	switch cd.state {
	case candBusy:
		cd.dirty = true
	case candReady:
	default:
		c.schedule(cd, time.Now())
	}
}

func (c *coord) schedule(cd *cand, at time.Time) {
	cd.due = at
	if cd.state == candWaiting && cd.hidx >= 0 {
		heap.Fix(&c.heap, cd.hidx)
		return
	}
	cd.state = candWaiting
	heap.Push(&c.heap, cd)
}

// runDue checks every candidate whose time has come.
func (c *coord) runDue(now time.Time) {
	for len(c.heap) > 0 && !c.heap[0].due.After(now) {
		cd := heap.Pop(&c.heap).(*cand)
		cd.state = candIdle
		c.check(cd, now)
	}
}

// check decides whether a candidate is complete as far as the folder shows: it exists, has
// not changed for settle, and (a batch) holds _SUCCESS and no half-written names. The
// worker then asks the kernel whether anyone still writes it.
func (c *coord) check(cd *cand, now time.Time) {
	spec := c.specs[cd.src.pipeline]
	if spec == nil {
		c.drop(cd)
		return
	}
	path := filepath.Join(cd.src.dir, cd.name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.drop(cd)
		return
	}
	if err != nil {
		c.m.log.Warn("ingest: stat", "path", path, "err", err)
		c.schedule(cd, now.Add(time.Second))
		return
	}
	settle := spec.Data.Settle.Duration
	var stamp string
	var mtime time.Time
	if fi.IsDir() {
		cd.batch = true
		if _, ok := c.batches[path]; !ok {
			if err := c.w.Add(path); err != nil {
				c.m.log.Warn("ingest: watch batch folder", "path", path, "err", err)
			}
			c.batches[path] = candKey{cd.src.dir, cd.name}
		}
		st, err := batchStamp(path)
		if err != nil {
			c.m.log.Warn("ingest: read batch folder", "path", path, "err", err)
			c.schedule(cd, now.Add(time.Second))
			return
		}
		if !st.closed {
			return // idle until an event inside it (the watch) nudges it
		}
		stamp, mtime = st.stamp, st.mtime
		if st.partial {
			// Closed, yet holding temp names (rsync may write _SUCCESS before the files it
			// sorts after): poll, nested folders have no watch. Names that stop changing
			// for partialWait are leftovers (.DS_Store): the batch goes without them.
			if stamp != cd.stamp {
				cd.stamp, cd.changed = stamp, now
			}
			if now.Sub(cd.changed) < partialWait {
				c.schedule(cd, now.Add(250*time.Millisecond))
				return
			}
		}
	} else {
		cd.batch = false
		stamp = fmt.Sprintf("%d/%d/%d", fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
		mtime = fi.ModTime()
		if !fi.Mode().IsRegular() {
			settle = 0 // nothing to wait for: the worker rejects it
		}
	}
	if stamp != cd.stamp {
		first := cd.stamp == ""
		cd.stamp = stamp
		cd.changed = now
		if first && mtime.Before(now) {
			// A file renamed in keeps its mtime: it has been unchanged since then.
			cd.changed = mtime
		}
	}
	if at := cd.changed.Add(settle); at.After(now) {
		c.schedule(cd, at)
		return
	}
	cd.state = candReady
	c.ready = append(c.ready, cd)
}

// partialWait is how long a closed batch waits for temp names in it to be renamed.
var partialWait = time.Minute

type batchState struct {
	closed, partial bool
	stamp           string
	mtime           time.Time
}

// batchStamp walks a batch folder without following links.
func batchStamp(dir string) (batchState, error) {
	var st batchState
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == SuccessMarker {
			st.closed = true
			return nil
		}
		if ignoredName(d.Name()) {
			st.partial = true
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.ModTime().After(st.mtime) {
			st.mtime = fi.ModTime()
		}
		fmt.Fprintf(&b, "%s/%d/%d;", rel, fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	st.stamp = b.String()
	return st, err
}

// finished takes a worker's result back.
func (c *coord) finished(ctx context.Context, r *result) {
	cd := c.cands[candKey{r.job.src.dir, r.job.name}]
	if cd == nil {
		return
	}
	cd.state = candIdle
	if r.ingested {
		c.m.setStatus(func(s *Status) { s.Ingested++ })
	}
	if r.diskLow != "" {
		c.pause(ctx, r.diskLow)
	}
	switch {
	case r.retry > 0:
		cd.stamp = "" // see it afresh
		c.schedule(cd, time.Now().Add(r.retry))
	case cd.dirty:
		cd.dirty = false
		cd.stamp = ""
		c.schedule(cd, time.Now())
	default:
		// Done: the name left the folder. Look once more, in case a new file took it.
		if cd.batch {
			path := filepath.Join(cd.src.dir, cd.name)
			delete(c.batches, path)
			// A quarantined batch folder moved away keeps its inotify watch: drop it.
			_ = c.w.Remove(path)
		}
		*cd = cand{src: cd.src, name: cd.name, hidx: -1}
		c.check(cd, time.Now())
	}
}

func (c *coord) pause(ctx context.Context, why string) {
	if c.paused == "" {
		c.m.log.Warn("ingest paused: disk low", "reason", why)
		if c.m.opt.Status != nil {
			c.m.opt.Status("ingest paused: " + why)
		}
		// WithoutCancel: the pause is recorded even when the loop is stopping.
		c.m.event(context.WithoutCancel(ctx), storage.Event{Kind: "ingest.paused", Details: map[string]string{"reason": why}})
	}
	c.paused = why
	c.pauseAt = time.Now().Add(5 * time.Second)
}

func (c *coord) checkDisk(ctx context.Context) {
	if why := c.m.diskLow(0); why != "" {
		c.paused = why
		c.pauseAt = time.Now().Add(5 * time.Second)
		return
	}
	c.m.log.Info("ingest resumed: disk has room again")
	if c.m.opt.Status != nil {
		c.m.opt.Status("ingest resumed")
	}
	// WithoutCancel: the resume is recorded even when the loop is stopping.
	c.m.event(context.WithoutCancel(ctx), storage.Event{Kind: "ingest.resumed"})
	c.paused = ""
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

func (cd *cand) job(specs map[string]*config.Pipeline) *job {
	return &job{src: cd.src, name: cd.name, batch: cd.batch, spec: specs[cd.src.pipeline]}
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
