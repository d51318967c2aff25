package monitor

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// TestSignalsAlertOnShiftedInputs: an ended hour whose logged inputs come
// from elsewhere than the training data raises one monitor.drift event; an
// hour like the training data raises none. Both hours get a signal with the
// class mix and the requests counted exactly.
func TestSignalsAlertOnShiftedInputs(t *testing.T) {
	st := signalsStore(t)
	now := time.Date(2026, 11, 30, 12, 30, 0, 0, time.UTC)
	log := &memLog{recs: map[string]Logged{}}
	for i := range 300 {
		// 10:xx like the training data; 11:xx far outside it.
		for h, x := range map[int]int{10: i % 100, 11: 1000 + i} {
			at := time.Date(2026, 11, 30, h, i%60, 0, 0, time.UTC)
			log.recs[fmt.Sprintf("h%d-%d", h, i)] = Logged{Model: "p/m1", Protocol: "sagemaker", ContentType: "text/csv",
				Time: at, Status: 200, Rows: 1, Input: fmt.Appendf(nil, "%d\n", x), Output: []byte("yes\n")}
		}
	}
	m := New(Deps{Store: st, Log: log, Now: func() time.Time { return now }})
	m.Apply(signalsSpecs())
	if err := m.Signals(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	var sigs []storage.Signal
	_ = st.View(func(tx *storage.Tx) (err error) { sigs, err = tx.Signals("p", time.Time{}); return err })
	if len(sigs) != 2 || sigs[0].Requests != 300 || sigs[1].Requests != 300 || sigs[0].Classes["yes"] != 300 {
		t.Fatalf("signals = %+v, want hours 10 and 11 with 300 requests each, all predicted yes", sigs)
	}
	if sigs[0].PSI["x"] > 0.1 || sigs[1].PSI["x"] < 1 {
		t.Errorf("psi of x = %v at 10:00 and %v at 11:00; want near 0, then large", sigs[0].PSI["x"], sigs[1].PSI["x"])
	}
	evs, err := st.Events(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var drift []storage.Event
	for _, e := range evs {
		if e.Kind == "monitor.drift" {
			drift = append(drift, e)
		}
	}
	// Both hours ended; 10:00 predicts only "yes" where training was half
	// and half, so its class mix alerts as well as 11:00's inputs.
	if len(drift) == 0 || !strings.Contains(drift[len(drift)-1].Details["signals"], "x psi") {
		t.Fatalf("drift events = %+v, want one naming x's psi for 11:00", drift)
	}
	// A second pass over the same hours raises nothing new.
	if err := m.Signals(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	evs, _ = st.Events(0, 100)
	n := 0
	for _, e := range evs {
		if e.Kind == "monitor.drift" {
			n++
		}
	}
	if n != len(drift) {
		t.Errorf("a second pass raised %d more drift events", n-len(drift))
	}
}

// signalsStore is a store holding pipeline p's live model p/m1, trained
// on x in 0..99 (each value 4 times), half of it labelled yes, half no.
func signalsStore(t *testing.T) *storage.Store {
	t.Helper()
	st := storagetest.OpenAt(t, t.TempDir(), storage.Options{})
	var train strings.Builder
	train.WriteString("x,label\n")
	for i := range 400 {
		fmt.Fprintf(&train, "%d,%s\n", i%100, map[bool]string{true: "yes", false: "no"}[i%2 == 0])
	}
	ref, err := st.PutBlob(t.Context(), strings.NewReader(train.String()))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(t.Context(), func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "p", Kind: storage.KindData, State: storage.DatasetAccepted, Train: &ref})
		if err != nil {
			return err
		}
		r, err := tx.CreateRun(storage.Run{Pipeline: "p", State: storage.RunSucceeded, Datasets: []string{d.ID}})
		if err != nil {
			return err
		}
		_, err = tx.CreateModel(storage.Model{Pipeline: "p", Run: r.ID, State: storage.ModelLive})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func signalsSpecs() map[string]*config.Pipeline {
	return map[string]*config.Pipeline{"p": {Name: "p", Data: config.Data{Format: "csv", Label: "label"},
		Serve: config.Serve{Protocol: "sagemaker"}, Evaluate: config.Evaluate{Metric: "accuracy"}}}
}
