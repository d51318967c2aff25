package ingest

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/kiln-edge/kiln/daemon/crashpoint"
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
	if j.spec.Data.Format == config.FormatImages && !j.batch && lateLabelsFormat(j.spec, j.src.kind, []string{j.name}) == "" {
		if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
			return res
		}
		m.reject(ctx, j, root, &Violation{Rule: RuleImageLayout, File: j.name, Observed: "a loose file, not a batch folder",
			Allowed: "images come in a batch folder closed by " + SuccessMarker + " (<batch>/<class>/<image>, or images and <batch>/" + LabelsCSV + ")"})
		return res
	}
	ents, rej, err := enumerate(j, root)
	if errors.Is(err, fs.ErrNotExist) {
		return res // gone before we got to it
	}
	if errors.Is(err, errWriterOpen) {
		res.retry = leaseBackoff
		return res
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
		res.diskLow, res.retry = diskFault(err), 5*time.Second
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
		res.diskLow = diskFault(err)
		return res
	}
	crashpoint.Hit("ingest.after-commit")
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
	busy := false
	check := func(rel, path string, fi fs.FileInfo) {
		if rej != nil || busy {
			return
		}
		if v := rejectReason(j.spec, rel, fi); v != nil {
			// Created but not written yet: a writer that still has it open is waited for,
			// as any writer is; empty is what it is once nobody writes.
			if v.Rule == RuleEmpty && writerOpen(path) {
				busy = true
				return
			}
			rej = v
			return
		}
		ents = append(ents, entry{rel: rel, path: path, fi: fi})
	}
	if !j.batch || !fi.IsDir() {
		check(j.name, root, fi)
		if busy {
			return nil, nil, errWriterOpen
		}
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
	if busy {
		return nil, nil, errWriterOpen
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

// errWriterOpen: a file of the batch is still open for writing.
var errWriterOpen = errors.New("a writer has it open")

// writerOpen reports whether some process holds a regular file open for writing: the kernel
// refuses a read lease then. Without leases (no CAP_LEASE, a filesystem without them) it
// says no, and settle alone decides, as for any file.
func writerOpen(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer func() { _ = unix.Close(fd) }() // read-only
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
	if err == nil {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		return false
	}
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY)
}

// goneError: a file was deleted or replaced while it was being read.
type goneError struct{ path, why string }

func (e *goneError) Error() string { return e.path + ": " + e.why }
