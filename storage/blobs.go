package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const digestPrefix = "sha256:"

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, digestPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// BlobPath is where the blob with digest lives (blobs/sha256/ab/<hex>),
// whether or not it exists.
func (s *Store) BlobPath(digest string) (string, error) {
	if !validDigest(digest) {
		return "", fmt.Errorf("blob digest %q: %w", digest, ErrInvalid)
	}
	h := digest[len(digestPrefix):]
	return filepath.Join(s.blobs, "sha256", h[:2], h), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// PutBlob streams r into the blob store while hashing it. The blob becomes
// visible only once complete and durable (temp file, fsync, rename, dir
// fsync); a blob already present is kept and the copy discarded.
func (s *Store) PutBlob(ctx context.Context, r io.Reader) (BlobRef, error) {
	ref, dir, made, err := s.putBlob(ctx, r)
	if err != nil {
		return BlobRef{}, err
	}
	if made {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return BlobRef{}, err
		}
	}
	return ref, syncDir(dir)
}

// BlobBatch puts many blobs whose names are made durable together: each blob's content is
// fsynced as it is put, as PutBlob does, but the folders naming them are fsynced once each,
// by Sync, instead of once a blob. A record may name a blob of the batch only once Sync has
// returned nil: before that a crash may lose the blob's name (its content then lies in no
// folder, or in the temp folder, which Reconcile sweeps). Put may be called from several
// goroutines at once; Sync after every Put has returned.
type BlobBatch struct {
	s    *Store
	mu   sync.Mutex
	dirs map[string]struct{} // folders holding names not yet fsynced
}

// NewBlobBatch starts a batch of blobs (see BlobBatch).
func (s *Store) NewBlobBatch() *BlobBatch {
	return &BlobBatch{s: s, dirs: map[string]struct{}{}}
}

// Put stores r as PutBlob does, leaving the fsync of its folder to Sync.
func (b *BlobBatch) Put(ctx context.Context, r io.Reader) (BlobRef, error) {
	ref, dir, _, err := b.s.putBlob(ctx, r)
	if err != nil {
		return BlobRef{}, err
	}
	b.mu.Lock()
	// blobs/sha256 too, made or not: the folder may be another batch's, made and not
	// synced yet. One fsync a batch.
	b.dirs[dir] = struct{}{}
	b.dirs[filepath.Dir(dir)] = struct{}{}
	b.mu.Unlock()
	return ref, nil
}

// syncAtOnce is how many folders Sync fsyncs at once: concurrent fsyncs share the
// filesystem journal's commits.
const syncAtOnce = 16

// Sync makes the names of every blob put so far durable: one fsync of each folder holding
// one (at most the 256 of blobs/sha256/), several at once.
func (b *BlobBatch) Sync(ctx context.Context) error {
	b.mu.Lock()
	dirs := make([]string, 0, len(b.dirs))
	for d := range b.dirs {
		dirs = append(dirs, d)
	}
	clear(b.dirs)
	b.mu.Unlock()
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, syncAtOnce)
	for i, d := range dirs {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = syncDir(d)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// Not known to be durable: a later Sync must try these again.
		b.mu.Lock()
		for _, d := range dirs {
			b.dirs[d] = struct{}{}
		}
		b.mu.Unlock()
		return fmt.Errorf("put blobs: %w", err)
	}
	return nil
}

// putBlob stores r durably under its digest's name and returns the folder whose fsync makes
// that name durable: the caller's to do. That is also so when the blob was there already:
// whoever renamed it in may not have fsynced the folder yet. made says the folder was
// created: its parent needs an fsync too (a fresh store's first puts make all 256).
func (s *Store) putBlob(ctx context.Context, r io.Reader) (ref BlobRef, dir string, made bool, err error) {
	tmp, named, err := s.createTemp()
	if err != nil {
		return BlobRef{}, "", false, fmt.Errorf("put blob: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			// Discarding a failed put: the copy is garbage whatever these
			// return, and Reconcile sweeps a temp file left behind.
			_ = tmp.Close()
			if named {
				_ = os.Remove(tmp.Name())
			}
		}
	}()
	h := sha256.New()
	var n int64
	if br, isBytes := r.(*bytes.Reader); isBytes && br.Len() <= smallBlob {
		// Small blobs (most of a batch of images) in one write, with no copy buffer.
		buf := make([]byte, br.Len())
		_, _ = br.Read(buf) // a bytes.Reader reads all it holds
		if err := ctx.Err(); err != nil {
			return BlobRef{}, "", false, err
		}
		h.Write(buf)
		m, err := tmp.Write(buf)
		if err != nil {
			return BlobRef{}, "", false, fmt.Errorf("put blob: write %s: %w", tmp.Name(), err)
		}
		n = int64(m)
	} else {
		n, err = io.CopyBuffer(io.MultiWriter(tmp, h), ctxReader{ctx, r}, make([]byte, 256<<10))
		if err != nil {
			return BlobRef{}, "", false, fmt.Errorf("put blob: write %s: %w", tmp.Name(), err)
		}
	}
	if err := tmp.Chmod(0o444); err != nil {
		return BlobRef{}, "", false, fmt.Errorf("put blob: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return BlobRef{}, "", false, fmt.Errorf("put blob: fsync %s: %w", tmp.Name(), err)
	}
	if named {
		// A named temp file is closed before its rename; an unnamed one stays open until
		// it is linked in (its descriptor is its only name).
		if err := tmp.Close(); err != nil {
			return BlobRef{}, "", false, fmt.Errorf("put blob: close %s: %w", tmp.Name(), err)
		}
	}
	ref = BlobRef{Digest: digestPrefix + hex.EncodeToString(h.Sum(nil)), Size: n}
	final, _ := s.BlobPath(ref.Digest)
	dir = filepath.Dir(final)
	present := func() (BlobRef, string, bool, error) {
		// Refresh the mtime so GC's grace period covers the record about
		// to name this blob again.
		now := time.Now()
		if err := os.Chtimes(final, now, now); err != nil {
			return BlobRef{}, "", false, fmt.Errorf("put blob: refresh mtime of %s: %w", final, err)
		}
		if named {
			_ = os.Remove(tmp.Name()) // a leftover duplicate is swept by Reconcile
		} else {
			_ = tmp.Close() // unnamed: closing frees it
		}
		ok = true
		return ref, dir, made, nil
	}
	mkdir := func() error {
		err := os.Mkdir(dir, 0o755)
		switch {
		case errors.Is(err, os.ErrExist):
			return nil
		case err != nil:
			return fmt.Errorf("put blob: %w", err)
		}
		made = true
		return nil
	}
	if named {
		if _, err := os.Stat(final); err == nil {
			return present()
		}
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := mkdir(); err != nil {
				return BlobRef{}, "", false, err
			}
		}
		if err := os.Rename(tmp.Name(), final); err != nil {
			return BlobRef{}, "", false, fmt.Errorf("put blob: %w", err)
		}
		ok = true
		return ref, dir, made, nil
	}
	// A link refuses a name that exists (the blob is there: the same content) and says when
	// the folder is missing (made, then linked again): no stat needed first.
	err = linkUnnamed(tmp, final)
	if errors.Is(err, unix.ENOENT) {
		if err = mkdir(); err == nil {
			err = linkUnnamed(tmp, final)
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return present()
	}
	if err != nil {
		return BlobRef{}, "", false, fmt.Errorf("put blob: link %s: %w", final, err)
	}
	ok = true
	if err := tmp.Close(); err != nil {
		return BlobRef{}, "", false, fmt.Errorf("put blob: close %s: %w", final, err)
	}
	return ref, dir, made, nil
}

// unnamedTemps remembers whether the blob folder's filesystem takes unnamed temp files
// (O_TMPFILE) that can then be linked in by their descriptor: tried once, on the first put.
type unnamedTemps struct {
	once sync.Once
	ok   bool
}

// createTemp opens a temp file for a blob in blobs/tmp: unnamed where the filesystem allows
// (ext4, xfs, btrfs, tmpfs: no name to create in a folder every put shares, none to rename
// across folders, nothing left to sweep after a crash), else named put-*, which Reconcile
// sweeps.
func (s *Store) createTemp() (f *os.File, named bool, err error) {
	tmpDir := filepath.Join(s.blobs, "tmp")
	s.unnamed.once.Do(func() { s.unnamed.ok = probeUnnamed(tmpDir) })
	if s.unnamed.ok {
		fd, err := unix.Open(tmpDir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o444)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(tmpDir, "(unnamed)")), false, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, false, err
		}
	}
	f, err = os.CreateTemp(tmpDir, "put-*")
	return f, true, err
}

// linkUnnamed gives the unnamed file f the name final (which must not exist), through
// /proc/self/fd: linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH.
func linkUnnamed(f *os.File, final string) error {
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
}

// probeUnnamed says whether an unnamed temp file can be made in dir and linked in by name;
// the probe's name starts with put-, so Reconcile sweeps it should it be left behind.
func probeUnnamed(dir string) bool {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "probe")
	defer func() { _ = f.Close() }() // nothing written
	name := filepath.Join(dir, fmt.Sprintf("put-probe-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if linkUnnamed(f, name) != nil {
		return false
	}
	_ = os.Remove(name)
	return true
}

// smallBlob is the size up to which a blob given as a bytes.Reader is written in one piece.
const smallBlob = 1 << 20

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	defer func() { _ = d.Close() }() // read-only handle: Sync's error is the one that counts
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// OpenBlob opens the blob ref names after checking it exists with the
// recorded size (ErrNotFound, ErrBlobMismatch otherwise). Content is not
// re-hashed here; Reconcile and VerifyBlob do that.
func (s *Store) OpenBlob(ref BlobRef) (*os.File, error) {
	p, err := s.BlobPath(ref.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", ref.Digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", ref.Digest, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close() // opened read-only
		return nil, fmt.Errorf("blob %s: %w", ref.Digest, err)
	}
	if st.Size() != ref.Size {
		_ = f.Close() // opened read-only
		return nil, fmt.Errorf("blob %s: size %d, recorded %d: %w", ref.Digest, st.Size(), ref.Size, ErrBlobMismatch)
	}
	return f, nil
}

// VerifyBlob re-hashes a blob and checks digest and size.
func (s *Store) VerifyBlob(ref BlobRef) error {
	f, err := s.OpenBlob(ref)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // opened read-only
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("blob %s: %w", ref.Digest, err)
	}
	if got := digestPrefix + hex.EncodeToString(h.Sum(nil)); got != ref.Digest {
		return fmt.Errorf("blob %s: content hashes to %s: %w", ref.Digest, got, ErrBlobMismatch)
	}
	return nil
}

// LinkBlob places the blob at dst, read-only: a hard link when dst is on the
// same filesystem, else a durable copy (temp, fsync, rename). dst must not
// exist. Use it to fill run workspaces and read-only model dirs.
func (s *Store) LinkBlob(ref BlobRef, dst string) error {
	src, err := s.OpenBlob(ref)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }() // opened read-only
	err = os.Link(src.Name(), dst)
	if err == nil {
		return nil
	}
	var le *os.LinkError
	if !errors.As(err, &le) || !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EMLINK) {
		return fmt.Errorf("link blob %s to %s: %w", ref.Digest, dst, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("link blob %s to %s: %w", ref.Digest, dst, os.ErrExist)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".kiln-copy-*")
	if err != nil {
		return fmt.Errorf("copy blob %s to %s: %w", ref.Digest, dst, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op (ENOENT) after the rename
	defer func() { _ = tmp.Close() }()           // for the error paths; closed and checked below otherwise
	if _, err := io.Copy(tmp, src); err != nil {
		return fmt.Errorf("copy blob %s to %s: %w", ref.Digest, dst, err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("copy blob %s to %s: %w", ref.Digest, dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy blob %s to %s: %w", ref.Digest, dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("copy blob %s to %s: %w", ref.Digest, dst, err)
	}
	return syncDir(filepath.Dir(dst))
}
