// Package storagetest opens real storage.Stores for tests: a bbolt file in a
// per-test temp dir, closed when the test ends (the bbolt btesting habit).
package storagetest

import (
	"testing"

	"github.com/kiln-edge/kiln/storage"
)

// Open opens a Store on a fresh t.TempDir() and closes it at cleanup.
func Open(t testing.TB) *storage.Store {
	t.Helper()
	return OpenAt(t, t.TempDir(), storage.Options{})
}

// OpenAt opens a Store on dir with opt and closes it at cleanup.
func OpenAt(t testing.TB, dir string, opt storage.Options) *storage.Store {
	t.Helper()
	s, err := storage.Open(dir, opt)
	if err != nil {
		t.Fatalf("storage.Open(%q): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}
