package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestBlobBatch: blobs put from several goroutines at once, small ones from memory and a
// big one streamed, come out with their digests, read-only and intact; until Sync every
// folder naming one (also that of a blob that was there already) and the parent of the
// folders it made wait to be fsynced, and
// none once it returned; the temp folder is left empty.
func TestBlobBatch(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			s := openTestStore(t)
			if named {
				s.unnamed.once.Do(func() {}) // as on a filesystem without O_TMPFILE
			}
			testBlobBatch(t, s)
			if !named && !s.unnamed.ok {
				t.Logf("%s has no unnamed temp files: the named ones were tested twice", s.blobs)
			}
		})
	}
}

func testBlobBatch(t *testing.T, s *Store) {
	old, err := s.PutBlob(context.Background(), strings.NewReader("there before"))
	if err != nil {
		t.Fatal(err)
	}
	contents := [][]byte{[]byte("there before"), bytes.Repeat([]byte("big"), smallBlob)}
	for i := range 200 {
		contents = append(contents, fmt.Appendf(nil, "image %d", i%150)) // 50 repeated
	}
	b := s.NewBlobBatch()
	refs := make([]BlobRef, len(contents))
	var wg sync.WaitGroup
	errs := make(chan error, len(contents))
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(contents); i += 8 {
				var err error
				if i == 1 {
					refs[i], err = b.Put(context.Background(), strings.NewReader(string(contents[i])))
				} else {
					refs[i], err = b.Put(context.Background(), bytes.NewReader(contents[i]))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if refs[0] != old {
		t.Errorf("the blob there before: %+v, want %+v", refs[0], old)
	}
	for i, ref := range refs {
		sum := sha256.Sum256(contents[i])
		if ref.Digest != "sha256:"+hex.EncodeToString(sum[:]) || ref.Size != int64(len(contents[i])) {
			t.Fatalf("blob %d: %+v, want the digest and size of its content", i, ref)
		}
		p, _ := s.BlobPath(ref.Digest)
		if _, waits := b.dirs[filepath.Dir(p)]; !waits {
			t.Errorf("blob %d: its folder is not waiting for Sync", i)
		}
	}
	if _, waits := b.dirs[filepath.Join(s.blobs, "sha256")]; !waits {
		t.Error("blobs/sha256, where the batch made folders, is not waiting for Sync")
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(b.dirs) != 0 {
		t.Errorf("%d folders still waiting after Sync", len(b.dirs))
	}
	for i, ref := range refs {
		p, _ := s.BlobPath(ref.Digest)
		got, err := os.ReadFile(p)
		st, _ := os.Stat(p)
		if err != nil || !bytes.Equal(got, contents[i]) || st.Mode().Perm() != 0o444 {
			t.Fatalf("blob %d: %v, %d bytes, mode %v; want its content, mode 0444", i, err, len(got), st.Mode())
		}
	}
	if left, _ := os.ReadDir(filepath.Join(s.blobs, "tmp")); len(left) > 0 {
		t.Errorf("temp folder holds %d files", len(left))
	}
}

// TestBlobBatchSyncFails: a folder that cannot be fsynced fails Sync, and stays waiting for
// the next one; a cancelled put leaves nothing behind.
func TestBlobBatchSyncFails(t *testing.T) {
	s := openTestStore(t)
	b := s.NewBlobBatch()
	ref, err := b.Put(context.Background(), bytes.NewReader([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.BlobPath(ref.Digest)
	gone := filepath.Join(s.blobs, "no-such-folder")
	b.dirs[gone] = struct{}{}
	if err := b.Sync(context.Background()); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Sync with a missing folder = %v, want not exist", err)
	}
	if _, ok := b.dirs[filepath.Dir(p)]; !ok {
		t.Error("after a failed Sync the blob's folder no longer waits")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Put(ctx, bytes.NewReader([]byte("y"))); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Put = %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(filepath.Join(s.blobs, "tmp")); len(left) > 0 {
		t.Errorf("temp folder holds %d files", len(left))
	}
}
