package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/storage"
)

// specWith is the iris spec (a good trainer, no retries) with its serve line
// replaced by serve and extra YAML lines added.
func specWith(t *testing.T, serve, extra string) *config.Pipeline {
	t.Helper()
	text := fmt.Sprintf(irisSpec, "good", 0)
	if serve != "" {
		text = strings.Replace(text, "serve: {image: kiln.local/s:1}", serve, 1)
	}
	p, err := config.ParsePipeline("iris.yaml", []byte(text+extra))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// monitorReq is the monitor's request, as daemon/monitor sends it.
func monitorReq(reason string) pipeline.Request {
	return pipeline.Request{Pipeline: "iris", Actor: pipeline.ActorKilnd, Trigger: pipeline.TriggerMonitor, Reason: reason,
		Details: map[string]string{"statistic": "paired_sign", "window": "41", "live_accuracy": "0.62", "standby_accuracy": "0.91", "p_value": "0.0004"}}
}

// twoModels brings iris to m1 standby, m2 live, and steps past the cooldown.
func (h *harness) twoModels() {
	h.t.Helper()
	h.addData(100)
	h.waitFor("m1 live", func() bool { return h.live() == "iris/m1" })
	h.addData(100)
	h.waitFor("m2 live", func() bool { return h.live() == "iris/m2" })
	h.advance(11 * time.Minute) // monitor.cooldown defaults to 10m
}

func (h *harness) dataset(id string) storage.Dataset {
	h.t.Helper()
	d, err := h.store.Dataset(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// eventsOf are the events of kind.
func (h *harness) eventsOf(kind string) []storage.Event {
	evs, err := h.store.Events(0, 10000)
	if err != nil {
		h.t.Fatal(err)
	}
	return slices.DeleteFunc(evs, func(e storage.Event) bool { return e.Kind != kind })
}

func (h *harness) run(id string) storage.Run {
	h.t.Helper()
	r, err := h.store.Run(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func wantErr(t *testing.T, what string, err, want error, text string) {
	t.Helper()
	if !errors.Is(err, want) || !errors.Is(err, pipeline.ErrConflict) || !strings.Contains(fmt.Sprint(err), text) {
		t.Errorf("%s = %v; want %v (a conflict) saying %q", what, err, want, text)
	}
}

// TestGuard: one guard for pin, cooldown and busy; automation and people
// under their own rules, and the cooldown measured from the deployments in
// the store, so a restart does not reset it.
func TestGuard(t *testing.T) {
	h := newHarness(t)
	sp := spec(t, "good", 0)
	h.start(sp)
	h.addData(100)
	h.waitFor("m1 live", func() bool { return h.live() == "iris/m1" })
	h.addData(100)
	h.waitFor("m2 live", func() bool { return h.live() == "iris/m2" })
	ctx := context.Background()

	// Cooldown: the switch to m2 just happened.
	wantErr(t, "automatic rollback in cooldown", h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"), pipeline.ErrCooldown, "monitor.cooldown 10m0s")
	_, err := h.mgr.Train(ctx, monitorReq("drift"))
	wantErr(t, "automatic train in cooldown", err, pipeline.ErrCooldown, "a person may act now")
	// ... which survives a restart: it is read from the deployments' times.
	h.stop()
	h.start(sp)
	h.waitFor("m2 live again", func() bool { return h.live() == "iris/m2" })
	wantErr(t, "automatic rollback in cooldown after a restart", h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"), pipeline.ErrCooldown, "iris/e2")
	h.advance(11 * time.Minute)

	// A request must say who asks; automation must say why.
	if err := h.mgr.Rollback(ctx, pipeline.Request{Pipeline: "iris"}, ""); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("rollback without an actor = %v; want ErrInvalid", err)
	}
	if err := h.mgr.Rollback(ctx, pipeline.Request{Pipeline: "iris", Actor: pipeline.ActorKilnd}, "iris/m2"); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("automatic rollback without a trigger = %v; want ErrInvalid", err)
	}

	// Pin: automation off, people must unpin before a rollback or promotion;
	// people may still train.
	if err := h.mgr.Pin(ctx, person("iris"), "iris/m2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "automatic rollback while pinned", h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"), pipeline.ErrPinned, "automation is off")
	wantErr(t, "person's rollback while pinned", h.mgr.Rollback(ctx, person("iris"), ""), pipeline.ErrPinned, "kiln unpin iris first")
	wantErr(t, "automatic promotion while pinned", h.mgr.Promote(ctx, monitorReq("x"), "iris/m1", false), pipeline.ErrPinned, "pinned to iris/m2")
	_, err = h.mgr.Train(ctx, monitorReq("drift"))
	wantErr(t, "automatic train while pinned", err, pipeline.ErrPinned, "pinned")
	if err := h.mgr.Pin(ctx, monitorReq("x"), "iris/m1"); err == nil {
		t.Error("automation pinned a pipeline")
	}
	if err := h.mgr.Unpin(ctx, person("iris")); err != nil {
		t.Fatal(err)
	}

	// Busy: no promotion while a run is in flight, for anyone.
	release := h.rt.HoldTraining()
	defer release()
	tk, err := h.mgr.Train(ctx, person("iris"))
	if err != nil || tk.Queued {
		t.Fatalf("person's train = %+v, %v; want a run started", tk, err)
	}
	wantErr(t, "automatic promotion while busy", h.mgr.Promote(ctx, monitorReq("x"), "iris/m1", false), pipeline.ErrBusy, "busy with run "+tk.Run)
	wantErr(t, "person's promotion while busy", h.mgr.Promote(ctx, person(""), "iris/m1", false), pipeline.ErrBusy, "try again when it is done")

	// People are not held by the cooldown: a rollback right after a switch.
	h.mgr.Cancel(ctx, person(""), tk.Run)
	if err := h.mgr.Rollback(ctx, person("iris"), ""); err != nil {
		t.Errorf("person's rollback after the cooldown: %v", err)
	}
	if err := h.mgr.RollbackTo(ctx, person("iris"), "iris/m2"); err != nil {
		t.Errorf("person's rollback in the cooldown: %v", err)
	}
	if h.live() != "iris/m2" {
		t.Errorf("live = %s; want iris/m2 (rolled back to by a person)", h.live())
	}
	// Every command's event says who, on what trigger, why.
	evs := h.eventsOf("pipeline.pinned")
	if len(evs) != 1 || evs[0].Actor != "uid:0" || evs[0].Details["trigger"] != "manual" {
		t.Errorf("pipeline.pinned events = %+v; want one by uid:0, trigger manual", evs)
	}
}

// TestTrainQueues: a request while busy is recorded as a queued run and
// runs after the flight; the one slot goes to the newer request of the same
// trigger or to a higher rank (a person's, then the monitor's, then kilnd's
// own); a lower rank is refused with ErrBusy.
func TestTrainQueues(t *testing.T) {
	h := newHarness(t)
	release := h.rt.HoldTraining()
	defer release()
	h.start(spec(t, "good", 0))
	h.addData(100)
	h.waitFor("r1 running", func() bool { return slices.Contains(plain(h.rt.Started()), "kiln-train-iris-r1") })
	ctx := context.Background()

	first, err := h.mgr.Train(ctx, monitorReq("drift one"))
	if err != nil || !first.Queued || first.Behind != "run iris/r1" {
		t.Fatalf("Train while busy = %+v, %v; want queued behind run iris/r1", first, err)
	}
	second, err := h.mgr.Train(ctx, monitorReq("drift two"))
	if err != nil || !second.Queued {
		t.Fatalf("second Train while busy = %+v, %v", second, err)
	}
	if r := h.run(first.Run); r.State != storage.RunCancelled || !strings.Contains(r.Reason, "replaced in the queue by "+second.Run) {
		t.Errorf("first queued run = %s %q; want cancelled, replaced by %s", r.State, r.Reason, second.Run)
	}
	_, err = h.mgr.Train(ctx, pipeline.Request{Pipeline: "iris", Actor: pipeline.ActorKilnd, Trigger: pipeline.TriggerSchedule})
	wantErr(t, "a lower-ranked request while the slot is taken", err, pipeline.ErrBusy, second.Run+" (monitor by kilnd) waits")
	mine, err := h.mgr.Train(ctx, pipeline.Request{Pipeline: "iris", Actor: "uid:1000", Reason: "new labels in"})
	if err != nil || !mine.Queued {
		t.Fatalf("person's Train while busy = %+v, %v", mine, err)
	}
	if r := h.run(second.Run); r.State != storage.RunCancelled {
		t.Errorf("monitor's queued run after a person's request = %s; want cancelled", r.State)
	}
	if r := h.run(mine.Run); r.State != storage.RunQueued || r.Labels["trigger"] != "manual" || r.Labels["reason"] != "new labels in" {
		t.Errorf("person's queued run = %s %v; want queued with trigger and reason", r.State, r.Labels)
	}

	// A restart keeps the queue: the queued run is a record.
	h.stop()
	h.start(spec(t, "good", 0))
	release()
	h.waitFor("the queued run done", func() bool { return h.run(mine.Run).State == storage.RunSucceeded })
	if r := h.run("iris/r1"); r.State != storage.RunSucceeded {
		t.Errorf("r1 = %s; want succeeded before the queued run", r.State)
	}
	evs := h.eventsOf("run.queued")
	found := false
	for _, e := range evs {
		if slices.Contains(e.Refs, mine.Run) {
			found = e.Actor == "uid:1000" && e.Details["trigger"] == "manual" && e.Details["reason"] == "new labels in" && e.Details["behind"] == "run iris/r1"
		}
	}
	if !found {
		t.Errorf("run.queued events %+v lack %s by uid:1000 with trigger, reason and what it waited behind", evs, mine.Run)
	}
}

// addFeedback records n labelled feedback rows (type rows) split into train
// and holdout parts, as ingest would; flip swaps the classes' places.
func (h *harness) addFeedback(n int, flip bool) string {
	h.t.Helper()
	tr, ho := h.labelledParts(n, 11, 4, flip)
	ctx := context.Background()
	var id string
	err := h.store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindFeedback, Feedback: storage.FeedbackRows,
			State: storage.DatasetAccepted, Rows: int64(n), Train: &tr, Holdout: &ho})
		id = d.ID
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// TestRetrainExplicitWindow: a run on data and labelled feedback trains on
// both train parts, and its candidate is gated apart on the feedback's
// holdout rows (never shown to the trainer) against the live model, as well
// as on the data's holdout. Bad windows are refused; suspect versions stay
// out.
func TestRetrainExplicitWindow(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	d1 := h.addData(100)
	h.waitFor("m1 live", func() bool { return h.live() == "iris/m1" })
	h.advance(11 * time.Minute)
	ctx := context.Background()

	fb := h.addFeedback(80, false)
	var labels string
	if err := h.store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindFeedback, Feedback: storage.FeedbackLabels, State: storage.DatasetAccepted, Rows: 3})
		labels = d.ID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{labels}, {"other/d1"}, {"iris/m1"}, {"iris/d99"}} {
		if _, err := h.mgr.Retrain(ctx, monitorReq("drift"), bad); err == nil {
			t.Errorf("Retrain(%v) = nil error; want it refused", bad)
		}
	}
	if _, err := h.mgr.Retrain(ctx, monitorReq("drift"), nil); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Retrain on an empty window = %v; want ErrInvalid", err)
	}

	tk, err := h.mgr.Retrain(ctx, monitorReq("concept drift"), []string{fb, d1, fb})
	if err != nil || tk.Queued {
		t.Fatalf("Retrain = %+v, %v", tk, err)
	}
	if r := h.run(tk.Run); !slices.Equal(r.Datasets, []string{d1, fb}) || r.Labels["window"] != "explicit" || r.Labels["trigger"] != "monitor" {
		t.Errorf("run %s datasets %v labels %v; want [%s %s], an explicit window, trigger monitor", tk.Run, r.Datasets, r.Labels, d1, fb)
	}
	h.waitFor("m2 evaluated", func() bool {
		m, err := h.store.Model("iris/m2")
		return err == nil && (m.State == storage.ModelLive || m.State == storage.ModelRejected)
	})
	m2 := h.model("iris/m2")
	if m2.Trainer["train_rows"] != 2 {
		t.Errorf("the trainer saw %v files; want the data's and the feedback's train parts", m2.Trainer["train_rows"])
	}
	if m2.Metrics["feedback_rows"] != 20 || m2.Metrics["holdout_rows"] != 20 || m2.Metrics["live_feedback_accuracy"] == 0 || m2.Metrics["feedback_accuracy"] < 0.9 {
		t.Errorf("m2 metrics %v; want the feedback's 20 holdout rows scored apart, beside the live model's", m2.Metrics)
	}
	if m2.State != storage.ModelLive || !strings.Contains(m2.Reason, "holdout (20 rows)") || !strings.Contains(m2.Reason, "feedback (20 rows)") {
		t.Errorf("m2 = %s %q; want live, gated on both sets", m2.State, m2.Reason)
	}

	// Feedback with the classes swapped, with the data: the candidate wins
	// on the feedback rows (the live model gets them all wrong) but loses
	// the data's holdout, so the gate refuses it: both sets must pass.
	h.advance(11 * time.Minute)
	bad := h.addFeedback(200, true)
	if _, err = h.mgr.Retrain(ctx, monitorReq("drift"), []string{d1, bad}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("m3 evaluated", func() bool {
		m, err := h.store.Model("iris/m3")
		return err == nil && (m.State == storage.ModelLive || m.State == storage.ModelRejected)
	})
	m3 := h.model("iris/m3")
	if m3.State != storage.ModelRejected || h.live() != "iris/m2" || m3.Metrics["feedback_accuracy"] <= m3.Metrics["live_feedback_accuracy"] ||
		!strings.Contains(m3.Reason, "holdout (20 rows): accuracy") || !strings.Contains(m3.Reason, "below the gate's min") {
		t.Errorf("m3 = %s %q metrics %v (live %s); want rejected on the holdout though better on the feedback, m2 still live", m3.State, m3.Reason, m3.Metrics, h.live())
	}

	// Suspect versions leave explicit windows too.
	if err := h.store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.Dataset(d1)
		if err != nil {
			return err
		}
		d.Suspect = "iris/m9"
		return tx.PutDataset(d)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.mgr.Retrain(ctx, monitorReq("drift"), []string{d1}); err == nil || !strings.Contains(err.Error(), "suspect") {
		t.Errorf("Retrain on a suspect version alone = %v; want refused, naming suspect data", err)
	}
	tk, err = h.mgr.Retrain(ctx, monitorReq("drift"), []string{d1, fb})
	if err != nil {
		t.Fatal(err)
	}
	if r := h.run(tk.Run); !slices.Equal(r.Datasets, []string{fb}) {
		t.Errorf("run on [%s(suspect) %s] trains on %v; want only %s", d1, fb, r.Datasets, fb)
	}
	for _, e := range h.eventsOf("run.queued") {
		if slices.Contains(e.Refs, tk.Run) && e.Details["suspect_left_out"] != d1 {
			t.Errorf("run.queued of %s details %v; want suspect_left_out %s", tk.Run, e.Details, d1)
		}
	}
}

// TestAutomaticRollback: a monitor rollback about a model no longer live is
// void; the real one flips to the standby, records the monitor's numbers,
// makes the bad model rolled_back for good and flags the data only it
// trained on suspect, which leaves the spec's window.
func TestAutomaticRollback(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	h.twoModels()
	ctx := context.Background()

	wantErr(t, "rollback about m1 (not live)", h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m1"), pipeline.ErrStale, "live model is iris/m2 now")
	if err := h.mgr.Rollback(ctx, monitorReq("standby better on 41 rows"), "iris/m2"); err != nil {
		t.Fatal(err)
	}
	if h.live() != "iris/m1" {
		t.Fatalf("live after the rollback = %s; want iris/m1", h.live())
	}
	m2 := h.model("iris/m2")
	if m2.State != storage.ModelRolledBack || !strings.Contains(m2.Reason, "rolled back to iris/m1 by kilnd (monitor): standby better") {
		t.Errorf("m2 = %s %q; want rolled_back with who and why", m2.State, m2.Reason)
	}
	if d := h.dataset("iris/d2"); d.Suspect != "iris/m2" {
		t.Errorf("d2 suspect = %q; want iris/m2 (in m2's window, not m1's)", d.Suspect)
	}
	if d := h.dataset("iris/d1"); d.Suspect != "" {
		t.Errorf("d1 suspect = %q; want none (m1 trained on it)", d.Suspect)
	}
	up, err := h.store.Ancestors("iris/d2", 1)
	if err != nil || !slices.ContainsFunc(up, func(n storage.Node) bool { return n.ID == "iris/m2" && n.Edge == storage.EdgeQuarantined }) {
		t.Errorf("d2's parents = %+v, %v; want iris/m2 by a quarantined edge", up, err)
	}
	evs := h.eventsOf("model.rolled_back_to")
	if len(evs) != 1 {
		t.Fatalf("model.rolled_back_to events = %+v", evs)
	}
	want := map[string]string{"trigger": "monitor", "reason": "standby better on 41 rows", "p_value": "0.0004", "live_accuracy": "0.62",
		"standby_accuracy": "0.91", "statistic": "paired_sign", "window": "41", "from": "iris/m2", "suspect": "iris/d2"}
	for k, v := range want {
		if evs[0].Details[k] != v {
			t.Errorf("rollback event detail %s = %q; want %q (all: %v)", k, evs[0].Details[k], v, evs[0].Details)
		}
	}
	if evs[0].Actor != pipeline.ActorKilnd || !slices.Contains(evs[0].Refs, "iris/m2") {
		t.Errorf("rollback event actor %s refs %v; want kilnd, naming the bad model", evs[0].Actor, evs[0].Refs)
	}
	if s := h.eventsOf("dataset.suspect"); len(s) != 1 || s[0].Refs[0] != "iris/d2" || s[0].Details["trigger"] != "monitor" || s[0].Details["restored"] != "iris/m1" {
		t.Errorf("dataset.suspect events = %+v; want one for iris/d2", s)
	}
	// A second alarm about m2 is void now.
	h.advance(11 * time.Minute)
	wantErr(t, "a second rollback about m2", h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"), pipeline.ErrStale, "void")

	// Never promoted again automatically; a person must force it.
	wantErr(t, "automatic promotion of a rolled_back model", h.mgr.Promote(ctx, monitorReq("x"), "iris/m2", true), pipeline.ErrConflict, "never promotes it again")
	wantErr(t, "person's evaluation of a rolled_back model", h.mgr.Promote(ctx, person(""), "iris/m2", false), pipeline.ErrConflict, "kiln promote --force iris/m2")

	// The spec's window leaves d2 out until released.
	h.addData(100)
	h.waitFor("m3 trained", func() bool { _, err := h.store.Model("iris/m3"); return err == nil })
	if r := h.run("iris/r3"); !slices.Equal(r.Datasets, []string{"iris/d1", "iris/d3"}) {
		t.Errorf("run after the rollback trains on %v; want d1 and d3, not the suspect d2", r.Datasets)
	}
	h.waitFor("m3 live", func() bool { return h.live() == "iris/m3" })
	if err := h.mgr.Promote(ctx, person(""), "iris/m2", true); err != nil {
		t.Errorf("person's forced promotion of the rolled_back model: %v", err)
	}
}

// TestRollbackCancelsRunsOnSuspectData: runs in flight or queued whose
// window holds a newly suspect version are cancelled with the reason.
func TestRollbackCancelsRunsOnSuspectData(t *testing.T) {
	h := newHarness(t)
	h.start(spec(t, "good", 0))
	h.twoModels()
	ctx := context.Background()
	release := h.rt.HoldTraining()
	defer release()
	h.addData(100)
	h.waitFor("r3 running", func() bool { return slices.Contains(plain(h.rt.Started()), "kiln-train-iris-r3") })
	q, err := h.mgr.Train(ctx, person("iris"))
	if err != nil || !q.Queued {
		t.Fatalf("Train while busy = %+v, %v", q, err)
	}
	if err := h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"iris/r3", q.Run} {
		if r := h.run(id); r.State != storage.RunCancelled || !strings.Contains(r.Reason, "its window holds iris/d2, suspect since iris/m2 was rolled back") {
			t.Errorf("%s = %s %q; want cancelled for the suspect data", id, r.State, r.Reason)
		}
	}
	// The pipeline is free: a new run (without d2) starts.
	release()
	tk, err := h.mgr.Train(ctx, person("iris"))
	if err != nil || tk.Queued {
		t.Fatalf("Train after the cancellations = %+v, %v; want started at once", tk, err)
	}
	if r := h.run(tk.Run); slices.Contains(r.Datasets, "iris/d2") {
		t.Errorf("new run's window %v holds the suspect d2", r.Datasets)
	}
}

// TestRollbackInvalidatesEvaluation: an evaluation scoring its candidate
// against the model a rollback replaces runs again against the restored
// model; a candidate trained on newly suspect data is rejected.
func TestRollbackInvalidatesEvaluation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window string
		want   storage.ModelState
	}{
		{"re-evaluated", "window: {last: 1}\n", storage.ModelLive},
		{"trained on suspect data", "", storage.ModelRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start(specWith(t, "", tc.window))
			h.twoModels()
			ctx := context.Background()
			releaseReady := h.rt.HoldReady()
			defer releaseReady()
			h.addData(100)
			h.waitFor("m3 evaluating", func() bool {
				m, err := h.store.Model("iris/m3")
				return err == nil && m.State == storage.ModelEvaluating
			})
			if err := h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"); err != nil {
				t.Fatal(err)
			}
			releaseReady()
			h.waitFor("m3 decided", func() bool {
				m := h.model("iris/m3")
				return m.State == storage.ModelLive || m.State == storage.ModelRejected
			})
			m3 := h.model("iris/m3")
			if m3.State != tc.want {
				t.Fatalf("m3 = %s %q; want %s", m3.State, m3.Reason, tc.want)
			}
			if tc.want == storage.ModelRejected {
				if !strings.Contains(m3.Reason, "trained on suspect data: its window holds iris/d2") || h.live() != "iris/m1" {
					t.Errorf("m3 reason %q, live %s; want rejected for suspect data, m1 live", m3.Reason, h.live())
				}
				return
			}
			re := h.eventsOf("model.reevaluating")
			if len(re) != 1 || !strings.Contains(re[0].Details["reason"], "from iris/m2 to iris/m1") {
				t.Errorf("model.reevaluating events = %+v; want one saying live changed from m2 to m1", re)
			}
			if pr := h.eventsOf("model.promoted"); pr[len(pr)-1].Details["from"] != "iris/m1" {
				t.Errorf("m3's promotion details %v; want it measured against and replacing iris/m1", pr[len(pr)-1].Details)
			}
		})
	}
}

// TestEnsureStandby: with serve.standby: stop, EnsureStandby starts the
// standby's container for the monitor; a rollback then flips to it without
// a second start, and the bad model's container stops.
func TestEnsureStandby(t *testing.T) {
	h := newHarness(t)
	h.start(specWith(t, "serve: {image: kiln.local/s:1, standby: stop}", ""))
	h.twoModels()
	ctx := context.Background()
	h.waitFor("m1's container stopped", func() bool { return !slices.Contains(plain(h.rt.Serving()), "kiln-serve-iris-m1") })
	pair, err := h.mgr.Serving(ctx, "iris")
	if err != nil || pair.Standby != nil || pair.Live == nil || pair.Live.Model() != "iris/m2" {
		t.Fatalf("Serving = %+v, %v; want m2 live and no warm standby", pair, err)
	}
	b, err := h.mgr.EnsureStandby(ctx, "iris")
	if err != nil || b.Model() != "iris/m1" {
		t.Fatalf("EnsureStandby = %v, %v; want m1's backend", b, err)
	}
	if pair, _ := h.mgr.Serving(ctx, "iris"); pair.Standby == nil || pair.Standby.Model() != "iris/m1" {
		t.Errorf("Serving after EnsureStandby = %+v; want m1 as the warm standby", pair)
	}
	if b2, err := h.mgr.EnsureStandby(ctx, "iris"); err != nil || b2.Model() != "iris/m1" {
		t.Errorf("second EnsureStandby = %v, %v", b2, err)
	}
	if err := h.mgr.Rollback(ctx, monitorReq("alarm"), "iris/m2"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(plain(h.rt.Started()), " "), "kiln-serve-iris-m1"); n != 2 || h.live() != "iris/m1" {
		t.Errorf("m1's container started %d times, live %s; want twice (first live, then by EnsureStandby), m1 live", n, h.live())
	}
	h.waitFor("m2's container stopped", func() bool { return !slices.Contains(plain(h.rt.Serving()), "kiln-serve-iris-m2") })
	if _, err := h.mgr.EnsureStandby(ctx, "iris"); !errors.Is(err, pipeline.ErrConflict) {
		t.Errorf("EnsureStandby with no standby = %v; want a conflict", err)
	}
}
