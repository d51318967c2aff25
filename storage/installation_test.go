package storage_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

var installationRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestInstallationID: a new database gets a random installation ID in the
// transaction that creates it, keeps it across reopening, and two state
// dirs never share one.
func TestInstallationID(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := s.InstallationID()
	if !installationRE.MatchString(id) {
		t.Fatalf("InstallationID() = %q; want 32 hex digits", id)
	}
	var inTx string
	if err := s.View(func(tx *storage.Tx) error { inTx = tx.InstallationID(); return nil }); err != nil || inTx != id {
		t.Errorf("tx.InstallationID() = %q, %v; want %q", inTx, err, id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again := storagetest.OpenAt(t, dir, storage.Options{})
	if got := again.InstallationID(); got != id {
		t.Errorf("InstallationID() after reopening = %q; want %q, unchanged", got, id)
	}
	if other := storagetest.Open(t).InstallationID(); other == id || !installationRE.MatchString(other) {
		t.Errorf("a second state dir's InstallationID() = %q; want another 32 hex digits than %q", other, id)
	}
}

// TestInstallationIDGivenToOlderDatabases: a version-1 database gets one
// when it is migrated, and a current-schema database written before
// installation IDs existed gets one when it is opened.
func TestInstallationIDGivenToOlderDatabases(t *testing.T) {
	b, err := os.ReadFile(fixtureV1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kiln.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if id := s.InstallationID(); !installationRE.MatchString(id) {
		t.Errorf("InstallationID() of a migrated v1 database = %q; want 32 hex digits", id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Take the key away, as a kilnd of the same schema before this change
	// left the file.
	db, err := bolt.Open(filepath.Join(dir, "kiln.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("installation")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if id := storagetest.OpenAt(t, dir, storage.Options{}).InstallationID(); !installationRE.MatchString(id) {
		t.Errorf("InstallationID() of a database without one = %q; want one made at open", id)
	}
}
