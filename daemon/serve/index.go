package serve

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Files of a pipeline's log folder (see the package doc).
const (
	segExt    = ".seg"
	idxExt    = ".idx"
	inputsDir = "inputs"
	lockName  = ".lock"
	// legacyExt is the version 1 log (JSON lines); it is not read, and
	// retention removes it by age and size like any segment.
	legacyExt = ".jsonl"
)

func segPath(dir string, n uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%012d%s", n, segExt))
}
func idxPath(dir string, n uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%012d%s", n, idxExt))
}

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segExt)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs, nil
}

// An index file (<segment>.idx) is written once a segment is closed:
//
//	0  "KILNIX\0\3" (3: idHash finished with mix64)
//	8  u64 length of the segment it covers
//	16 i64 earliest record time, 24 i64 latest (unix nanoseconds)
//	32 u32 records n, 36 u32 input files m
//	40 n x (u64 idHash, u64 offset), sorted
//	   m x sha256 of the input files the segment refers to, sorted
//	   u32 CRC-32C of all the above
//
// It is valid only when its length, its crc and the segment's current
// length all agree, so a torn index or one left from before a purge
// rewrote its segment is never used.
const (
	idxMagic  = "KILNIX\x00\x03"
	idxHeader = 40
)

type idxEntry struct{ hash, off uint64 }

// segIndex is an index being built: by the writer for its open segment,
// or by a scan.
type segIndex struct {
	num        uint64
	size       int64
	entries    []idxEntry
	files      [][32]byte
	minT, maxT int64
}

func (x *segIndex) add(f *frame, off int64) {
	x.entries = append(x.entries, idxEntry{idHash(f.id), uint64(off)}) //nolint:gosec // offsets are positive
	if len(x.entries) == 1 || f.time < x.minT {
		x.minT = f.time
	}
	if len(x.entries) == 1 || f.time > x.maxT {
		x.maxT = f.time
	}
	if f.flags&flagInputFile != 0 {
		x.files = append(x.files, [32]byte(f.input[:32]))
	}
}

func (x *segIndex) encode() []byte {
	slices.SortFunc(x.entries, func(a, b idxEntry) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	slices.SortFunc(x.files, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	x.files = slices.Compact(x.files)
	b := make([]byte, idxHeader, idxHeader+16*len(x.entries)+32*len(x.files)+4)
	copy(b, idxMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(x.size))          //nolint:gosec // a file size
	binary.LittleEndian.PutUint64(b[16:], uint64(x.minT))         //nolint:gosec // bit pattern kept
	binary.LittleEndian.PutUint64(b[24:], uint64(x.maxT))         //nolint:gosec // bit pattern kept
	binary.LittleEndian.PutUint32(b[32:], uint32(len(x.entries))) //nolint:gosec // bounded by the segment
	binary.LittleEndian.PutUint32(b[36:], uint32(len(x.files)))   //nolint:gosec // bounded by the segment
	for _, e := range x.entries {
		b = binary.LittleEndian.AppendUint64(b, e.hash)
		b = binary.LittleEndian.AppendUint64(b, e.off)
	}
	for _, f := range x.files {
		b = append(b, f[:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// writeIndex writes x beside its segment: temp file, fsync, rename, and
// the folder synced, so an index either is whole or is not there.
func writeIndex(dir string, x *segIndex, gid int) error {
	return writeFileAtomic(idxPath(dir, x.num), x.encode(), gid)
}

// writeFileAtomic puts data at path crash-safely, mode 0640 and group gid
// (when >= 0).
func writeFileAtomic(path string, data []byte, gid int) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // a no-op after the rename
	if err := setPerm(f, gid); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// setPerm makes a log file 0640 and, when gid >= 0, of the admin group.
func setPerm(f *os.File, gid int) error {
	if err := f.Chmod(0o640); err != nil {
		return err
	}
	if gid >= 0 {
		if err := f.Chown(-1, gid); err != nil {
			return fmt.Errorf("chown %s to group %d: %w", f.Name(), gid, err)
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// mappedIndex is a valid index file mapped read-only: lookups binary-search
// it in place, so the reader's own memory does not grow with the log (the
// pages are the page cache's, dropped under memory pressure).
type mappedIndex struct {
	data       []byte
	n, m       int
	segSize    int64
	minT, maxT int64
}

var errBadIndex = errors.New("index is torn or stale")

// openIndex maps path when it is a valid index of a segment segSize long
// (segSize < 0: any length).
func openIndex(path string, segSize int64) (*mappedIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < idxHeader+4 || fi.Size() > 1<<34 {
		return nil, fmt.Errorf("%s: %w", path, errBadIndex)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	x, err := parseIndex(data, segSize)
	if err != nil {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The crc check read every page; a lookup needs a few. Unmap the
	// pages from this process (they stay in the page cache, and a lookup
	// faults in what it reads), so an idle kilnd does not carry every
	// index it holds in its resident memory.
	_ = unix.Madvise(data, unix.MADV_DONTNEED) // advice only: on failure the pages just stay mapped
	return x, nil
}

func parseIndex(data []byte, segSize int64) (*mappedIndex, error) {
	if len(data) < idxHeader+4 || string(data[:8]) != idxMagic {
		return nil, errBadIndex
	}
	x := &mappedIndex{data: data,
		segSize: int64(binary.LittleEndian.Uint64(data[8:])),  //nolint:gosec // a file size
		minT:    int64(binary.LittleEndian.Uint64(data[16:])), //nolint:gosec // bit pattern kept
		maxT:    int64(binary.LittleEndian.Uint64(data[24:])), //nolint:gosec // bit pattern kept
		n:       int(binary.LittleEndian.Uint32(data[32:])),
		m:       int(binary.LittleEndian.Uint32(data[36:])),
	}
	if len(data) != idxHeader+16*x.n+32*x.m+4 || (segSize >= 0 && x.segSize != segSize) {
		return nil, errBadIndex
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, errBadIndex
	}
	return x, nil
}

func (x *mappedIndex) close() {
	if x != nil && x.data != nil {
		_ = unix.Munmap(x.data)
		x.data = nil
	}
}

func (x *mappedIndex) hashAt(i int) uint64 {
	return binary.LittleEndian.Uint64(x.data[idxHeader+16*i:])
}

// find calls fn with the offsets of the records whose id hashes to h,
// newest (highest offset) first, until fn returns true.
func (x *mappedIndex) find(h uint64, fn func(off int64) bool) {
	lo, hi := 0, x.n // first entry with hash > h
	// The hashes are uniform: interpolation search narrows [lo, hi) in a
	// few probes (log log n), each a cache line of the mapping, where a
	// binary search would touch log2(n) scattered ones; a binary search
	// finishes the last few entries.
	if x.n > 0 {
		a, b := 0, x.n-1 // h lies after entry a-1 and before entry b+1
		ha, hb := x.hashAt(a), x.hashAt(b)
		for b-a > 8 && ha <= h && h < hb {
			pos := a + int(float64(h-ha)/float64(hb-ha)*float64(b-a))
			pos = min(max(pos, a+1), b-1)
			if v := x.hashAt(pos); v <= h {
				a, ha = pos, v
			} else {
				b, hb = pos, v
			}
		}
		lo, hi = a, b+1
	}
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if x.hashAt(mid) <= h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo - 1; i >= 0 && x.hashAt(i) == h; i-- {
		off := int64(binary.LittleEndian.Uint64(x.data[idxHeader+16*i+8:])) //nolint:gosec // an offset
		if fn(off) {
			return
		}
	}
}

// files returns the sha256 of each input file the segment refers to.
func (x *mappedIndex) files() [][32]byte {
	out := make([][32]byte, x.m)
	base := idxHeader + 16*x.n
	for i := range out {
		copy(out[i][:], x.data[base+32*i:])
	}
	return out
}

// scanSegment calls fn for each whole frame of a segment file, with its
// offset, and returns the offset after the last whole frame (where a torn
// tail, if any, begins). A file without a whole header holds nothing.
// fn's frame is valid only during the call.
func scanSegment(path string, fn func(off int64, f *frame) error) (end int64, err error) {
	file, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = file.Close() }() // read-only
	return scanFrames(file, 0, fn)
}

// scanFrames reads frames from r, which is at offset start of a segment
// (0: at its header).
func scanFrames(r io.Reader, start int64, fn func(off int64, f *frame) error) (end int64, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	off := start
	if start == 0 {
		var h [segHeaderSize]byte
		if _, err := io.ReadFull(br, h[:]); err != nil || string(h[:8]) != segMagic {
			return 0, nil
		}
		off = segHeaderSize
	}
	var buf []byte
	for {
		var h [8]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return off, nil
		}
		n := 8 + int(binary.LittleEndian.Uint32(h[:]))
		if n < frameHeader || n > maxFrame {
			return off, nil
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		copy(buf, h[:])
		if _, err := io.ReadFull(br, buf[8:]); err != nil {
			return off, nil
		}
		f, err := parseFrame(buf, true)
		if err != nil {
			return off, nil // torn: the end of what this segment holds
		}
		if err := fn(off, &f); err != nil {
			return off, err
		}
		off += int64(n)
	}
}

// buildIndex indexes a segment by reading it.
func buildIndex(dir string, num uint64) (*segIndex, error) {
	x := &segIndex{num: num}
	end, err := scanSegment(segPath(dir, num), func(off int64, f *frame) error {
		x.add(f, off)
		return nil
	})
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(segPath(dir, num))
	if err != nil {
		return nil, err
	}
	// A torn tail stays in the file; the index covers the file's length so
	// it is recognised as current, and lookups never reach the torn bytes.
	_ = end
	x.size = fi.Size()
	return x, nil
}

// isOpenSegment says whether an endpoint is writing segment path: the
// writer holds an exclusive flock on its open segment for as long as it
// writes it.
func isOpenSegment(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }() // closing drops the probe's lock
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
}

// lockDir takes the folder's maintenance lock (index writes, retention,
// purge), shared with other processes through flock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	// The lock file takes the folder's group, as every file of the log.
	var st, fst unix.Stat_t
	if unix.Stat(dir, &st) == nil && unix.Fstat(int(f.Fd()), &fst) == nil && fst.Gid != st.Gid {
		_ = f.Chown(-1, int(st.Gid))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = f.Close() }, nil // closing releases the lock
}

// RebuildIndexes writes the index of every closed segment of pipeline's log
// whose index is missing, torn or stale, reading the segment; the segment
// an endpoint is writing is left alone. kilnd runs it after READY. It
// returns how many it wrote.
func RebuildIndexes(predLogDir, pipeline string, gid int) (int, error) {
	dir := filepath.Join(predLogDir, pipeline)
	segs, err := listSegments(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return 0, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	defer unlock()
	n := 0
	var errs []error
	for _, num := range segs {
		if ok, err := rebuildOne(dir, num, gid); err != nil {
			errs = append(errs, err)
		} else if ok {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// rebuildOne writes segment num's index when it needs one. The caller
// holds the folder lock.
func rebuildOne(dir string, num uint64, gid int) (bool, error) {
	sp := segPath(dir, num)
	fi, err := os.Stat(sp)
	if err != nil {
		return false, nil //nolint:nilerr // removed meanwhile: nothing to index
	}
	if x, err := openIndex(idxPath(dir, num), fi.Size()); err == nil {
		x.close()
		return false, nil
	}
	if isOpenSegment(sp) {
		return false, nil
	}
	x, err := buildIndex(dir, num)
	if err != nil {
		return false, fmt.Errorf("index %s: %w", sp, err)
	}
	if err := writeIndex(dir, x, gid); err != nil {
		return false, fmt.Errorf("index %s: %w", sp, err)
	}
	return true, nil
}
