package ingest

import (
	"container/heap"
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kiln-edge/kiln/storage"
)

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
