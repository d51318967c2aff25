package storage

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyInstallation holds the installation ID in the meta bucket.
var keyInstallation = []byte("installation")

// ensureInstallation gives the database its installation ID unless it has
// one: 16 random bytes as 32 hex digits, written in the transaction that
// creates (or first migrates) the database, and never changed after. A
// fresh state dir, a reinstall or a second root gets a new one; a restored
// backup keeps the one it was taken with (its containers are its own).
func ensureInstallation(btx *bolt.Tx) error {
	m := btx.Bucket(bucketMeta)
	if m == nil {
		return fmt.Errorf("meta bucket missing")
	}
	if v := m.Get(keyInstallation); len(v) > 0 {
		if !validInstallation(string(v)) {
			return fmt.Errorf("meta/installation %q: want 32 hex digits: %w", v, ErrInvalid)
		}
		return nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("make installation ID: %w", err)
	}
	return m.Put(keyInstallation, []byte(hex.EncodeToString(b[:])))
}

func validInstallation(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// InstallationID is this database's random identity (32 hex digits). Every
// container kilnd creates carries it as a label, and its short form is in
// the container's name, so two installations on one containerd never adopt,
// serve through or remove each other's containers. It is read once at Open.
func (s *Store) InstallationID() string { return s.installation }

// InstallationID is the database's installation ID (see Store.InstallationID).
func (tx *Tx) InstallationID() string {
	if m := tx.btx.Bucket(bucketMeta); m != nil {
		return string(m.Get(keyInstallation))
	}
	return ""
}
