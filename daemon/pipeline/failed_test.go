package pipeline_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// TestFailedRunDataIsNotNewData: a data event that brings no new rows (here
// a release) does not train again on the data a run just failed on; it
// would fail the same way (train.retries is for retrying). The failed run's
// data stays in the window of the run new data starts.
func TestFailedRunDataIsNotNewData(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	h.rt.FailNext("exit")
	d1 := h.addData(100)
	h.waitFor("the failed run", func() bool { rs := h.runs(); return len(rs) == 1 && rs[0].State == storage.RunFailed })
	err := h.store.Update(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Append(storage.Event{Actor: "uid:0", Kind: "dataset.released", Pipeline: "iris", Refs: []string{d1},
			Details: map[string]string{"kind": "data"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a run would be queued within milliseconds
	if rs := h.runs(); len(rs) != 1 {
		t.Fatalf("a data event with no new rows started run %s on the failed run's data", rs[len(rs)-1].ID)
	}
	d2 := h.addData(100)
	h.waitFor("a run on new data", func() bool { rs := h.runs(); return len(rs) == 2 && rs[1].State == storage.RunSucceeded })
	if got := h.runs()[1].Datasets; !slices.Contains(got, d1) || !slices.Contains(got, d2) {
		t.Errorf("the run on new data trained on %v; want %s (the failed run's) and %s", got, d1, d2)
	}
}
