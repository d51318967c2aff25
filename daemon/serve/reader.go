package serve

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LogReader reads one pipeline's prediction log: Lookup by request id
// through the indexes, Scan in order. It is safe for concurrent use. It
// notices new, removed and rewritten segments by the folder's change time,
// checked on each Lookup.
type LogReader struct {
	dir string

	mu       sync.RWMutex // guards segs and the folder state
	segs     []*rseg      // ascending
	dirMtime int64
	dirCtime int64
	settled  bool // the folder's times were old enough at the last listing to trust

	tailMu sync.Mutex
	tail   *tailIndex

	lastCheck atomic.Int64 // unix nanos of the last look at the folder
}

// checkEvery bounds how long a Lookup that finds its record trusts the
// folder as last listed: a purge or retention shows within it. A Lookup
// that finds nothing always looks at the folder again before saying so.
const checkEvery = 100 * time.Millisecond

// rseg is one segment as the reader holds it: open for preads, with its
// index mapped when it has a valid one.
type rseg struct {
	num    uint64
	f      *os.File
	ino    uint64
	idx    *mappedIndex
	idxIno uint64 // the index file mapped (0: none)
}

// loadIndex maps s's index when the file at its path is not the one mapped.
func (s *rseg) loadIndex(dir string, segSize int64) {
	var ist syscall.Stat_t
	if err := syscall.Stat(idxPath(dir, s.num), &ist); err != nil {
		s.idx.close()
		s.idx, s.idxIno = nil, 0
		return
	}
	if s.idx != nil && ist.Ino == s.idxIno && s.idx.segSize == segSize {
		return
	}
	s.idx.close()
	s.idx, s.idxIno = nil, 0
	if x, err := openIndex(idxPath(dir, s.num), segSize); err == nil {
		s.idx, s.idxIno = x, ist.Ino
	}
}

// tailIndex indexes the newest segment without an index (the one being
// written) in memory, catching up with its end on each lookup: bounded by
// the segment size.
type tailIndex struct {
	num uint64
	ino uint64
	end int64 // indexed up to here
	ids map[string]int64
}

// OpenLogReader opens pipeline's log under predLogDir (Options.PredLogDir).
// A log that does not exist yet reads as empty.
func OpenLogReader(predLogDir, pipeline string) (*LogReader, error) {
	r := &LogReader{dir: filepath.Join(predLogDir, pipeline)}
	if err := r.refresh(); err != nil {
		return nil, err
	}
	return r, nil
}

// Close releases the files and mappings; the reader must not be used after.
func (r *LogReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.segs {
		s.close()
	}
	r.segs = nil
	return nil
}

func (s *rseg) close() {
	_ = s.f.Close() // read-only
	s.idx.close()
}

// changed says whether the folder may have changed since the last listing.
func (r *LogReader) changed() bool {
	var st syscall.Stat_t
	if err := syscall.Stat(r.dir, &st); err != nil {
		return true
	}
	r.mu.RLock()
	same := r.settled && st.Mtim.Nano() == r.dirMtime && st.Ctim.Nano() == r.dirCtime
	r.mu.RUnlock()
	return !same
}

// refresh lists the folder again, keeping what did not change.
func (r *LogReader) refresh() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st syscall.Stat_t
	err := syscall.Stat(r.dir, &st)
	if errors.Is(err, os.ErrNotExist) {
		for _, s := range r.segs {
			s.close()
		}
		r.segs, r.settled = nil, false
		return nil
	}
	if err != nil {
		return fmt.Errorf("prediction log %s: %w", r.dir, err)
	}
	nums, err := listSegments(r.dir)
	if err != nil {
		return fmt.Errorf("prediction log %s: %w", r.dir, err)
	}
	// File times are coarse (a clock tick): a second change within the
	// tick of the one seen would keep the same time, so a listing taken
	// while the time is recent is retried on the next call.
	r.dirMtime, r.dirCtime = st.Mtim.Nano(), st.Ctim.Nano()
	r.settled = time.Since(time.Unix(0, max(r.dirMtime, r.dirCtime))) > 50*time.Millisecond
	old := map[uint64]*rseg{}
	for _, s := range r.segs {
		old[s.num] = s
	}
	segs := make([]*rseg, 0, len(nums))
	for _, n := range nums {
		var fst syscall.Stat_t
		if err := syscall.Stat(segPath(r.dir, n), &fst); err != nil {
			continue // removed meanwhile
		}
		if s := old[n]; s != nil && s.ino == fst.Ino {
			s.loadIndex(r.dir, fst.Size)
			delete(old, n)
			segs = append(segs, s)
			continue
		}
		f, err := os.Open(segPath(r.dir, n))
		if err != nil {
			continue
		}
		s := &rseg{num: n, f: f, ino: fst.Ino}
		s.loadIndex(r.dir, fst.Size)
		segs = append(segs, s)
	}
	for _, s := range old {
		s.close()
	}
	r.segs = segs
	return nil
}

// Lookup returns the newest record of requestID (without a ":row"
// suffix: contract.SplitRowID). ErrNotFound (wrapped) when the log does not hold it.
// Records become visible once the endpoint has written them (at most
// Options.SyncInterval after the answer, or after Endpoint.FlushLog). A
// record purged or expired may still be returned for checkEvery (100 ms)
// after it went: the folder is looked at again at most that often while
// lookups find what they look for.
func (r *LogReader) Lookup(requestID string) (Record, error) {
	now := time.Now().UnixNano()
	checked := false
	if now-r.lastCheck.Load() > int64(checkEvery) {
		if err := r.check(now); err != nil {
			return Record{}, err
		}
		checked = true
	}
	for {
		rec, found, err := r.lookup(requestID)
		if found || err != nil {
			return rec, err
		}
		if checked {
			return Record{}, fmt.Errorf("request %s in prediction log %s: %w", requestID, r.dir, ErrNotFound)
		}
		// Not found in the folder as last listed: a new segment may hold it.
		if err := r.check(now); err != nil {
			return Record{}, err
		}
		checked = true
	}
}

// check lists the folder again when it changed.
func (r *LogReader) check(now int64) error {
	r.lastCheck.Store(now)
	if r.changed() {
		return r.refresh()
	}
	return nil
}

func (r *LogReader) lookup(requestID string) (Record, bool, error) {
	h := idHash(requestID)
	r.mu.RLock()
	defer r.mu.RUnlock()
	newestUnindexed := -1
	for i := len(r.segs) - 1; i >= 0; i-- {
		if r.segs[i].idx == nil {
			newestUnindexed = i
			break
		}
	}
	for i := len(r.segs) - 1; i >= 0; i-- {
		s := r.segs[i]
		var (
			rec   Record
			found bool
			err   error
		)
		switch {
		case s.idx != nil:
			s.idx.find(h, func(off int64) bool {
				rec, found, err = r.readAt(s, off, requestID)
				return found || err != nil
			})
		case i == newestUnindexed:
			rec, found, err = r.lookupTail(s, requestID)
		default:
			// A closed segment whose index is missing: read it whole
			// until RebuildIndexes has written the index.
			rec, found, err = r.scanFor(s, requestID)
		}
		if err != nil || found {
			return rec, found, err
		}
	}
	return Record{}, false, nil
}

// readAt reads the frame at off of s and returns it when it is id's.
func (r *LogReader) readAt(s *rseg, off int64, id string) (Record, bool, error) {
	var small [512]byte
	n, err := s.f.ReadAt(small[:], off)
	if n < 8 {
		if err == nil || errors.Is(err, io.EOF) {
			return Record{}, false, nil // an index pointing past the end: stale
		}
		return Record{}, false, fmt.Errorf("read %s: %w", s.f.Name(), err)
	}
	l := frameLen(small[:])
	if l > maxFrame || l < frameHeader {
		return Record{}, false, nil
	}
	b := small[:min(n, l)]
	// The id sits right after the header: compare it before reading more.
	if idl := int(small[32]); l >= frameHeader+idl && n >= frameHeader+idl && string(small[frameHeader:frameHeader+idl]) != id {
		return Record{}, false, nil
	}
	if l > n {
		b = make([]byte, l)
		if _, err := s.f.ReadAt(b, off); err != nil {
			return Record{}, false, fmt.Errorf("read %s: %w", s.f.Name(), err)
		}
	}
	f, err := parseFrame(b, true)
	if err != nil || string(f.id) != id {
		return Record{}, false, nil //nolint:nilerr // a stale or torn entry is no match
	}
	return r.toRecord(&f), true, nil
}

// toRecord copies f into a Record, reading its input file when it has one.
func (r *LogReader) toRecord(f *frame) Record {
	if f.flags&flagInputFile == 0 {
		return f.record(nil, false)
	}
	in, err := os.ReadFile(inputFilePath(r.dir, f.input[:32]))
	ok := err == nil && uint64(len(in)) == binary.LittleEndian.Uint64(f.input[32:])
	if !ok {
		in = nil // purged, or left out of a backup: the input is not kept
	}
	return f.record(in, ok)
}

func inputFilePath(dir string, sum []byte) string {
	name := hex.EncodeToString(sum)
	return filepath.Join(dir, inputsDir, name[:2], name)
}

// lookupTail catches the tail index up with the end of s and looks id up.
func (r *LogReader) lookupTail(s *rseg, id string) (Record, bool, error) {
	r.tailMu.Lock()
	t := r.tail
	if t == nil || t.num != s.num || t.ino != s.ino {
		t = &tailIndex{num: s.num, ino: s.ino, ids: map[string]int64{}}
		r.tail = t
	}
	fi, err := s.f.Stat()
	if err == nil && fi.Size() > max(t.end, segHeaderSize) {
		start := t.end
		var src io.Reader
		if start == 0 {
			src = io.NewSectionReader(s.f, 0, fi.Size())
		} else {
			src = io.NewSectionReader(s.f, start, fi.Size()-start)
		}
		end, _ := scanFrames(src, start, func(off int64, f *frame) error {
			t.ids[string(f.id)] = off
			return nil
		})
		if end > t.end {
			t.end = end
		}
	}
	off, ok := t.ids[id]
	r.tailMu.Unlock()
	if !ok {
		return Record{}, false, nil
	}
	return r.readAt(s, off, id)
}

// scanFor reads s whole for the newest record of id.
func (r *LogReader) scanFor(s *rseg, id string) (Record, bool, error) {
	var rec Record
	found := false
	_, err := scanFrames(io.NewSectionReader(s.f, 0, 1<<62), 0, func(_ int64, f *frame) error {
		if string(f.id) == id {
			rec, found = r.toRecord(f), true
		}
		return nil
	})
	return rec, found, err
}

// Scan calls fn for each record with a Time at or after since, in log
// order, until fn returns an error, which Scan returns. Log order is the
// order requests were answered; it is time order up to the latency of the
// requests in flight together. Segments wholly before since are skipped by
// their index. Scan reads files of its own, so a slow fn never holds up
// lookups.
func (r *LogReader) Scan(since time.Time, fn func(Record) error) error {
	_, err := r.scan(LogCursor{}, since, false, fn)
	return err
}

// ScanBorrowed is Scan without a copy per record: each Record's ID, Input
// and Output point into the reader's buffer and are valid only until fn
// returns (Model, Protocol and ContentType are interned strings and may be
// kept). A pass over a day's log that keeps only what it derives (the
// monitor's hourly signals, probation) allocates next to nothing this way.
func (r *LogReader) ScanBorrowed(since time.Time, fn func(Record) error) error {
	_, err := r.scan(LogCursor{}, since, true, fn)
	return err
}

// LogCursor is a position in a pipeline's log, as ScanFrom returns it:
// the records before it have been read. The zero LogCursor is the start.
type LogCursor struct {
	Segment uint64 // the segment read last
	Inode   uint64 // its inode then: a segment rewritten by a purge has a new one
	Offset  int64  // after its last whole frame read
}

// ErrCursorStale is returned (wrapped) by ScanFrom when the segment its
// cursor points into is gone or was rewritten (retention, a purge), so
// offsets into it mean nothing now: read again from the zero LogCursor.
var ErrCursorStale = errors.New("log position is stale")

// ScanFrom is ScanBorrowed from cur on: it calls fn for each record after
// cur with a Time at or after since, and returns the cursor after the last
// whole record of the log, so the next call reads only records appended
// since. Positions are append order, not Time (a record's Time is when its
// request came in, and a slow answer is appended after faster later ones),
// so no record is read twice or skipped however late it was answered. A
// frame still being written ends the read of its segment; the cursor stays
// before it until it is whole. When fn fails, the cursor returned is
// before the record it failed on. It is how a reader that keeps running
// totals (the monitor's probation) avoids reading the log again and again.
func (r *LogReader) ScanFrom(cur LogCursor, since time.Time, fn func(Record) error) (LogCursor, error) {
	return r.scan(cur, since, true, fn)
}

func (r *LogReader) scan(cur LogCursor, since time.Time, borrow bool, fn func(Record) error) (LogCursor, error) {
	intern := map[string]string{}
	if err := r.refresh(); err != nil {
		return cur, err
	}
	type seg struct {
		num, ino       uint64
		maxT, idxBytes int64
		ok             bool
	}
	r.mu.RLock()
	segs := make([]seg, 0, len(r.segs))
	for _, s := range r.segs {
		x := seg{num: s.num, ino: s.ino}
		if s.idx != nil {
			x.maxT, x.idxBytes, x.ok = s.idx.maxT, s.idx.segSize, true
		}
		segs = append(segs, x)
	}
	r.mu.RUnlock()
	resume := cur != LogCursor{}
	if resume && !slices.ContainsFunc(segs, func(s seg) bool { return s.num == cur.Segment && s.ino == cur.Inode }) {
		return cur, fmt.Errorf("prediction log %s at segment %d offset %d: %w", r.dir, cur.Segment, cur.Offset, ErrCursorStale)
	}
	sinceNS := since.UnixNano()
	if since.IsZero() {
		sinceNS = 0
	}
	for _, s := range segs {
		atCursor := resume && s.num == cur.Segment
		from := int64(0)
		switch {
		case resume && s.num < cur.Segment:
			continue
		case atCursor:
			from = cur.Offset
		case s.ok && s.maxT < sinceNS:
			// Closed and wholly before since: its index says so.
			cur = LogCursor{Segment: s.num, Inode: s.ino, Offset: s.idxBytes}
			continue
		}
		end, ino, err := scanSegmentFrom(segPath(r.dir, s.num), from, func(_ int64, f *frame) error {
			if f.time < sinceNS {
				return nil
			}
			if borrow && f.flags&flagInputFile == 0 {
				return fn(f.borrowed(intern))
			}
			return fn(r.toRecord(f))
		})
		stale := fmt.Errorf("prediction log %s segment %d: %w", r.dir, s.num, ErrCursorStale)
		switch {
		case ino == 0 && errors.Is(err, os.ErrNotExist) && atCursor:
			return cur, stale // removed since the listing
		case ino == 0 && errors.Is(err, os.ErrNotExist):
			continue // removed by retention meanwhile
		case ino == 0:
			return cur, err // not opened: nothing read
		case atCursor && ino != cur.Inode:
			return cur, stale // rewritten since the listing
		}
		cur = LogCursor{Segment: s.num, Inode: ino, Offset: end}
		if err != nil {
			return cur, err
		}
	}
	return cur, nil
}

// scanSegmentFrom is scanSegment from offset from (0: the header) of the
// file at path, and also returns the file's inode.
func scanSegmentFrom(path string, from int64, fn func(off int64, f *frame) error) (end int64, ino uint64, err error) {
	file, err := os.Open(path)
	if err != nil {
		return from, 0, err
	}
	defer func() { _ = file.Close() }() // read-only
	var st syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &st); err != nil {
		return from, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if from == 0 {
		end, err = scanFrames(file, 0, fn)
	} else {
		end, err = scanFrames(io.NewSectionReader(file, from, 1<<62), from, fn)
	}
	return end, st.Ino, err
}

// segmentNumbers is for tests: the segments the reader holds.
func (r *LogReader) segmentNumbers() []uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]uint64, 0, len(r.segs))
	for _, s := range r.segs {
		out = append(out, s.num)
	}
	return slices.Clip(out)
}
