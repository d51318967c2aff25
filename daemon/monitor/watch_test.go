package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// fakeActions records what the monitor asked for.
type fakeActions struct {
	mu        sync.Mutex
	rollbacks []string // from
	retrains  []string
	details   map[string]string
	refuse    int // rollbacks refused for now (a cooldown) before one is done
}

func (a *fakeActions) Rollback(_ context.Context, _, from, trigger, _ string, d map[string]string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refuse > 0 {
		a.refuse--
		return errors.New("cooldown: the last switch was 1s ago")
	}
	a.rollbacks = append(a.rollbacks, from+"/"+trigger)
	a.details = d
	return nil
}

func (a *fakeActions) Retrain(_ context.Context, p, _ string, d map[string]string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.retrains = append(a.retrains, p)
	a.details = d
	return "p/r9", nil
}

func (a *fakeActions) EnsureStandby(context.Context, string) error { return nil }

func (a *fakeActions) calls() ([]string, []string, map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.rollbacks...), append([]string(nil), a.retrains...), a.details
}

// deploy records m1 live and m2 standby, as the controller would.
func (f *fixture) deploy(t *testing.T) {
	t.Helper()
	err := f.store.Update(t.Context(), func(tx *storage.Tx) error {
		if _, err := tx.CreateDeployment(storage.Deployment{Pipeline: "p", Model: "p/m2", State: storage.DeployStandby}); err != nil {
			return err
		}
		_, err := tx.CreateDeployment(storage.Deployment{Pipeline: "p", Model: "p/m1", State: storage.DeployLive})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) watch(t *testing.T, acts *fakeActions) {
	m := New(Deps{Store: f.store, Feedback: f.fb, Log: f.log, Actions: acts,
		Serving: func(context.Context, string) (Backend, Backend, error) { return f.live, f.standby, nil }})
	ctx, cancel := context.WithCancel(t.Context())
	f.spec.Triggers.Degradation = "retrain"
	f.spec.Monitor.TargetFalseAlarm = 0.01
	f.spec.Monitor.MaxRetrainsPerDay = 3
	m.Start(ctx, map[string]*config.Pipeline{"p": f.spec})
	t.Cleanup(func() { cancel(); m.Wait() })
}

// rows draws n labelled rows with x uniform in [lo, hi), labelled by the
// rule "yes when x >= cut", flipped where flip says.
func rows(rng *rand.Rand, n int, lo, hi, cut float64, flip func(x float64) bool) *Feedback {
	fb := &Feedback{Type: storage.FeedbackRows, Columns: []string{"x", "y"}}
	for range n {
		x := lo + rng.Float64()*(hi-lo)
		yes := x >= cut
		if flip != nil && flip(x) {
			yes = !yes
		}
		label := "no"
		if yes {
			label = "yes"
		}
		fb.Rows = append(fb.Rows, []string{fmt.Sprintf("%.6f", x), "0"})
		fb.Labels = append(fb.Labels, label)
	}
	return fb
}

// TestPairedTestRollsBackABadPromotion: a live model worse than its
// standby from the moment it was promoted looks normal to a baseline
// learned after the promotion; the paired test sees it and the monitor asks
// for a rollback from that model, with the numbers.
func TestPairedTestRollsBackABadPromotion(t *testing.T) {
	f := newFixture(t, t.TempDir())
	f.deploy(t)
	acts := &fakeActions{}
	f.watch(t, acts)
	rng := rand.New(rand.NewPCG(7, 7))
	// Truth cut 3: the standby (cut 3) is always right, the live model
	// (cut 5) wrong on [3, 5).
	for i := range 5 {
		id := f.addFeedback(t, storage.FeedbackRows, rows(rng, 40, 0, 10, 3, nil))
		waitScoring(t, f.store, id)
		if rb, _, _ := acts.calls(); len(rb) > 0 {
			break
		}
		if i == 4 {
			t.Fatal("no rollback after 200 labels where only the standby was right on the rows they disagreed on")
		}
	}
	rb, _, d := acts.calls()
	if len(rb) != 1 || rb[0] != "p/m1/monitor" || d["alarm_by"] != "paired" || d["standby"] != "p/m2" {
		t.Errorf("rollbacks %v with %v; want one from p/m1 by the paired test, to p/m2", rb, d)
	}
}

// TestDeferredRollbackRetried: a rollback decided while the controller
// refuses it for now (the cooldown after the promotion the feedback
// followed closely) is tried again on its own, not only when more feedback
// arrives. Found by the crash harness (cmd/kilnd TestCrashAnywhere): the
// retry waited for a feedback file that never came.
func TestDeferredRollbackRetried(t *testing.T) {
	f := newFixture(t, t.TempDir())
	f.deploy(t)
	acts := &fakeActions{refuse: 1}
	f.watch(t, acts)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; ; i++ {
		if i == 5 {
			t.Fatal("no rollback decided after 200 labels where only the standby was right")
		}
		id := f.addFeedback(t, storage.FeedbackRows, rows(rng, 40, 0, 10, 3, nil))
		waitScoring(t, f.store, id)
		var decided bool
		_ = f.store.View(func(tx *storage.Tx) error {
			st, ok, err := tx.MonitorState("p")
			decided = ok && st.Alarm != nil && st.Alarm.Decided == "rollback"
			return err
		})
		if rb, _, _ := acts.calls(); decided || len(rb) > 0 {
			break // decided (and maybe retried already)
		}
	}
	// No more feedback: the refused rollback must still happen.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rb, _, _ := acts.calls(); len(rb) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the rollback refused for now was not tried again within 10s without new feedback")
		}
	}
}

// TestDriftIsNotRolledBack: two models equally good; after the detector's
// warm-up the world changes in a way that hurts both; the detector alarms,
// the decision on post-alarm rows finds the standby not better, and the
// monitor asks for one retrain, never a rollback.
func TestDriftIsNotRolledBack(t *testing.T) {
	if testing.Short() {
		t.Skip("feeds ~6,000 labels through two model servers")
	}
	f := newFixture(t, t.TempDir())
	f.deploy(t)
	acts := &fakeActions{}
	f.watch(t, acts)
	rng := rand.New(rand.NewPCG(11, 11))
	// Truth cut 4: live (cut 5) wrong on [4,5), standby (cut 3) on [3,4):
	// both right 90% of the time, disagreeing on a fifth of the rows.
	for range 10 {
		id := f.addFeedback(t, storage.FeedbackRows, rows(rng, 500, 0, 10, 4, nil))
		waitScoring(t, f.store, id)
	}
	var st storage.MonitorState
	_ = f.store.View(func(tx *storage.Tx) (err error) { st, _, err = tx.MonitorState("p"); return err })
	if st.Alarm != nil {
		t.Fatalf("alarm on a stable stream: %+v", st.Alarm)
	}
	// The shift: above 6 the labels flip; both models are wrong there.
	for i := range 10 {
		id := f.addFeedback(t, storage.FeedbackRows, rows(rng, 200, 0, 10, 4, func(x float64) bool { return x >= 6 }))
		waitScoring(t, f.store, id)
		if _, rt, _ := acts.calls(); len(rt) > 0 {
			break
		}
		if i == 9 {
			_ = f.store.View(func(tx *storage.Tx) (err error) { st, _, err = tx.MonitorState("p"); return err })
			t.Fatalf("no retrain after 2,000 shifted labels; state %+v alarm %+v", st, st.Alarm)
		}
	}
	rb, rt, d := acts.calls()
	if len(rb) != 0 || len(rt) != 1 {
		t.Errorf("rollbacks %v, retrains %v; want none and one", rb, rt)
	}
	if d["standby"] != "p/m2" || d["p_value"] == "" {
		t.Errorf("decision details %v; want the standby and the p-value", d)
	}
	time.Sleep(100 * time.Millisecond)
}

// TestRegressionStream: for mae/rmse the detector's stream is "the error
// stayed within the model's holdout 90th-percentile |error|", per model; a
// live model without a recorded threshold feeds the detector nothing.
func TestRegressionStream(t *testing.T) {
	spec := pipelineSpec{metric: "mae"}
	models := pair{namedBackend("p/m1"), namedBackend("p/m2")}
	rows := []scored{
		{label: "10", answer: [2]string{"10.5", "13"}, has: [2]bool{true, true}},
		{label: "10", answer: [2]string{"14", "10.2"}, has: [2]bool{true, true}},
	}
	var sc storage.Scoring
	obs, err := tally(spec, &sc, models, [2]float64{1, 2}, rows, [2]int64{}, func(r scored, k int) bool { return r.has[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := []observation{{live: true, standby: false, paired: true}, {live: false, standby: true, paired: true}}
	if fmt.Sprint(obs) != fmt.Sprint(want) {
		t.Errorf("observations %+v, want %+v", obs, want)
	}
	if sc.Models[0].SumAbsErr != 4.5 || sc.Models[0].Value != 2.25 {
		t.Errorf("live mae = %+v, want 4.5 summed, 2.25", sc.Models[0])
	}
	obs, _ = tally(spec, &sc, models, [2]float64{math.NaN(), 2}, rows, [2]int64{}, func(r scored, k int) bool { return r.has[k] })
	if !obs[0].unknown {
		t.Errorf("no live threshold: observation %+v, want unknown", obs[0])
	}
}

// TestProbation: a model promoted moments ago that fails more than 1% of
// its requests, or answers with a p99 over 3x the standby's, is rolled
// back without labels; one that does neither is left alone.
func TestProbation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      int // of 300 live requests
		liveUS    int64
		rollsBack bool
	}{
		{"healthy", 2, 1000, false},
		{"failing", 6, 1000, true},
		{"slow", 0, 4000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, t.TempDir())
			f.deploy(t)
			var since time.Time
			_ = f.store.View(func(tx *storage.Tx) (err error) { _, _, since, err = liveOf(tx, "p"); return err })
			for i := range 300 {
				status := 200
				if i < tc.fail {
					status = 502
				}
				f.log.recs[fmt.Sprintf("l%d", i)] = Logged{Model: "p/m1", Time: since.Add(time.Duration(i+1) * time.Millisecond), Status: status, LatencyUS: tc.liveUS}
				f.log.recs[fmt.Sprintf("s%d", i)] = Logged{Model: "p/m2", Time: since.Add(-time.Duration(i+1) * time.Second), Status: 200, LatencyUS: 1000}
			}
			acts := &fakeActions{}
			m := New(Deps{Store: f.store, Log: f.log, Actions: acts})
			spec := specOf(f.spec)
			spec.probation = 30 * time.Minute
			on, err := m.probe(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			rb, _, _ := acts.calls()
			if got := len(rb) == 1 && rb[0] == "p/m1/probation"; got != tc.rollsBack || (on == tc.rollsBack) {
				t.Errorf("rollbacks %v, still on probation %v; want rollback %v", rb, on, tc.rollsBack)
			}
		})
	}
}
