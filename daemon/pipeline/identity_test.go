package pipeline_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// identityPart is what runtime.ContainerID puts between the kind and the
// kiln ID: the installation's and the record's short digests.
var identityPart = regexp.MustCompile(`^kiln-(train|serve)-[0-9a-z]{4,8}-[0-9a-z]{4,8}-`)

// plain drops the identity from container names ("kiln-serve-3f9a2c1b-
// ab12cd34-iris-m1" -> "kiln-serve-iris-m1"), so tests can name a record's
// container by its ID alone. The result is sorted, as Serving's is.
func plain(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, identityPart.ReplaceAllString(n, "kiln-$1-"))
	}
	slices.Sort(out)
	return out
}

// servingID is the name and identity of model's serving container, as the
// pipeline gives them to the runtime.
func servingID(t *testing.T, store *storage.Store, model string) (string, runtime.Identity) {
	t.Helper()
	m, err := store.Model(model)
	if err != nil {
		t.Fatal(err)
	}
	id := runtime.Identity{Installation: store.InstallationID(), Digest: pipeline.ModelDigest(m)}
	return runtime.ContainerID(runtime.KindServe, id.Installation, model, id.Digest), id
}

// TestContainersCarryTheInstallation: the jobs a pipeline hands the runtime
// name containers with the store's installation ID and the record's digest,
// carry both as identity, and name them alike across a restart (the
// digests survive the store's round trip), while a second installation
// names the same records' containers otherwise.
func TestContainersCarryTheInstallation(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	h.addData(200)
	h.waitFor("first model live", func() bool { return h.live() == "iris/m1" })
	inst := h.store.InstallationID()
	run, err := h.store.Run("iris/r1")
	if err != nil {
		t.Fatal(err)
	}
	if want := runtime.ContainerID(runtime.KindTrain, inst, "iris/r1", pipeline.RunDigest(run)); run.Container != want {
		t.Errorf("iris/r1 ran in %q; want %q (installation %s, the run's digest as read back)", run.Container, want, inst)
	}
	name, _ := servingID(t, h.store, "iris/m1")
	if !slices.Contains(h.rt.Serving(), name) || !strings.Contains(name, inst[:8]) {
		t.Errorf("serving %v; want %s (with installation %s)", h.rt.Serving(), name, inst[:8])
	}

	// The digests are of the records, not of one process's memory.
	other := storagetest.Open(t)
	if other.InstallationID() == inst {
		t.Fatal("two stores share an installation ID")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var copied storage.Run
	if err := other.Update(ctx, func(tx *storage.Tx) error {
		var err error
		copied, err = tx.CreateRun(storage.Run{Pipeline: "iris", State: storage.RunQueued, Datasets: run.Datasets})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if copied.ID != run.ID || pipeline.RunDigest(copied) == pipeline.RunDigest(run) {
		t.Errorf("another installation's %s has digest %s, the same as this one's; want the creation time to tell them apart",
			copied.ID, pipeline.RunDigest(copied))
	}
	m, _ := h.store.Model("iris/m1")
	if runtime.ContainerID(runtime.KindServe, other.InstallationID(), m.ID, pipeline.ModelDigest(m)) == name {
		t.Errorf("a second installation names iris/m1's container %s too", name)
	}
}
