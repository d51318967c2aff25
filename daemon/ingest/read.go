package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// batchRead is what reading a batch produced.
type batchRead struct {
	files   []ManifestFile
	refs    []storage.FileRef
	tab     *tabular
	img     *imageBatch
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
	var p parser
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.rel
	}
	labels := lateLabelsFormat(j.spec, j.src.kind, names)
	switch {
	case j.spec.Data.Format == config.FormatFiles:
	case labels != "":
		// Late labels of an images pipeline: read as rows of their own format; there are no
		// data columns to hold labelled rows to.
		b.train = &partSink{ctx: ctx, store: m.opt.Store}
		b.holdout = &partSink{ctx: ctx, store: m.opt.Store}
		b.tab = newTabular(j.spec, string(j.src.kind), nil, b.train, b.holdout)
		b.tab.format, b.tab.labelsOnly = labels, true
		p = b.tab
	case j.spec.Data.Format == config.FormatImages:
		b.img = newImageBatch(j.spec, j.src.kind, j.name, ents)
		p = b.img
	default:
		// Feedback is held to the data's schema too: labelled rows must be the data's columns.
		ref, _, err := m.index.schema(m.opt.Store, j.src.pipeline, storage.KindData)
		if err != nil {
			return nil, 0, err
		}
		b.train = &partSink{ctx: ctx, store: m.opt.Store}
		b.holdout = &partSink{ctx: ctx, store: m.opt.Store}
		b.tab = newTabular(j.spec, string(j.src.kind), ref, b.train, b.holdout)
		p = b.tab
	}
	ok := false
	defer func() {
		if !ok && b.train != nil {
			b.train.abort()
			b.holdout.abort()
		}
	}()
	if b.tab != nil {
		// Rows are parsed in file order: the first file's header and types rule the rest.
		for _, e := range ents {
			ref, retry, err := m.readFile(ctx, m.opt.Store, e, p)
			if err != nil || retry > 0 {
				return nil, retry, err
			}
			b.add(e, ref)
		}
		ok = true
		return b, 0, nil
	}
	refs, retry, err := m.readAll(ctx, ents, b.img)
	if err != nil || retry > 0 {
		return nil, retry, err
	}
	for i, e := range ents {
		b.add(e, refs[i])
	}
	if b.img != nil {
		b.img.merge()
	}
	ok = true
	return b, 0, nil
}

func (b *batchRead) add(e entry, ref storage.BlobRef) {
	b.files = append(b.files, ManifestFile{Path: e.rel, Digest: ref.Digest, Size: ref.Size})
	b.refs = append(b.refs, storage.FileRef{Path: e.rel, Blob: ref})
}

// blobPutter stores a blob: the store itself (durable at once), or a batch of blobs
// (durable once the batch is synced).
type blobPutter interface {
	PutBlob(ctx context.Context, r io.Reader) (storage.BlobRef, error)
}

// blobBatch is storage.BlobBatch as a blobPutter.
type blobBatch struct{ *storage.BlobBatch }

func (b blobBatch) PutBlob(ctx context.Context, r io.Reader) (storage.BlobRef, error) {
	return b.Put(ctx, r)
}

// filesAtOnce is how many files of one images or files batch are read at once. Such files
// are mostly small and each costs a blob's creation and fsyncs, which wait on the disk, not
// the CPU: concurrent ones share the journal's commits (BenchmarkImageBatch on the 2-core
// VM: 48 at once ~20% more images/s than 16). Files over 1 MiB are still read at most
// ParallelFiles at a time. (Rows are parsed in order instead.)
const filesAtOnce = 48

// readAll reads the files of a batch whose files are taken one by one (images, files),
// filesAtOnce at a time. img, when set, examines each image as it is read. The first file
// (in batch order) that failed or must wait decides the outcome; after a failure no new file
// is started. The blobs are put as one storage.BlobBatch: each file's content is fsynced as
// it is stored, the blob folders once at the end, before any record can name them.
func (m *Manager) readAll(ctx context.Context, ents []entry, img *imageBatch) ([]storage.BlobRef, time.Duration, error) {
	refs := make([]storage.BlobRef, len(ents))
	retries := make([]time.Duration, len(ents))
	errs := make([]error, len(ents))
	blobs := blobBatch{m.opt.Store.NewBlobBatch()}
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(filesAtOnce, len(ents)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(ents) {
					return
				}
				var p parser
				if img != nil {
					p = imageAt{img, i}
				}
				refs[i], retries[i], errs[i] = m.readFile(ctx, blobs, ents[i], p)
				if errs[i] != nil || retries[i] > 0 {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	for i := range ents {
		if errs[i] != nil || retries[i] > 0 {
			return nil, retries[i], errs[i]
		}
	}
	if err := blobs.Sync(ctx); err != nil {
		return nil, 0, err
	}
	return refs, 0, nil
}

// imageAt hands the i-th file of an images batch to its examination (see imageBatch.parseAt).
type imageAt struct {
	b *imageBatch
	i int
}

func (a imageAt) parseWhole(name string, data []byte) error {
	a.b.parseAt(a.i, name, data)
	return nil
}

func (a imageAt) parse(name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return a.parseWhole(name, data)
}

// testHookAfterCopy lets tests change a file between its read and the checks after it.
var testHookAfterCopy func(path string)

// leaseBackoff is how soon a file whose writer still has it open is looked at again.
const leaseBackoff = 100 * time.Millisecond

// parser sees a file's bytes on their way into the blob store (tabular).
type parser interface {
	parse(name string, r io.Reader) error
}

// wholeParser takes a file's bytes in one piece instead (images: a decoder needs them all,
// and the split hashes them): the file is read into memory whatever its size, at most two
// files over smallFile at a time.
type wholeParser interface {
	parseWhole(name string, b []byte) error
}

func (m *Manager) readFile(ctx context.Context, blobs blobPutter, e entry, p parser) (storage.BlobRef, time.Duration, error) {
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
	ref, err := m.copyFile(ctx, blobs, f, before.Size, p, e.rel)
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
func (m *Manager) copyFile(ctx context.Context, blobs blobPutter, f *os.File, size int64, p parser, name string) (storage.BlobRef, error) {
	whole, isWhole := p.(wholeParser)
	if size <= smallFile || isWhole {
		if size > smallFile {
			select {
			case m.big <- struct{}{}:
				defer func() { <-m.big }()
			case <-ctx.Done():
				return storage.BlobRef{}, ctx.Err()
			}
		}
		buf := make([]byte, size+1)
		n, err := io.ReadFull(f, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return storage.BlobRef{}, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		buf = buf[:n]
		ref, err := blobs.PutBlob(ctx, bytes.NewReader(buf))
		if err != nil {
			return storage.BlobRef{}, err
		}
		switch {
		case isWhole:
			err = whole.parseWhole(name, buf)
		case p != nil:
			err = p.parse(name, bytes.NewReader(buf))
		}
		if err != nil {
			return storage.BlobRef{}, err
		}
		return ref, nil
	}
	select {
	case m.big <- struct{}{}:
		defer func() { <-m.big }()
	case <-ctx.Done():
		return storage.BlobRef{}, ctx.Err()
	}
	if p == nil {
		return blobs.PutBlob(ctx, f)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := p.parse(name, pr)
		_, _ = io.Copy(io.Discard, pr) // let the writer finish whatever the parser left
		done <- err
	}()
	ref, err := blobs.PutBlob(ctx, io.TeeReader(f, pw))
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
