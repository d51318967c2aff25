package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// job is one batch handed to a worker; result is what the coordinator gets back.
type job struct {
	src   *source
	name  string
	batch bool
	spec  *config.Pipeline
}

type result struct {
	job      *job
	retry    time.Duration // > 0: look again after this long
	ingested bool
	diskLow  string
}

// entry is one file of a batch, as lstat saw it before it was opened.
type entry struct {
	rel  string // path inside the batch (the file name for a loose file)
	path string
	fi   fs.FileInfo
}

// Rules of rejections found before a file is read.
const (
	RuleSymlink     = "symlink"
	RuleHardlink    = "hardlink"
	RuleSpecial     = "special_file" // FIFO, socket, device
	RuleName        = "name"         // not UTF-8, or escaping the folder
	RuleEmpty       = "empty_file"
	RuleMaxFileSize = "max_file_size"
	RuleEmptyBatch  = "empty_batch"
)

// smallFile is the size up to which a file is read into memory in one read and parsed from
// there; bigger files stream through a pipe, hashing on one core and parsing on another.
const smallFile = 1 << 20

func (m *Manager) process(ctx context.Context, j *job) *result {
	res := &result{job: j}
	if j.spec == nil {
		return res
	}
	start := time.Now()
	root := filepath.Join(j.src.dir, j.name)
	ents, rej, err := enumerate(j, root)
	if errors.Is(err, fs.ErrNotExist) {
		return res // gone before we got to it
	}
	if err != nil {
		m.log.Warn("ingest: list batch", "path", root, "err", err)
		res.retry = time.Second
		return res
	}
	if rej == nil && len(ents) == 0 {
		// Closed with nothing in it (yet): a writer that made _SUCCESS first may still be
		// copying. Give it partialWait, then refuse the batch.
		if fi, err := os.Lstat(filepath.Join(root, SuccessMarker)); err == nil && time.Since(fi.ModTime()) < partialWait {
			res.retry = 250 * time.Millisecond
			return res
		}
		rej = &Violation{Rule: RuleEmptyBatch, File: j.name, Observed: "no files", Allowed: "at least one file besides " + SuccessMarker}
	}
	if rej != nil {
		m.reject(ctx, j, root, rej)
		return res
	}
	var need int64
	for _, e := range ents {
		need += 2 * e.fi.Size()
	}
	if why := m.diskLow(need); why != "" {
		res.diskLow, res.retry = why, 5*time.Second
		return res
	}
	b, retry, err := m.read(ctx, j, ents)
	if err != nil {
		if ctx.Err() != nil {
			res.retry = time.Second
			return res
		}
		var gone *goneError
		if errors.As(err, &gone) {
			m.event(ctx, storage.Event{Kind: "ingest.rejected", Pipeline: j.src.pipeline,
				Details: map[string]string{"path": quoteName(gone.path), "kind": string(j.src.kind), "reason": gone.why}})
			m.log.Warn("ingest: file changed under the reader; not ingested", "path", gone.path, "reason", gone.why)
			return res // the coordinator looks at the name again
		}
		m.log.Error("ingest: read batch", "path", root, "err", err)
		res.retry = 5 * time.Second
		return res
	}
	if retry > 0 {
		res.retry = retry
		return res
	}
	digests := make([]string, len(b.files))
	for i, f := range b.files {
		digests[i] = f.Digest
	}
	dup, busy := m.index.claim(j.src.pipeline, j.src.kind, digests)
	if busy {
		res.retry = 50 * time.Millisecond
		return res
	}
	if dup != "" {
		m.duplicate(ctx, j, root, ents, dup)
		return res
	}
	d, meta, err := m.commit(ctx, j, b, start)
	if err != nil {
		m.index.settle(j.src.pipeline, j.src.kind, digests, nil)
		res.retry = 5 * time.Second
		if ctx.Err() != nil {
			return res // stopping: the next start takes it
		}
		m.log.Error("ingest: commit dataset", "path", root, "err", err)
		return res
	}
	m.index.settle(j.src.pipeline, j.src.kind, digests, &d)
	res.ingested = true
	if d.State == storage.DatasetAccepted {
		m.index.foldAdmitted(d, meta.Manifest)
		m.observe("committed", root, d.ID)
		if err := removeEntries(root, ents, j.batch); err != nil {
			m.log.Error("ingest: empty drop folder after commit", "path", root, "dataset", d.ID, "err", err)
			res.retry = 30 * time.Second
		}
		return res
	}
	m.observe("quarantined", root, d.ID)
	if err := m.moveToQuarantine(d, root, j.name, reasonOf(d, meta.Report)); err != nil {
		m.log.Error("ingest: move batch to quarantine", "path", root, "dataset", d.ID, "err", err)
		res.retry = 30 * time.Second
	}
	return res
}

// enumerate lists a batch's files and rejects what must never be read: links, special
// files, bad names, empty and oversized files.
func enumerate(j *job, root string) ([]entry, *Violation, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return nil, nil, err
	}
	var ents []entry
	var rej *Violation
	check := func(rel, path string, fi fs.FileInfo) {
		if rej != nil {
			return
		}
		if v := rejectReason(j.spec, rel, fi); v != nil {
			rej = v
			return
		}
		ents = append(ents, entry{rel: rel, path: path, fi: fi})
	}
	if !j.batch || !fi.IsDir() {
		check(j.name, root, fi)
		return ents, rej, nil
	}
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if p == root || rel == SuccessMarker {
			return nil
		}
		if ignoredName(de.Name()) {
			// Temp names left in a closed batch are not part of it (see partialWait).
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if de.IsDir() {
			if !utf8.ValidString(rel) {
				check(rel, p, fi)
			}
			return nil
		}
		check(filepath.ToSlash(rel), p, fi)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(ents, func(a, b entry) int { return strings.Compare(a.rel, b.rel) })
	return ents, rej, nil
}

func rejectReason(spec *config.Pipeline, rel string, fi fs.FileInfo) *Violation {
	v := func(rule, observed, allowed string) *Violation {
		return &Violation{Rule: rule, File: rel, Observed: observed, Allowed: allowed}
	}
	switch mode := fi.Mode(); {
	case !utf8.ValidString(rel):
		return v(RuleName, quoteName(rel), "a UTF-8 name")
	case !filepath.IsLocal(rel):
		return v(RuleName, quoteName(rel), "a name inside the folder")
	case mode&fs.ModeSymlink != 0:
		return v(RuleSymlink, "a symbolic link", "a regular file (links are never followed)")
	case mode&fs.ModeNamedPipe != 0:
		return v(RuleSpecial, "a FIFO", "a regular file")
	case mode&fs.ModeSocket != 0:
		return v(RuleSpecial, "a socket", "a regular file")
	case mode&fs.ModeDevice != 0:
		return v(RuleSpecial, "a device", "a regular file")
	case mode.IsDir():
		return v(RuleSpecial, "a folder", "a regular file")
	case !mode.IsRegular():
		return v(RuleSpecial, mode.Type().String(), "a regular file")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return v(RuleHardlink, fmt.Sprintf("%d links", st.Nlink), "1 link (a hard link shares its content with a file outside the folder)")
	}
	if fi.Size() == 0 {
		return v(RuleEmpty, "0 bytes", "at least 1 byte")
	}
	if max := int64(spec.Data.MaxFileSize); fi.Size() > max {
		return v(RuleMaxFileSize, strconv.FormatInt(fi.Size(), 10)+" bytes", "at most "+strconv.FormatInt(max, 10)+" bytes (data.max_file_size)")
	}
	return nil
}

// quoteName shows a file name safely: as is when it is printable UTF-8, else Go-quoted.
func quoteName(s string) string {
	if utf8.ValidString(s) && strconv.CanBackquote(s) {
		return s
	}
	return strconv.Quote(s)
}

// goneError: a file was deleted or replaced while it was being read.
type goneError struct{ path, why string }

func (e *goneError) Error() string { return e.path + ": " + e.why }

// batchRead is what reading a batch produced.
type batchRead struct {
	files   []ManifestFile
	refs    []storage.FileRef
	tab     *tabular
	train   *partSink
	holdout *partSink
	owner   uint32
}

// read opens, leases and reads every file of the batch once, streaming each into the blob
// store while the parser splits and checks its rows. A file some process still holds open
// for writing makes the batch wait (retry > 0).
func (m *Manager) read(ctx context.Context, j *job, ents []entry) (*batchRead, time.Duration, error) {
	b := &batchRead{}
	if st, ok := ents[0].fi.Sys().(*syscall.Stat_t); ok {
		b.owner = st.Uid
	}
	tabularFormat := j.spec.Data.Format != config.FormatFiles
	if tabularFormat {
		ref, _, err := m.index.schema(m.opt.Store, j.src.pipeline, j.src.kind)
		if err != nil {
			return nil, 0, err
		}
		b.train = &partSink{ctx: ctx, store: m.opt.Store}
		b.holdout = &partSink{ctx: ctx, store: m.opt.Store}
		b.tab = newTabular(j.spec, string(j.src.kind), ref, b.train, b.holdout)
	}
	ok := false
	defer func() {
		if !ok && b.train != nil {
			b.train.abort()
			b.holdout.abort()
		}
	}()
	for _, e := range ents {
		ref, retry, err := m.readFile(ctx, e, b.tab)
		if err != nil || retry > 0 {
			return nil, retry, err
		}
		b.files = append(b.files, ManifestFile{Path: e.rel, Digest: ref.Digest, Size: ref.Size})
		b.refs = append(b.refs, storage.FileRef{Path: e.rel, Blob: ref})
	}
	ok = true
	return b, 0, nil
}

// testHookAfterCopy lets tests change a file between its read and the checks after it.
var testHookAfterCopy func(path string)

// leaseBackoff is how soon a file whose writer still has it open is looked at again.
const leaseBackoff = 100 * time.Millisecond

func (m *Manager) readFile(ctx context.Context, e entry, tab *tabular) (storage.BlobRef, time.Duration, error) {
	fd, err := unix.Open(e.path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return storage.BlobRef{}, 0, &goneError{e.path, "deleted before it was read"}
	case errors.Is(err, unix.ELOOP):
		return storage.BlobRef{}, 0, &goneError{e.path, "replaced by a symbolic link before it was read"}
	case err != nil:
		return storage.BlobRef{}, 0, fmt.Errorf("open %s: %w", e.path, err)
	}
	f := os.NewFile(uintptr(fd), e.path)
	defer func() { _ = f.Close() }() // read-only
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return storage.BlobRef{}, 0, fmt.Errorf("fstat %s: %w", e.path, err)
	}
	if st, ok := e.fi.Sys().(*syscall.Stat_t); !ok || st.Ino != before.Ino || st.Dev != before.Dev || before.Mode&unix.S_IFMT != unix.S_IFREG {
		return storage.BlobRef{}, 0, &goneError{e.path, "replaced before it was read"}
	}
	// The kernel knows whether anyone holds the file open for writing: a read lease is
	// refused while they do. Filesystems without leases (and callers without the right to
	// take one) fall back to settle alone.
	leased := false
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err == nil {
		leased = true
		defer func() { _, _ = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK) }()
	} else if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY) {
		return storage.BlobRef{}, leaseBackoff, nil
	} else {
		m.leaseUnsupported(e.path, err)
	}
	ref, err := m.copyFile(ctx, f, before.Size, tab, e.rel)
	if err != nil {
		return storage.BlobRef{}, 0, err
	}
	if testHookAfterCopy != nil {
		testHookAfterCopy(e.path)
	}
	// The path first: a delete or a replace also changes the old inode's ctime.
	var now unix.Stat_t
	if err := unix.Lstat(e.path, &now); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return storage.BlobRef{}, 0, &goneError{e.path, "deleted while being read"}
		}
		return storage.BlobRef{}, 0, fmt.Errorf("lstat %s: %w", e.path, err)
	}
	if now.Ino != before.Ino || now.Dev != before.Dev {
		return storage.BlobRef{}, 0, &goneError{e.path, "replaced while being read"}
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return storage.BlobRef{}, 0, fmt.Errorf("fstat %s: %w", e.path, err)
	}
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim || ref.Size != before.Size {
		return storage.BlobRef{}, leaseBackoff, nil // written while being read: read it again later
	}
	if leased {
		if l, err := unix.FcntlInt(uintptr(fd), unix.F_GETLEASE, 0); err == nil && l != unix.F_RDLCK {
			return storage.BlobRef{}, leaseBackoff, nil // opened for writing while being read
		}
	}
	return ref, 0, nil
}

func (m *Manager) leaseUnsupported(path string, err error) {
	if m.leaseWarned.CompareAndSwap(false, true) {
		m.log.Warn("read leases unavailable; completion relies on settle alone", "path", path, "err", err)
	}
}

// copyFile streams f into the blob store once, feeding the parser on the way.
func (m *Manager) copyFile(ctx context.Context, f *os.File, size int64, tab *tabular, name string) (storage.BlobRef, error) {
	if size <= smallFile {
		buf := make([]byte, size+1)
		n, err := io.ReadFull(f, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return storage.BlobRef{}, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		buf = buf[:n]
		ref, err := m.opt.Store.PutBlob(ctx, bytes.NewReader(buf))
		if err != nil {
			return storage.BlobRef{}, err
		}
		if tab != nil {
			if err := tab.parse(name, bytes.NewReader(buf)); err != nil {
				return storage.BlobRef{}, err
			}
		}
		return ref, nil
	}
	select {
	case m.big <- struct{}{}:
		defer func() { <-m.big }()
	case <-ctx.Done():
		return storage.BlobRef{}, ctx.Err()
	}
	if tab == nil {
		return m.opt.Store.PutBlob(ctx, f)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := tab.parse(name, pr)
		_, _ = io.Copy(io.Discard, pr) // let the writer finish whatever the parser left
		done <- err
	}()
	ref, err := m.opt.Store.PutBlob(ctx, io.TeeReader(f, pw))
	_ = pw.CloseWithError(err) // nil closes with EOF
	perr := <-done
	if err != nil {
		return storage.BlobRef{}, err
	}
	if perr != nil {
		return storage.BlobRef{}, perr
	}
	return ref, nil
}

// partSink collects one part (train or holdout). Small parts stay in memory, so a part that
// turns out byte-equal to a dropped file is not written twice; a part outgrowing spillAt
// streams into the blob store through a pipe.
type partSink struct {
	ctx   context.Context
	store Store
	buf   bytes.Buffer
	pw    *io.PipeWriter
	bw    *bufio.Writer // rows are small: batch them before the pipe's goroutine handoff
	done  chan struct{}
	ref   storage.BlobRef
	err   error
}

const spillAt = 1 << 20

func (p *partSink) Write(b []byte) (int, error) {
	if p.pw == nil && p.buf.Len()+len(b) > spillAt {
		pr, pw := io.Pipe()
		p.pw, p.done = pw, make(chan struct{})
		go func() {
			defer close(p.done)
			p.ref, p.err = p.store.PutBlob(p.ctx, pr)
			_ = pr.CloseWithError(p.err)
		}()
		p.bw = bufio.NewWriterSize(pw, 256<<10)
		if _, err := p.bw.Write(p.buf.Bytes()); err != nil {
			return 0, err
		}
		p.buf = bytes.Buffer{}
	}
	if p.bw != nil {
		return p.bw.Write(b)
	}
	return p.buf.Write(b)
}

// close stores the part unless it equals one of the batch's files, and returns its ref.
func (p *partSink) close(files []storage.FileRef) (storage.BlobRef, error) {
	if p.pw != nil {
		err := p.bw.Flush()
		_ = p.pw.CloseWithError(err)
		<-p.done
		if p.err == nil && err != nil {
			p.err = err
		}
		return p.ref, p.err
	}
	sum := sha256.Sum256(p.buf.Bytes())
	digest := "sha256:" + hex.EncodeToString(sum[:])
	for _, f := range files {
		if f.Blob.Digest == digest {
			return f.Blob, nil
		}
	}
	return p.store.PutBlob(p.ctx, bytes.NewReader(p.buf.Bytes()))
}

func (p *partSink) abort() {
	if p.pw != nil {
		_ = p.pw.CloseWithError(errors.New("batch abandoned"))
		<-p.done
	}
}

// commit validates the read batch, writes its meta blob and records the dataset (accepted or
// quarantined) with its lineage and event in one transaction.
func (m *Manager) commit(ctx context.Context, j *job, b *batchRead, start time.Time) (storage.Dataset, *Meta, error) {
	spec := j.spec
	man := &Manifest{Format: spec.Data.Format, Files: b.files}
	rep := Report{}
	d := storage.Dataset{Pipeline: j.src.pipeline, Kind: j.src.kind, Files: slices.Clone(b.refs)}
	var violations []Violation
	if b.tab != nil {
		t := b.tab
		schema, prof := t.finish()
		man.Rows, man.Label, man.Schema, man.Profile = t.rows, spec.Data.Label, schema, prof
		if t.fraction > 0 {
			man.Split = &Split{Fraction: t.fraction, Seed: spec.Evaluate.Holdout.Seed}
		}
		for _, part := range []struct {
			name string
			sink *partSink
			rows int64
			dst  **storage.BlobRef
		}{{"train", b.train, t.train, &d.Train}, {"holdout", b.holdout, t.holdout, &d.Holdout}} {
			if part.rows == 0 {
				part.sink.abort()
				continue
			}
			ref, err := part.sink.close(b.refs)
			if err != nil {
				return d, nil, fmt.Errorf("store %s part: %w", part.name, err)
			}
			*part.dst = &ref
			man.Parts = append(man.Parts, Part{Name: part.name, Digest: ref.Digest, Size: ref.Size, Rows: part.rows})
		}
		rep.Checks = t.checks()
		for _, v := range t.violations {
			violations = append(violations, *v)
		}
		if dr := spec.Data.Validate.Drift; dr != nil && j.src.kind == storage.KindData && len(violations) == 0 {
			ref, desc, err := m.index.reference(m.opt.Store, j.src.pipeline)
			if err != nil {
				return d, nil, fmt.Errorf("drift reference: %w", err)
			}
			rep.Reference = desc
			if ref.versions == 0 {
				rep.Checks = append(rep.Checks, Check{Rule: "drift", OK: true, Observed: "no reference yet (first version)", Allowed: "psi at most " + fmtFrac(dr.PSIMax)})
			} else {
				rep.Drift = ref.drift(prof, spec.Data.Label)
				worst, worstName := -1.0, ""
				for _, name := range sortedKeys(rep.Drift) {
					if p := rep.Drift[name].PSI; p != nil && *p > worst {
						worst, worstName = *p, name
					}
				}
				c := Check{Rule: "drift", OK: worst <= dr.PSIMax, Allowed: "psi at most " + fmtFrac(dr.PSIMax)}
				if worstName != "" {
					c.Observed = fmt.Sprintf("psi %s (%s)", fmtFrac(worst), worstName)
				} else {
					c.Observed = "no feature with enough values to compare"
				}
				rep.Checks = append(rep.Checks, c)
				if !c.OK {
					violations = append(violations, Violation{Rule: "drift", Column: worstName,
						Observed: "psi " + fmtFrac(worst), Allowed: "at most " + fmtFrac(dr.PSIMax) + " against " + desc})
				}
			}
		}
	} else {
		man.Rows = int64(len(b.files))
		violations = append(violations, fileRules(spec, b.files, &rep)...)
	}
	d.Rows = man.Rows
	rep.OK = len(violations) == 0
	rep.Violations = violations
	manJSON, err := json.Marshal(man)
	if err != nil {
		return d, nil, err
	}
	sum := sha256.Sum256(manJSON)
	d.Digest = "sha256:" + hex.EncodeToString(sum[:])
	meta := &Meta{V: 1, Manifest: man, Report: rep}
	metaRef, err := m.putMeta(ctx, meta)
	if err != nil {
		return d, nil, err
	}
	d.Files = append(d.Files, storage.FileRef{Path: MetaName, Blob: metaRef})
	d.State = storage.DatasetAccepted
	if !rep.OK {
		d.State = storage.DatasetQuarantined
		d.Reason = violations[0].String()
	}
	details := map[string]string{
		"path": quoteName(filepath.Join(j.src.dir, j.name)), "digest": d.Digest, "rows": strconv.FormatInt(d.Rows, 10),
		"files": strconv.Itoa(len(b.files)), "took": time.Since(start).Round(time.Microsecond).String(),
	}
	for _, p := range man.Parts {
		details[p.Name+"_rows"] = strconv.FormatInt(p.Rows, 10)
	}
	kind := "dataset.accepted"
	if !rep.OK {
		kind = "dataset.quarantined"
		v := violations[0]
		details["rule"], details["observed"], details["allowed"] = v.Rule, v.Observed, v.Allowed
		if v.File != "" {
			details["file"] = quoteName(v.File)
		}
		if v.Line > 0 {
			details["line"] = strconv.FormatInt(v.Line, 10)
		}
		if v.Column != "" {
			details["column"] = v.Column
		}
	}
	out, err := m.record(ctx, d, b.owner, kind, details, violations)
	return out, meta, err
}

func fileRules(spec *config.Pipeline, files []ManifestFile, rep *Report) []Violation {
	fr := spec.Data.Validate.Files
	var out []Violation
	rows := spec.Data.Validate.Rows
	n := len(files)
	if rows.Min > 0 && n < rows.Min || rows.Max > 0 && n > rows.Max {
		out = append(out, Violation{Rule: "rows", Observed: fmt.Sprintf("%d files", n), Allowed: fmt.Sprintf("%d to %d files (validate.rows)", rows.Min, rows.Max)})
	}
	rep.Checks = append(rep.Checks, Check{Rule: "rows", OK: len(out) == 0, Observed: fmt.Sprintf("%d files", n)})
	if fr == nil {
		return out
	}
	if fr.MaxCount > 0 {
		ok := n <= fr.MaxCount
		rep.Checks = append(rep.Checks, Check{Rule: "files.max_count", OK: ok, Observed: strconv.Itoa(n), Allowed: "at most " + strconv.Itoa(fr.MaxCount)})
		if !ok {
			out = append(out, Violation{Rule: "files.max_count", Observed: fmt.Sprintf("%d files", n), Allowed: fmt.Sprintf("at most %d", fr.MaxCount)})
		}
	}
	for _, f := range files {
		if len(fr.Extensions) > 0 && !slices.ContainsFunc(fr.Extensions, func(e string) bool { return strings.EqualFold(filepath.Ext(f.Path), e) }) {
			out = append(out, Violation{Rule: "files.extensions", File: f.Path, Observed: strconv.Quote(filepath.Ext(f.Path)), Allowed: strings.Join(fr.Extensions, ", ")})
			break
		}
	}
	rep.Checks = append(rep.Checks, Check{Rule: "files.extensions", OK: !slices.ContainsFunc(out, func(v Violation) bool { return v.Rule == "files.extensions" })})
	if fr.MaxSize > 0 {
		ok := true
		for _, f := range files {
			if f.Size > int64(fr.MaxSize) {
				out = append(out, Violation{Rule: "files.max_size", File: f.Path, Observed: fmt.Sprintf("%d bytes", f.Size), Allowed: fmt.Sprintf("at most %d bytes", int64(fr.MaxSize))})
				ok = false
				break
			}
		}
		rep.Checks = append(rep.Checks, Check{Rule: "files.max_size", OK: ok})
	}
	return out
}

func (m *Manager) putMeta(ctx context.Context, meta *Meta) (storage.BlobRef, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return storage.BlobRef{}, err
	}
	return m.opt.Store.PutBlob(ctx, bytes.NewReader(b))
}

// EdgeDropped links the uid owning a dropped batch to the dataset made of it.
const EdgeDropped storage.EdgeType = "dropped"

// record creates the dataset with its lineage and event in one transaction.
func (m *Manager) record(ctx context.Context, d storage.Dataset, owner uint32, kind string, details map[string]string, violations []Violation) (storage.Dataset, error) {
	var out storage.Dataset
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		var err error
		out, err = tx.CreateDataset(d)
		if err != nil {
			return err
		}
		if err := tx.Link("uid:"+strconv.FormatUint(uint64(owner), 10), out.ID, EdgeDropped); err != nil {
			return err
		}
		if len(violations) > 0 {
			if err := tx.Link("check:"+violations[0].Rule, out.ID, storage.EdgeQuarantined); err != nil {
				return err
			}
		}
		_, err = tx.Append(storage.Event{Kind: kind, Pipeline: d.Pipeline, Refs: []string{out.ID}, Details: details})
		return err
	})
	return out, err
}

// reject records a batch that was refused before it was read: a quarantined dataset with no
// content, and the entry moved aside so it is not seen again.
func (m *Manager) reject(ctx context.Context, j *job, root string, v *Violation) {
	var owner uint32
	if fi, err := os.Lstat(root); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = st.Uid
		}
	}
	meta := &Meta{V: 1, Report: Report{OK: false, Violations: []Violation{*v}}}
	ref, err := m.putMeta(ctx, meta)
	if err != nil {
		m.log.Error("ingest: store rejection", "path", root, "err", err)
		return
	}
	d := storage.Dataset{Pipeline: j.src.pipeline, Kind: j.src.kind, State: storage.DatasetQuarantined,
		Files: []storage.FileRef{{Path: MetaName, Blob: ref}}, Reason: v.String()}
	details := map[string]string{"path": quoteName(root), "rule": v.Rule, "observed": v.Observed, "allowed": v.Allowed, "file": quoteName(v.File), "read": "no"}
	d, err = m.record(ctx, d, owner, "dataset.quarantined", details, []Violation{*v})
	if err != nil {
		m.log.Error("ingest: record rejection", "path", root, "err", err)
		return
	}
	m.observe("quarantined", root, d.ID)
	m.log.Warn("ingest: rejected", "path", quoteName(root), "dataset", d.ID, "reason", d.Reason)
	if err := m.moveToQuarantine(d, root, j.name, reasonOf(d, meta.Report)); err != nil {
		m.log.Error("ingest: move rejected entry to quarantine", "path", quoteName(root), "dataset", d.ID, "err", err)
	}
}

// duplicate handles a batch whose content is already a dataset: an event, and the drop
// folder emptied (into the quarantine folder when the first copy is quarantined, which also
// finishes a move a crash interrupted).
func (m *Manager) duplicate(ctx context.Context, j *job, root string, ents []entry, existing string) {
	m.event(ctx, storage.Event{Kind: "dataset.duplicate", Pipeline: j.src.pipeline, Refs: []string{existing},
		Details: map[string]string{"path": quoteName(root), "kind": string(j.src.kind)}})
	m.observe("duplicate", root, existing)
	var d storage.Dataset
	err := m.opt.Store.View(func(tx *storage.Tx) error {
		var err error
		d, err = tx.Dataset(existing)
		return err
	})
	if err == nil && d.State == storage.DatasetQuarantined {
		qdir := filepath.Join(m.opt.QuarantineDir, d.ID)
		if _, err := os.Lstat(filepath.Join(qdir, j.name)); errors.Is(err, fs.ErrNotExist) {
			if err := m.moveToQuarantine(d, root, j.name, nil); err == nil {
				return
			}
		}
	}
	if err := removeEntries(root, ents, j.batch); err != nil {
		m.log.Error("ingest: remove duplicate", "path", root, "err", err)
	}
}

func (m *Manager) event(ctx context.Context, e storage.Event) {
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.Append(e)
		return err
	})
	if err != nil {
		m.log.Error("ingest: record event", "kind", e.Kind, "err", err)
	}
}

// removeEntries empties the drop folder of a committed batch: each file only while the path
// still names the file that was read, then the marker, then the folders.
func removeEntries(root string, ents []entry, batch bool) error {
	var errs []error
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Lstat(e.path, &st); err != nil {
			continue
		}
		if o, ok := e.fi.Sys().(*syscall.Stat_t); ok && (o.Ino != st.Ino || o.Dev != st.Dev) {
			continue // replaced since: the new file is somebody else's drop
		}
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !batch {
		return errors.Join(errs...)
	}
	_ = os.Remove(filepath.Join(root, SuccessMarker))
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		// A folder still holding leftovers (temp names, a file added since) stays.
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Reason is REASON.json in quarantine/<pipeline>/<dN>/: the first violation in full, and all
// of them.
type Reason struct {
	Dataset    string      `json:"dataset"`
	Pipeline   string      `json:"pipeline"`
	Kind       string      `json:"kind"`
	Rule       string      `json:"rule"`
	File       string      `json:"file,omitempty"`
	Line       int64       `json:"line,omitempty"`
	Column     string      `json:"column,omitempty"`
	Observed   string      `json:"observed"`
	Allowed    string      `json:"allowed"`
	Message    string      `json:"message"`
	Read       bool        `json:"read"` // false: rejected before reading; release is refused
	Violations []Violation `json:"violations"`
	Time       time.Time   `json:"time"`
	Release    string      `json:"release"`
}

func reasonOf(d storage.Dataset, rep Report) *Reason {
	if len(rep.Violations) == 0 {
		return nil
	}
	v := rep.Violations[0]
	r := &Reason{Dataset: d.ID, Pipeline: d.Pipeline, Kind: string(d.Kind), Rule: v.Rule, File: v.File, Line: v.Line,
		Column: v.Column, Observed: v.Observed, Allowed: v.Allowed, Message: v.String(), Violations: rep.Violations,
		Time: d.Created, Read: len(DataFiles(d)) > 0}
	if r.Read {
		r.Release = "kiln datasets release " + d.ID
	} else {
		r.Release = "not possible: the batch was rejected before it was read; fix it and drop it again"
	}
	return r
}

// moveToQuarantine moves the batch (file or folder) to quarantine/<p>/<dN>/<name> beside
// its REASON.json, written first so a batch there always says why.
func (m *Manager) moveToQuarantine(d storage.Dataset, root, name string, reason *Reason) error {
	qdir := filepath.Join(m.opt.QuarantineDir, d.ID)
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return err
	}
	if reason != nil {
		b, err := json.MarshalIndent(reason, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFileSync(filepath.Join(qdir, "REASON.json"), append(b, '\n')); err != nil {
			return err
		}
	}
	if err := os.Rename(root, filepath.Join(qdir, name)); err != nil {
		return err
	}
	for _, dir := range []string{qdir, filepath.Dir(root), filepath.Dir(qdir)} {
		_ = syncDir(dir) // durability of the move; the record is already durable
	}
	return nil
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
