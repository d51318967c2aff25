package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
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
	tmp, err := os.CreateTemp(filepath.Join(s.blobs, "tmp"), "put-*")
	if err != nil {
		return BlobRef{}, fmt.Errorf("put blob: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			// Discarding a failed put: the copy is garbage whatever these
			// return, and Reconcile sweeps a temp file left behind.
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), ctxReader{ctx, r}, make([]byte, 256<<10))
	if err != nil {
		return BlobRef{}, fmt.Errorf("put blob: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return BlobRef{}, fmt.Errorf("put blob: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return BlobRef{}, fmt.Errorf("put blob: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return BlobRef{}, fmt.Errorf("put blob: close %s: %w", tmp.Name(), err)
	}
	ref := BlobRef{Digest: digestPrefix + hex.EncodeToString(h.Sum(nil)), Size: n}
	final, _ := s.BlobPath(ref.Digest)
	dir := filepath.Dir(final)
	if _, err := os.Stat(final); err == nil {
		// Refresh the mtime so GC's grace period covers the record about
		// to name this blob again.
		now := time.Now()
		if err := os.Chtimes(final, now, now); err != nil {
			return BlobRef{}, fmt.Errorf("put blob: refresh mtime of %s: %w", final, err)
		}
		_ = os.Remove(tmp.Name()) // a leftover duplicate is swept by Reconcile
		ok = true
		return ref, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return BlobRef{}, fmt.Errorf("put blob: %w", err)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return BlobRef{}, err
		}
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return BlobRef{}, fmt.Errorf("put blob: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return BlobRef{}, err
	}
	return ref, nil
}

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
