package serve

import (
	"archive/tar"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// inputGrace is how old an unreferenced input file must be before it is
// removed. The writer stores an input file (or refreshes its mtime, at most
// once a minute) before the record that refers to it reaches the segment;
// the grace covers that gap, so a file about to be referred to is never
// taken.
const inputGrace = 2 * time.Minute

// Retention is what ApplyRetention enforces (monitor.log in the spec).
type Retention struct {
	Keep     time.Duration // 0: no age limit
	MaxBytes int64         // 0: no size limit
	GID      int           // the admin group for rewritten files; -1 leaves the group
}

// RetentionReport says what ApplyRetention removed and whether max_size
// can hold keep at the rate the log grows.
type RetentionReport struct {
	RemovedSegments int
	BySize          int // of RemovedSegments, removed to stay under MaxBytes
	RemovedInputs   int
	FreedBytes      int64
	KeptBytes       int64
	Oldest          time.Time // the oldest record kept (zero: none)
	// BytesPerHour is the rate the kept log grew at; HoldsFor is how much
	// time MaxBytes holds at that rate. ShortOfKeep is set when HoldsFor is
	// below Keep: records go before Keep says.
	BytesPerHour float64
	HoldsFor     time.Duration
	ShortOfKeep  bool
}

// segInfo is what retention and purge need to know of one segment.
type segInfo struct {
	num        uint64
	legacy     string // a version 1 file's path
	bytes      int64  // segment and index
	minT, maxT int64
	n          int
	files      [][32]byte
	open       bool
	removed    bool
}

// ApplyRetention removes whole segments of pipeline's log older than
// r.Keep, then the oldest ones while the folder is over r.MaxBytes, never
// the segment an endpoint is writing, and then the input files no kept
// record refers to.
func ApplyRetention(predLogDir, pipeline string, r Retention) (RetentionReport, error) {
	return applyRetention(filepath.Join(predLogDir, pipeline), r, time.Now())
}

func applyRetention(dir string, r Retention, now time.Time) (RetentionReport, error) {
	var rep RetentionReport
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return rep, nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return rep, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	defer unlock()
	segs, err := loadSegInfo(dir)
	if err != nil {
		return rep, err
	}
	files, err := listInputFiles(dir)
	if err != nil {
		return rep, err
	}
	refs := map[[32]byte]int{}
	total := int64(0)
	for _, s := range segs {
		total += s.bytes
		for _, f := range s.files {
			refs[f]++
		}
	}
	for _, f := range files {
		total += f.size
	}
	var errs []error
	remove := func(s *segInfo) {
		if err := removeSegment(dir, s); err != nil {
			errs = append(errs, err)
			return
		}
		rep.RemovedSegments++
		rep.FreedBytes += s.bytes
		total -= s.bytes
		for _, f := range s.files {
			if refs[f]--; refs[f] == 0 {
				total -= files[f].size // freed below, once old enough
			}
		}
		s.removed = true
	}
	cutoff := now.Add(-r.Keep).UnixNano()
	for i := range segs {
		if r.Keep > 0 && !segs[i].open && !segs[i].removed && segs[i].maxT < cutoff {
			remove(&segs[i])
		}
	}
	for i := range segs {
		if r.MaxBytes <= 0 || total <= r.MaxBytes {
			break
		}
		if !segs[i].removed && !segs[i].open {
			remove(&segs[i])
			rep.BySize++
		}
	}
	n, freed, err := removeUnreferenced(dir, files, refs, now.Add(-inputGrace))
	rep.RemovedInputs, rep.FreedBytes = n, rep.FreedBytes+freed
	errs = append(errs, err)

	// The rate: kept bytes over the time the kept records span.
	var oldest, newest int64
	for _, s := range segs {
		if s.removed {
			continue
		}
		rep.KeptBytes += s.bytes
		if s.n > 0 && (oldest == 0 || s.minT < oldest) {
			oldest = s.minT
		}
		newest = max(newest, s.maxT)
	}
	for f, c := range refs {
		if c > 0 {
			rep.KeptBytes += files[f].size
		}
	}
	if oldest > 0 {
		rep.Oldest = time.Unix(0, oldest)
		if span := time.Duration(newest - oldest); span >= time.Minute {
			rep.BytesPerHour = float64(rep.KeptBytes) / span.Hours()
			if r.MaxBytes > 0 && rep.BytesPerHour > 0 {
				rep.HoldsFor = time.Duration(float64(r.MaxBytes) / rep.BytesPerHour * float64(time.Hour))
				rep.ShortOfKeep = r.Keep > 0 && rep.HoldsFor < r.Keep
			}
		}
	}
	return rep, errors.Join(errs...)
}

// loadSegInfo describes each segment (and version 1 file) of dir, oldest
// first, from its index, or by reading it when it has none.
func loadSegInfo(dir string) ([]segInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	var out []segInfo
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), legacyExt); ok && e.Type().IsRegular() {
			if _, err := strconv.ParseUint(name, 10, 64); err == nil {
				if fi, err := e.Info(); err == nil {
					t := fi.ModTime().UnixNano()
					out = append(out, segInfo{legacy: filepath.Join(dir, e.Name()), bytes: fi.Size(), minT: t, maxT: t})
				}
			}
		}
	}
	nums, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	for _, num := range nums {
		fi, err := os.Stat(segPath(dir, num))
		if err != nil {
			continue
		}
		s := segInfo{num: num, bytes: fi.Size(), open: isOpenSegment(segPath(dir, num))}
		if x, err := openIndex(idxPath(dir, num), fi.Size()); err == nil {
			s.minT, s.maxT, s.n, s.files = x.minT, x.maxT, x.n, x.files()
			s.bytes += int64(len(x.data))
			x.close()
		} else {
			bx, err := buildIndex(dir, num)
			if err != nil {
				continue // removed meanwhile
			}
			s.minT, s.maxT, s.n, s.files = bx.minT, bx.maxT, len(bx.entries), bx.files
			if s.n == 0 {
				s.minT = fi.ModTime().UnixNano()
				s.maxT = s.minT
			}
			if ifi, err := os.Stat(idxPath(dir, num)); err == nil {
				s.bytes += ifi.Size() // a stale index still takes room
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func removeSegment(dir string, s *segInfo) error {
	if s.legacy != "" {
		if err := os.Remove(s.legacy); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	// The index first: a segment without one is rebuilt, an index without
	// its segment is only litter.
	for _, p := range []string{segPath(dir, s.num), idxPath(dir, s.num)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

type inputFile struct {
	size  int64
	mtime time.Time
}

// listInputFiles returns the input files under dir/inputs by sha256.
func listInputFiles(dir string) (map[[32]byte]inputFile, error) {
	out := map[[32]byte]inputFile{}
	root := filepath.Join(dir, inputsDir)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || len(d.Name()) != 64 {
			return nil
		}
		var sum [32]byte
		if _, err := hex.Decode(sum[:], []byte(d.Name())); err != nil {
			return nil //nolint:nilerr // not an input file: a temp file or litter
		}
		fi, err := d.Info()
		if err != nil {
			return nil //nolint:nilerr // removed meanwhile
		}
		out[sum] = inputFile{size: fi.Size(), mtime: fi.ModTime()}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prediction log inputs %s: %w", root, err)
	}
	return out, nil
}

// removeUnreferenced deletes the input files nothing refers to that are
// older than before.
func removeUnreferenced(dir string, files map[[32]byte]inputFile, refs map[[32]byte]int, before time.Time) (int, int64, error) {
	n, freed := 0, int64(0)
	var errs []error
	for sum, f := range files {
		if refs[sum] > 0 || !f.mtime.Before(before) {
			continue
		}
		if err := os.Remove(inputFilePath(dir, sum[:])); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
		freed += f.size
	}
	return n, freed, errors.Join(errs...)
}

// PurgeFilter chooses the records Purge deletes: those answered before
// Before (when set), or those of request ID (when set).
type PurgeFilter struct {
	Before time.Time
	ID     string
}

// PurgeReport says what Purge deleted.
type PurgeReport struct {
	Records       int
	Segments      int // segments rewritten or removed
	RemovedInputs int
	// Open says records may remain in the segment an endpoint is writing
	// (Endpoint.RotateLog first closes it).
	Open bool
}

// Purge deletes the records f chooses from pipeline's log: a segment all
// of whose records go is removed, one with some is rewritten without them
// (temp file, fsync, rename) and re-indexed, and input files no record
// refers to any more are removed. The segment an endpoint is writing is
// left alone: rotate it first (Endpoint.RotateLog).
func Purge(predLogDir, pipeline string, f PurgeFilter, gid int) (PurgeReport, error) {
	var rep PurgeReport
	if f.Before.IsZero() == (f.ID == "") {
		return rep, errors.New("purge: give exactly one of a time bound and a request id")
	}
	dir := filepath.Join(predLogDir, pipeline)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return rep, nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return rep, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	defer unlock()
	segs, err := loadSegInfo(dir)
	if err != nil {
		return rep, err
	}
	before := f.Before.UnixNano()
	h := idHash(f.ID)
	match := func(fr *frame) bool {
		if f.ID != "" {
			return string(fr.id) == f.ID
		}
		return fr.time < before
	}
	var errs []error
	for i := range segs {
		s := &segs[i]
		if s.legacy != "" {
			// Version 1 lines keep only a digest of the input; a time bound
			// removes the whole file when it is older.
			if f.ID == "" && s.maxT < before {
				errs = append(errs, removeSegment(dir, s))
				rep.Segments++
			}
			continue
		}
		if s.open {
			rep.Open = true
			continue
		}
		if f.ID != "" {
			if x, err := openIndex(idxPath(dir, s.num), -1); err == nil {
				hit := false
				x.find(h, func(int64) bool { hit = true; return true })
				x.close()
				if !hit {
					continue
				}
			}
		} else if s.n > 0 && s.minT >= before {
			continue
		}
		n, err := rewriteWithout(dir, s.num, match, gid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n > 0 {
			rep.Records += n
			rep.Segments++
		}
	}
	// What input files are still referred to, after the rewrites.
	segs, err = loadSegInfo(dir)
	if err != nil {
		return rep, errors.Join(append(errs, err)...)
	}
	refs := map[[32]byte]int{}
	for _, s := range segs {
		for _, fl := range s.files {
			refs[fl]++
		}
	}
	files, err := listInputFiles(dir)
	if err != nil {
		return rep, errors.Join(append(errs, err)...)
	}
	rep.RemovedInputs, _, err = removeUnreferenced(dir, files, refs, time.Now().Add(-inputGrace))
	return rep, errors.Join(append(errs, err)...)
}

// rewriteWithout rewrites segment num without the records match chooses
// and returns how many went. The caller holds the folder lock.
func rewriteWithout(dir string, num uint64, match func(*frame) bool, gid int) (int, error) {
	src := segPath(dir, num)
	in, err := os.Open(src)
	if err != nil {
		return 0, nil //nolint:nilerr // removed meanwhile
	}
	defer func() { _ = in.Close() }() // read-only
	var hdr [segHeaderSize]byte
	if _, err := io.ReadFull(in, hdr[:]); err != nil || string(hdr[:8]) != segMagic {
		return 0, nil //nolint:nilerr // no whole header: holds nothing
	}
	removed := 0
	if _, err := scanFrames(io.NewSectionReader(in, segHeaderSize, 1<<62), segHeaderSize, func(_ int64, f *frame) error {
		if match(f) {
			removed++
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if removed == 0 {
		return 0, nil
	}
	out, err := os.CreateTemp(dir, ".tmp-purge-*")
	if err != nil {
		return 0, err
	}
	tmp := out.Name()
	defer func() { _ = os.Remove(tmp) }() // a no-op after the rename
	x := &segIndex{num: num}
	off := int64(segHeaderSize)
	buf := append([]byte{}, hdr[:]...)
	_, err = scanFrames(io.NewSectionReader(in, segHeaderSize, 1<<62), segHeaderSize, func(_ int64, f *frame) error {
		if match(f) {
			return nil
		}
		start := len(buf)
		buf = appendFrame(buf, f.flags, f.status, time.Unix(0, f.time), time.Duration(f.latency)*time.Microsecond, f.rows,
			f.id, string(f.model), string(f.proto), f.ctype, f.input, f.output)
		sealFrame(buf[start:])
		x.add(f, off)
		off += int64(len(buf) - start)
		if len(buf) >= 1<<20 {
			if _, err := out.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		return nil
	})
	if err == nil {
		_, err = out.Write(buf)
	}
	if err == nil {
		err = setPerm(out, gid)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("rewrite %s: %w", src, err)
	}
	if len(x.entries) == 0 {
		if err := removeSegment(dir, &segInfo{num: num}); err != nil {
			return 0, err
		}
		return removed, syncDir(dir)
	}
	// The old index goes first: between the rename and the new index the
	// segment reads through a scan, never through an index of the old one.
	if err := os.Remove(idxPath(dir, num)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if err := os.Rename(tmp, src); err != nil {
		return 0, err
	}
	if err := syncDir(dir); err != nil {
		return 0, err
	}
	x.size = off
	if err := writeIndex(dir, x, gid); err != nil {
		return removed, fmt.Errorf("index %s: %w", src, err)
	}
	return removed, nil
}

// WriteBackup writes every pipeline's prediction log under predLogDir to w
// as a tar archive: segments and indexes, <pipeline>/<file>. Inputs kept
// as files (bodies over InlineInputMax) are left out; records refer to
// them by digest and read back without their input after a restore.
// Inline inputs stay in their records. A segment being written is copied
// up to the length it had when it was opened; a torn tail reads as such.
func WriteBackup(predLogDir string, w io.Writer) (files int, err error) {
	tw := tar.NewWriter(w)
	pipes, err := os.ReadDir(predLogDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("prediction logs %s: %w", predLogDir, err)
	}
	for _, p := range pipes {
		if !p.IsDir() {
			continue
		}
		dir := filepath.Join(predLogDir, p.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			return files, fmt.Errorf("prediction log %s: %w", dir, err)
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			n := e.Name()
			if e.Type().IsRegular() && (strings.HasSuffix(n, segExt) || strings.HasSuffix(n, idxExt)) && !strings.HasPrefix(n, ".") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			ok, err := addToTar(tw, filepath.Join(dir, n), p.Name()+"/"+n)
			if err != nil {
				return files, err
			}
			if ok {
				files++
			}
		}
	}
	if err := tw.Close(); err != nil {
		return files, fmt.Errorf("prediction log backup: %w", err)
	}
	return files, nil
}

func addToTar(tw *tar.Writer, path, name string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // removed by retention meanwhile
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }() // read-only
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return false, fmt.Errorf("prediction log backup %s: %w", path, err)
	}
	if _, err := io.Copy(tw, io.LimitReader(f, fi.Size())); err != nil {
		return false, fmt.Errorf("prediction log backup %s: %w", path, err)
	}
	return true, nil
}
