package ingest

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

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
	why := c.m.diskLow(0)
	if why == "" {
		why = c.m.unwritable()
	}
	if why != "" {
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

func (cd *cand) job(specs map[string]*config.Pipeline) *job {
	return &job{src: cd.src, name: cd.name, batch: cd.batch, spec: specs[cd.src.pipeline]}
}
