package storage_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// TestBlobsAreRootsAlone: the blob store holds every dataset and model, so
// no local account may list or read it; a store made by an older kilnd
// (blobs/ 0755) is tightened when opened.
func TestBlobsAreRootsAlone(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	storagetest.OpenAt(t, dir, storage.Options{})
	for _, p := range []string{"blobs", "kiln.db"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v: group or others may reach it", p, fi.Mode().Perm())
		}
	}
}
