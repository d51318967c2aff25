package serve

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
	"golang.org/x/sys/unix"
)

// InlineInputMax is the largest request body kept inside its record; a
// larger one is kept once per distinct body as inputs/<ab>/<sha256>. Below
// it a file of its own costs more than its bytes (an inode, a directory
// entry, a hash and an fsync of its own, a 4 KiB block); above it bodies
// are rare batch requests, often resent whole (retries, replays), where
// content addressing stores them once and keeps segments dense in records.
const InlineInputMax = 64 << 10

// InputPolicy says whose request bodies the log keeps; the zero value
// keeps every one.
type InputPolicy struct {
	// None keeps no inputs.
	None bool
	// Sample, in (0, 1), keeps the inputs of that fraction of requests,
	// chosen by a stable hash of the request id (so a replay or a second
	// reader agrees on which); 0 or 1 keeps all.
	Sample float64
}

// keeps says whether the input of request id is kept.
func (p InputPolicy) keeps(id []byte) bool {
	if p.None {
		return false
	}
	if p.Sample <= 0 || p.Sample >= 1 {
		return true
	}
	// FNV's high bits mix poorly for short keys that differ at the end
	// (generated ids are a prefix and a counter): a finalizer spreads them
	// before the top 53 bits are read as a fraction in [0, 1).
	return float64(idHash(id)>>11)/(1<<53) < p.Sample
}

// mix64 is MurmurHash3's 64-bit finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// LogPolicy is the log's retention (monitor.log in the spec).
type LogPolicy struct {
	// Keep removes whole segments whose newest record is older; 0 keeps
	// them forever.
	Keep time.Duration
	// MaxBytes bounds the folder (segments, indexes and input files),
	// oldest segments removed first; 0 is no bound.
	MaxBytes int64
	Inputs   InputPolicy
}

// predLog is the append side: requests encode their frame into buf under
// mu; the writer goroutine swaps buf for spare, finishes the frames (row
// count, input placement, crc), writes and syncs.
type predLog struct {
	dir      string
	segBytes int64
	maxBuf   int
	interval time.Duration
	gid      int
	minFree  int64
	log      *slog.Logger

	policy  atomic.Pointer[LogPolicy]
	proto   atomic.Pointer[string]
	lowDisk atomic.Bool

	mu     sync.Mutex
	buf    []byte
	closed bool

	wake      chan struct{} // cap 1: the buffer went from empty to not
	urgent    chan struct{} // cap 1: the buffer passed half its bound
	flushReq  chan flushReq
	stop      chan struct{}
	done      chan struct{}
	maint     chan *segIndex // closed segments to index, then retention
	maintDone chan struct{}

	written, dropped, errors, inputsSkipped atomic.Uint64

	// Owned by the writer goroutine.
	spare      []byte
	scratch    []byte
	f          *os.File
	num        uint64 // the open segment's number, or the last one's
	size       int64
	cur        *segIndex
	err        error // the last write error, reported by flush
	lastStatfs time.Time
	touched    map[[32]byte]time.Time // input files written or touched lately
}

type flushReq struct {
	rotate bool
	reply  chan error
}

func openPredLog(opt Options, gid int, log *slog.Logger) (*predLog, error) {
	dir := filepath.Join(opt.PredLogDir, opt.Pipeline)
	if err := makeLogDir(opt.PredLogDir, gid); err != nil {
		return nil, fmt.Errorf("serve: prediction log folder: %w", err)
	}
	if err := makeLogDir(dir, gid); err != nil {
		return nil, fmt.Errorf("serve: prediction log folder: %w", err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: prediction log: %w", err)
	}
	p := &predLog{
		dir: dir, segBytes: opt.SegmentBytes, maxBuf: opt.LogBuffer, interval: opt.SyncInterval,
		gid: gid, minFree: opt.MinFreeBytes, log: log.With("prediction_log", dir),
		buf: make([]byte, 0, min(opt.LogBuffer, 64<<10)), spare: make([]byte, 0, min(opt.LogBuffer, 64<<10)),
		wake: make(chan struct{}, 1), urgent: make(chan struct{}, 1), flushReq: make(chan flushReq),
		stop: make(chan struct{}), done: make(chan struct{}),
		maint: make(chan *segIndex, 16), maintDone: make(chan struct{}),
		touched: map[[32]byte]time.Time{},
	}
	pol, proto := opt.LogPolicy, opt.Protocol
	p.policy.Store(&pol)
	p.proto.Store(&proto)
	if len(segs) > 0 {
		p.num = segs[len(segs)-1]
	}
	// A new start gets a new segment, so a frame a crash may have torn is
	// only ever the last of an older file.
	if err := p.openNext(); err != nil {
		return nil, fmt.Errorf("serve: prediction log: %w", err)
	}
	go p.maintain()
	go p.run()
	return p, nil
}

// makeLogDir creates dir 0750 (group gid when >= 0), or makes an existing
// one so: inputs are readable by root and the admin group only.
func makeLogDir(dir string, gid int) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return err
	}
	if gid >= 0 {
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("chown %s to group %d: %w", dir, gid, err)
		}
	}
	return nil
}

// append encodes one record into the buffer, or drops and counts it when
// the buffer is full or the log closed. It never waits for the disk and,
// once the buffer has grown, allocates nothing.
func (p *predLog) append(id []byte, model string, t time.Time, lat time.Duration, ctype, body []byte, status int, out []byte, truncated bool) {
	var flags byte
	if truncated {
		flags |= flagOutputCut
	}
	rows := 0
	input := body
	switch {
	case !p.policy.Load().Inputs.keeps(id):
		input = nil
	case p.lowDisk.Load():
		input = nil
		p.inputsSkipped.Add(1)
	}
	if input != nil {
		flags |= flagInputPending // rows are counted by the writer
	} else {
		rows = contract.CountRows(string(ctype), body)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	start := len(p.buf)
	b := appendFrame(p.buf, flags, status, t, lat, rows, id, model, *p.proto.Load(), ctype, input, out)
	if len(b) > p.maxBuf && start > 0 {
		p.buf = b[:start]
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	p.buf = b
	p.mu.Unlock()
	if start == 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	} else if start <= p.maxBuf/2 && len(b) > p.maxBuf/2 {
		select {
		case p.urgent <- struct{}{}:
		default:
		}
	}
}

// run is the writer: it takes what requests appended, writes it and syncs,
// at most once per interval (sooner when the buffer is half full), until
// stop.
func (p *predLog) run() {
	defer close(p.done)
	var last time.Time
	t := time.NewTimer(0)
	<-t.C
	for {
		var req flushReq
		select {
		case <-p.wake:
			// Group commit: let a sync's worth of records gather.
			if d := p.interval - time.Since(last); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-p.urgent:
					t.Stop()
				case <-p.stop:
					t.Stop()
				}
			}
		case <-p.urgent:
		case req = <-p.flushReq:
		case <-p.stop:
		}
		p.mu.Lock()
		b := p.buf
		p.buf = p.spare[:0]
		closed := p.closed
		p.mu.Unlock()
		if len(b) > 0 {
			p.checkDisk()
			p.write(b)
			last = time.Now()
		}
		p.spare = b[:0]
		if req.rotate {
			p.closeSegment()
		}
		if req.reply != nil {
			req.reply <- p.err
		}
		if closed {
			p.closeSegment()
			close(p.maint)
			<-p.maintDone
			return
		}
	}
}

// checkDisk compares the folder's free space with the daemon's floor, at
// most once a second: below it inputs are no longer kept (records still
// are: they are small), and the change is logged once each way.
func (p *predLog) checkDisk() {
	if p.minFree <= 0 || time.Since(p.lastStatfs) < time.Second {
		return
	}
	p.lastStatfs = time.Now()
	var st unix.Statfs_t
	if err := unix.Statfs(p.dir, &st); err != nil {
		return
	}
	free := int64(st.Bavail) * st.Bsize //nolint:gosec // block counts fit int64
	low := free < p.minFree
	if low != p.lowDisk.Swap(low) {
		if low {
			p.log.Warn("prediction log: free disk below disk.min_free; inputs are no longer kept", "free_bytes", free, "min_free", p.minFree)
		} else {
			p.log.Info("prediction log: free disk back above disk.min_free; inputs are kept again", "free_bytes", free)
		}
	}
}

// write finishes the frames of b (whole frames), puts them into segments,
// rotating at segBytes without splitting a frame, then syncs.
func (p *predLog) write(b []byte) {
	b = p.finish(b)
	var records uint64
	for len(b) > 0 {
		if p.f == nil {
			if err := p.openNext(); err != nil {
				p.fail("open segment", err)
				p.dropped.Add(countFrames(b))
				return
			}
		}
		// Take whole frames while they fit; a frame longer than a segment
		// goes alone into a fresh one.
		cut, n := 0, uint64(0)
		for cut < len(b) {
			l := frameLen(b[cut:])
			if p.size+int64(cut+l) > p.segBytes && (cut > 0 || p.size > segHeaderSize) {
				break
			}
			f, _ := parseFrame(b[cut:cut+l], false) // made by finish: well formed
			p.cur.add(&f, p.size+int64(cut))
			cut += l
			n++
		}
		if cut > 0 {
			w, err := p.f.Write(b[:cut])
			p.size += int64(w)
			if err != nil {
				p.fail("write", err)
				p.cur = nil // the segment's content is unknown now: Rebuild indexes it
				p.closeSegment()
				p.dropped.Add(countFrames(b))
				return
			}
			records += n
		}
		b = b[cut:]
		if len(b) > 0 || p.size >= p.segBytes {
			p.closeSegment()
		}
	}
	if p.f != nil {
		if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
			p.fail("sync", err)
			return
		}
	}
	p.written.Add(records)
	p.err = nil
}

func countFrames(b []byte) uint64 {
	var n uint64
	for len(b) >= 8 {
		b = b[frameLen(b):]
		n++
	}
	return n
}

// finish completes the frames in b in place: row counts, inputs placed
// inline or in a file, crcs. A frame whose input moves to a file shrinks,
// so later frames move down; it returns the finished prefix.
func (p *predLog) finish(b []byte) []byte {
	w := 0
	for r := 0; r < len(b); {
		l := frameLen(b[r:])
		fr := b[r : r+l]
		r += l
		if fr[9]&flagInputPending != 0 {
			f, _ := parseFrame(fr, false)                                                                // made by append: well formed
			binary.LittleEndian.PutUint32(fr[28:], uint32(contract.CountRows(string(f.ctype), f.input))) //nolint:gosec // rows fit
			fr[9] &^= flagInputPending
			if len(f.input) <= InlineInputMax {
				fr[9] |= flagInputInline
			} else {
				var ref [fileRefSize]byte
				sum := sha256.Sum256(f.input)
				copy(ref[:], sum[:])
				binary.LittleEndian.PutUint64(ref[32:], uint64(len(f.input)))
				flags := f.flags &^ flagInputPending
				var in []byte
				if err := p.keepFile(sum, f.input); err != nil {
					p.inputsSkipped.Add(1)
					p.fail("keep input file", err)
				} else {
					flags |= flagInputFile
					in = ref[:]
				}
				p.scratch = appendFrame(p.scratch[:0], flags, f.status, time.Unix(0, f.time),
					time.Duration(f.latency)*time.Microsecond, int(binary.LittleEndian.Uint32(fr[28:])),
					f.id, string(f.model), string(f.proto), f.ctype, in, f.output)
				fr = p.scratch
			}
		}
		sealFrame(fr)
		if w != r-l || len(fr) != l {
			copy(b[w:], fr)
		}
		w += len(fr)
	}
	return b[:w]
}

// keepFile stores an input as inputs/<ab>/<sha256>, crash-safely (temp
// file, fsync, rename, folder fsync) before any record refers to it. An
// equal body already there is shared; its mtime is refreshed (at most once
// a minute) because retention removes only files unreferenced and older
// than a grace, and a file about to be referred to again must look young.
func (p *predLog) keepFile(sum [32]byte, input []byte) error {
	now := time.Now()
	if t, ok := p.touched[sum]; ok && now.Sub(t) < time.Minute {
		return nil
	}
	if len(p.touched) > 4096 {
		clear(p.touched)
	}
	name := hex.EncodeToString(sum[:])
	sub := filepath.Join(p.dir, inputsDir, name[:2])
	path := filepath.Join(sub, name)
	if err := os.Chtimes(path, now, now); err == nil {
		p.touched[sum] = now
		return nil
	}
	for _, d := range []string{filepath.Join(p.dir, inputsDir), sub} {
		if _, err := os.Stat(d); err != nil {
			if err := makeLogDir(d, p.gid); err != nil {
				return err
			}
			if err := syncDir(filepath.Dir(d)); err != nil {
				return err
			}
		}
	}
	if err := writeFileAtomic(path, input, p.gid); err != nil {
		return err
	}
	p.touched[sum] = now
	return nil
}

func (p *predLog) fail(what string, err error) {
	p.errors.Add(1)
	p.err = fmt.Errorf("prediction log %s: %s: %w", p.dir, what, err)
	p.log.Warn("prediction log "+what+" failed", "err", err)
}

// closeSegment syncs and closes the open segment (dropping its flock) and
// hands its index to the maintenance goroutine; the next write opens a new
// segment.
func (p *predLog) closeSegment() {
	if p.f == nil {
		return
	}
	if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
		p.fail("sync", err)
	}
	if err := p.f.Close(); err != nil {
		p.fail("close", err)
	}
	p.f = nil
	if x := p.cur; x != nil {
		x.size = p.size
		select {
		case p.maint <- x:
		default:
			// Maintenance is behind: RebuildIndexes writes this one later,
			// and lookups scan it until then.
			p.log.Warn("prediction log: index of a closed segment left for the rebuild", "segment", x.num)
		}
	}
	p.cur = nil
}

// openNext creates the next segment: made and locked under a temp name,
// then renamed into place, so no reader or maintainer ever sees it
// unlocked while it is being written.
func (p *predLog) openNext() error {
	n := p.num + 1
	f, err := os.CreateTemp(p.dir, ".tmp-seg-*")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fail(err)
	}
	if err := setPerm(f, p.gid); err != nil {
		return fail(err)
	}
	var h [segHeaderSize]byte
	copy(h[:], segMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(time.Now().UnixNano())) //nolint:gosec // bit pattern kept
	if _, err := f.Write(h[:]); err != nil {
		return fail(err)
	}
	if err := os.Link(f.Name(), segPath(p.dir, n)); err != nil {
		return fail(err)
	}
	_ = os.Remove(f.Name())
	p.f, p.num, p.size = f, n, segHeaderSize
	p.cur = &segIndex{num: n}
	// The new name must survive a crash as surely as the records in it.
	if err := syncDir(p.dir); err != nil {
		p.log.Warn("prediction log: sync folder", "err", err) // the next segment's sync covers it
	}
	return nil
}

// maintain writes the index of each closed segment, then applies the
// retention policy, off the writer's path.
func (p *predLog) maintain() {
	defer close(p.maintDone)
	for x := range p.maint {
		if err := p.indexClosed(x); err != nil {
			p.log.Warn("prediction log: index not written; the rebuild after the next start writes it", "segment", x.num, "err", err)
		}
		pol := p.policy.Load()
		if pol.Keep <= 0 && pol.MaxBytes <= 0 {
			continue
		}
		rep, err := applyRetention(p.dir, Retention{Keep: pol.Keep, MaxBytes: pol.MaxBytes, GID: p.gid}, time.Now())
		if err != nil {
			p.log.Warn("prediction log retention", "err", err)
		}
		if rep.RemovedSegments > 0 {
			p.log.Info("prediction log: old segments removed", "segments", rep.RemovedSegments,
				"input_files", rep.RemovedInputs, "freed_bytes", rep.FreedBytes, "by_size", rep.BySize)
		}
	}
}

// indexClosed writes the index the writer built, unless the segment
// changed meanwhile (a purge rewrote it) or is gone.
func (p *predLog) indexClosed(x *segIndex) error {
	unlock, err := lockDir(p.dir)
	if err != nil {
		return err
	}
	defer unlock()
	fi, err := os.Stat(segPath(p.dir, x.num))
	if err != nil || fi.Size() != x.size {
		return nil //nolint:nilerr // removed or rewritten: whoever did it indexed it
	}
	return writeIndex(p.dir, x, p.gid)
}

func (p *predLog) flush(ctx context.Context, rotate bool) error {
	req := flushReq{rotate: rotate, reply: make(chan error, 1)}
	select {
	case p.flushReq <- req:
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close flushes what is buffered, syncs and closes the segment, and waits
// for its index. Records appended after close are dropped and counted.
func (p *predLog) close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		close(p.stop)
	}
	<-p.done
	return p.err
}

var errLogOff = errors.New("the prediction log is off")
