package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
)

// Paths of a run's and a model's files on the host.
func (c *controller) runDir(id string) string {
	return filepath.Join(c.deps.Paths.RunsDir, filepath.FromSlash(id))
}

func (c *controller) modelDir(id string) string {
	return filepath.Join(c.deps.Paths.ModelsDir, filepath.FromSlash(id))
}

// containerID names a run's or model's container in kiln's namespace, by
// the one naming function (runtime.ContainerID): this installation's ID and
// the record's digest are in the name, so no other installation's container
// (nor one of a restored backup's reused ID) shares it.
func (c *controller) containerID(kind, id, digest string) string {
	return runtime.ContainerID(kind, c.installation(), id, digest)
}

// installation is the store's installation ID, which every container of
// this kilnd carries.
func (c *controller) installation() string {
	var id string
	_ = c.deps.Store.View(func(tx *storage.Tx) error { id = tx.InstallationID(); return nil })
	return id
}

// RunDigest is a training container's identity within its installation:
// the run's ID, creation time and window, which a reused ID (a restored
// backup) does not repeat.
func RunDigest(r storage.Run) string {
	h := sha256.New()
	fmt.Fprintf(h, "run\x00%s\x00%s\x00%s", r.ID, r.Created.UTC().Format(time.RFC3339Nano), strings.Join(r.Datasets, ","))
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ModelDigest is the digest of a model's manifest (each file's path and
// blob digest, in path order): what a serving container holds. Two models
// with the same bytes may share it; their names still differ by ID.
func ModelDigest(m storage.Model) string {
	files := slices.Clone(m.Files)
	slices.SortFunc(files, func(a, b storage.FileRef) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00%d\n", f.Path, f.Blob.Digest, f.Blob.Size)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
