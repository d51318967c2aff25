package ingest

import (
	"errors"
	"testing"

	"github.com/kiln-edge/kiln/storage"
)

// TestReleaseSuspect: a version a rollback flagged suspect (admitted, Suspect set by the
// pipeline controller) is released by a person: Suspect is cleared, its state kept, a
// released edge and event record who; an admitted version that is not suspect is refused.
func TestReleaseSuspect(t *testing.T) {
	e := newEnv(t, spec(t, "p", fbData, fbEval))
	d := e.dataIn("p", "a.csv", csvRows(100, 0))
	if _, err := e.m.Release(t.Context(), d.ID, "uid:0"); !errors.Is(err, ErrNotQuarantined) {
		t.Errorf("release of an accepted version = %v; want ErrNotQuarantined", err)
	}
	if err := e.store.Update(t.Context(), func(tx *storage.Tx) error {
		x, err := tx.Dataset(d.ID)
		if err != nil {
			return err
		}
		x.Suspect = "p/m2"
		return tx.PutDataset(x)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := e.m.Release(t.Context(), d.ID, "uid:1000")
	if err != nil {
		t.Fatal(err)
	}
	if got.Suspect != "" || got.State != storage.DatasetAccepted || got.Released != "uid:1000" {
		t.Errorf("released suspect version = state %s suspect %q released by %q; want accepted, not suspect, by uid:1000", got.State, got.Suspect, got.Released)
	}
	ev := e.eventFor("dataset.released", d.ID)
	if ev.Actor != "uid:1000" || ev.Details["suspect"] != "p/m2" || ev.Details["kind"] != "data" {
		t.Errorf("dataset.released = %+v; want by uid:1000, naming the suspect model", ev)
	}
	up, err := e.store.Ancestors(d.ID, 1)
	if err != nil || !hasReleased(up) {
		t.Errorf("%s's parents = %+v, %v; want uid:1000 by a released edge", d.ID, up, err)
	}
}

func hasReleased(ns []storage.Node) bool {
	for _, n := range ns {
		if n.ID == "uid:1000" && n.Edge == storage.EdgeReleased {
			return true
		}
	}
	return false
}
