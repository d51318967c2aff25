package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
)

func init() { register(Group{Name: "rollback", Run: benchRollback}) }

// rbSpec trains each batch alone (window last 1), so a batch with every
// label swapped makes a model whose own holdout agrees with it and the gate
// promotes it; cooldown 1s and no probation leave the rollback to the
// labels alone, as in cmd/kilnd's TestAutomaticRollback. degradation: alert
// keeps a drift verdict (none is expected) from starting runs.
const rbSpec = `name: rb
data: {format: csv, label: diagnosis, settle: 0s, validate: {labels: [benign, malignant]}}
window: {last: 1}
train:
  image: kiln.local/tabular-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
serve:
  image: kiln.local/tabular-server:1
  resources: {memory: 256Mi}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0.8}
triggers: {new_data: {debounce: 0s, min_rows: 1}, degradation: alert}
monitor: {cooldown: 1s, probation: 0s}
`

const (
	rbCooldown = time.Second // monitor.cooldown in rbSpec
	rbConns    = 8           // the load's fixed concurrency
	rbFeedback = 60          // labelled rows per feedback file
)

// rbSwap is one automatic rollback: the corrupted model bad, live until
// the monitor's alarm at alarm (the monitor.alarm event's time), rolled
// back at rolled (the model.rolled_back_to event's time) to good.
type rbSwap struct {
	good, bad     string
	alarm, rolled time.Time
	by            string // what raised the alarm: "paired" (the test from the promotion) or a detector
	feedback      int    // feedback files it took
	stopped       chan error
}

// benchRollback measures rollback.swap_p90_ms and rollback.non2xx through
// kiln's real decision path: kilnd with the private containerd and the
// example images; per swap a fresh pair of models, a good batch and then a
// batch with every label swapped (promoted by the gate); labelled feedback
// from the true distribution until the monitor alarms, decides and the
// controller rolls back; all of it under a closed-loop load of rbConns
// connections on the endpoint. A swap runs from the alarm to the answer of
// the standby to the first request sent at or after the alarm.
func benchRollback(ctx context.Context, opt Options) []Figure {
	const (
		swapName, swapGoal = "rollback.swap_p90_ms", "<= 100"
		badName, badGoal   = "rollback.non2xx", "== 0"
	)
	swaps := 100
	if opt.Quick {
		swaps = 5
	}
	fail := func(why string) []Figure {
		return []Figure{unmeasured(swapName, "ms", swapGoal, why), unmeasured(badName, "responses", badGoal, why)}
	}
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		return fail("needs a containerd: run under .ci/with-containerd (make bench does)")
	}
	if os.Geteuid() != 0 {
		return fail("needs root for containers")
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		return fail("needs ctr to check that rolled-back containers stop")
	}
	kilnd := filepath.Join(opt.Bin, "kilnd")
	if _, err := os.Stat(kilnd); err != nil {
		return fail("no " + kilnd + " (run make build)")
	}
	data, err := rbLoadData("examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	l, stop, err := startLoop(ctx, kilnd, addr, "rb", "rb", rbSpec)
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	root, ns, c := l.root, l.ns, l.c
	evs := &rbEvents{}
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	go evs.follow(fctx, c)

	r := &rbRunner{c: c, evs: evs, data: data, drop: filepath.Join(root, "var/lib/kiln/drop/rb"), addr: addr, ns: ns}
	if err := os.MkdirAll(r.drop, 0o755); err != nil {
		return fail(err.Error())
	}
	if _, err := r.goodModel(ctx, 0); err != nil {
		return fail("the first model: " + err.Error())
	}

	load := newRBLoad(filepath.Join(root, "run/kiln/serve/rb.sock"), strings.Join(data.rows[0], ",")+"\n", rbConns)
	load.start()
	t0 := time.Now()
	var done []*rbSwap
	var runErr error
	forced := 0
	for i := 1; i <= swaps && runErr == nil; i++ {
		var s *rbSwap
		s, runErr = r.swap(ctx, i, &forced)
		if s != nil {
			done = append(done, s)
		}
	}
	time.Sleep(200 * time.Millisecond) // the last swap's standby answers in the records
	reqs := load.end()
	elapsed := time.Since(t0)

	// The rolled-back containers must be stopped (the spec: a rolled-back
	// model's container is stopped once its requests drained).
	stopped, stopErr := 0, ""
	for _, s := range done {
		if err := <-s.stopped; err == nil {
			stopped++
		} else if stopErr == "" {
			stopErr = fmt.Sprintf("; %s: %v", s.bad, err)
		}
	}
	deferred := 0
	if b, err := os.ReadFile(filepath.Join(root, "kilnd.log")); err == nil {
		deferred = strings.Count(string(b), "automatic action deferred")
	}

	badDetail := fmt.Sprintf("%d non-2xx or failed of %d requests (%d connections, Go closed-loop load) over %d swaps in %.0f s, counted from the first model's promotion to the end",
		load.failed.Load(), len(reqs), rbConns, len(done), elapsed.Seconds())
	if f := load.firstFailure(); f != "" {
		badDetail += "; first: " + f
	}
	badFig := measured(badName, float64(load.failed.Load()), "responses", badGoal, badDetail)
	if len(done) == 0 {
		why := "no swap completed"
		if runErr != nil {
			why += ": " + runErr.Error()
		}
		return []Figure{unmeasured(swapName, "ms", swapGoal, why), badFig}
	}

	m := rbMeasure(reqs, done)
	total, toRolled, rolledToAnswer, sentAfter := m.total, m.toRolled, m.rolledToAnswer, m.sentAfter
	late, missing, byCount, maxSwap := m.late, m.missing, m.by, m.maxSwap
	var bys []string
	for k, v := range byCount {
		bys = append(bys, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(bys)
	p := func(xs []float64) string {
		return fmt.Sprintf("p50 %.1f p90 %.1f max %.1f", median(xs), percentile(xs, 90), percentile(xs, 100))
	}
	detail := fmt.Sprintf("%d swaps (fresh good+corrupted model pair each; %d good models promoted with --force after the gate kept the equal live one), "+
		"alarm->first standby answer ms %s (max %s); split: alarm->model.rolled_back_to event %s, that event->standby answer %s, "+
		"alarm->sending of that request %s; alarms by %s (a paired alarm is its own decision, in the same record; a detector's is decided on later labels); "+
		"rollbacks deferred by kilnd (cooldown, busy) %d; "+
		"requests sent after the standby's first answer answered by the rolled-back model: %d; swaps with no standby answer: %d; "+
		"rolled-back containers stopped: %d of %d%s; load: Go closed loop, %d connections, %d requests; "+
		"clocks: kilnd's event times (taken in the transaction, before its commit) and the client's send/answer times are both this machine's wall clock (UTC ns); "+
		"%.0f s for the swaps (each: train+evaluate two models, %d rows of feedback a file)",
		len(total), forced, p(total), maxSwap, p(toRolled), p(rolledToAnswer), p(sentAfter), strings.Join(bys, ", "), deferred,
		late, missing, stopped, len(done), stopErr, rbConns, len(reqs), elapsed.Seconds(), rbFeedback)
	if runErr != nil {
		detail += fmt.Sprintf("; stopped after %d of %d swaps: %v", len(done), swaps, runErr)
	}
	swapFig := measured(swapName, percentile(total, 90), "ms", swapGoal, detail)
	if late > 0 || missing > 0 || stopped < len(done) || runErr != nil || len(total) < 100 {
		swapFig.Pass = false // the swap is not clean, or too few samples for a p90
	}
	return []Figure{swapFig, badFig}
}

// rbData is the example data: header (features then diagnosis), rows of
// features and their labels.
type rbData struct {
	header []string
	rows   [][]string
	labels []string
}

func rbLoadData(path string) (rbData, error) {
	f, err := os.Open(path)
	if err != nil {
		return rbData{}, err
	}
	defer func() { _ = f.Close() }() // read only
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return rbData{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) < 400 || recs[0][len(recs[0])-1] != "diagnosis" {
		return rbData{}, fmt.Errorf("%s: want over 400 rows with diagnosis last", path)
	}
	d := rbData{header: recs[0]}
	for _, r := range recs[1:] {
		d.rows = append(d.rows, r[:len(r)-1])
		d.labels = append(d.labels, r[len(r)-1])
	}
	return d, nil
}

// csvOf renders rows (features) with labels under the header. Column col
// of every row is scaled by 1+1e-6*salt, so the rows are new to every
// model (the monitor leaves rows a model trained on out of its scores);
// batches nudge column 0, feedback column 1, each with its own salt.
func (d rbData) csvOf(idx []int, col, salt int, swapLabels bool) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write(d.header)
	for _, i := range idx {
		row := slices.Clone(d.rows[i])
		x, _ := strconv.ParseFloat(row[col], 64)
		row[col] = strconv.FormatFloat(x*(1+1e-6*float64(salt)), 'g', -1, 64)
		l := d.labels[i]
		if swapLabels {
			l = map[string]string{"benign": "malignant", "malignant": "benign"}[l]
		}
		_ = w.Write(append(row, l))
	}
	w.Flush()
	return b.String()
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// rbRunner drives kilnd through the swaps.
type rbRunner struct {
	c        *apiclient.Client
	evs      *rbEvents
	data     rbData
	drop     string
	addr, ns string
	fbFiles  int
}

// dropBatch renames a batch into the drop folder and waits for its model's
// verdict: the model.promoted or model.rejected event that follows.
func (r *rbRunner) dropBatch(ctx context.Context, name, text string) (api.Event, error) {
	from := r.evs.len()
	tmp := filepath.Join(r.drop, "."+name+".part")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch drop folder
		return api.Event{}, err
	}
	if err := os.Rename(tmp, filepath.Join(r.drop, name)); err != nil {
		return api.Event{}, err
	}
	e, _, err := r.evs.wait(ctx, from, 3*time.Minute, func(e api.Event) bool {
		return (e.Kind == "model.promoted" || e.Kind == "model.rejected" || e.Kind == "run.failed" || e.Kind == "dataset.quarantined") && len(e.Refs) > 0
	})
	if err != nil {
		return e, fmt.Errorf("%s: no verdict: %w", name, err)
	}
	if e.Kind == "run.failed" || e.Kind == "dataset.quarantined" {
		return e, fmt.Errorf("%s: %s %v", name, e.Kind, e.Details)
	}
	return e, nil
}

// goodModel makes a model from the true labels live: through the gate, or
// (when the gate keeps the live model, as good as it on that holdout) by
// force, as a person would. It reports whether force was needed.
func (r *rbRunner) goodModel(ctx context.Context, i int) (forced bool, err error) {
	e, err := r.dropBatch(ctx, fmt.Sprintf("good%d.csv", i), r.data.csvOf(span(0, 300), 0, 2*i+1, false))
	if err != nil {
		return false, err
	}
	if e.Kind == "model.promoted" {
		return false, nil
	}
	id := e.Refs[0]
	from := r.evs.len()
	if _, err := r.c.Promote(ctx, id, true); err != nil {
		return true, fmt.Errorf("promote --force %s (rejected: %v): %w", id, e.Details, err)
	}
	if _, _, err := r.evs.wait(ctx, from, 30*time.Second, func(e api.Event) bool {
		return e.Kind == "model.promoted" && len(e.Refs) > 0 && e.Refs[0] == id
	}); err != nil {
		return true, fmt.Errorf("%s promoted by force: %w", id, err)
	}
	return true, nil
}

// swap is one measured swap: a fresh good model, a corrupted one promoted
// by the gate, feedback until kilnd rolls back.
func (r *rbRunner) swap(ctx context.Context, i int, forced *int) (*rbSwap, error) {
	f, err := r.goodModel(ctx, i)
	if err != nil {
		return nil, fmt.Errorf("swap %d: good model: %w", i, err)
	}
	if f {
		*forced++
	}
	e, err := r.dropBatch(ctx, fmt.Sprintf("bad%d.csv", i), r.data.csvOf(span(300, len(r.data.rows)), 0, 2*i+2, true))
	if err != nil {
		return nil, fmt.Errorf("swap %d: corrupted model: %w", i, err)
	}
	if e.Kind != "model.promoted" {
		return nil, fmt.Errorf("swap %d: the gate rejected the corrupted model %s: %v", i, e.Refs[0], e.Details)
	}
	s := &rbSwap{bad: e.Refs[0], good: e.Details["from"], stopped: make(chan error, 1)}
	if s.good == "" {
		return nil, fmt.Errorf("swap %d: %s promoted with no model before it: %v", i, s.bad, e.Details)
	}
	// Feedback only once the cooldown after this promotion is over, so a
	// decision is never deferred by it (that would time the cooldown).
	if wait := time.Until(e.Time.Add(rbCooldown + 50*time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	for ; s.feedback < 10; s.feedback++ {
		from := r.evs.len()
		r.fbFiles++
		text := r.data.csvOf(rbPick(r.fbFiles, len(r.data.rows)), 1, r.fbFiles, false)
		if _, err := r.c.Feedback(ctx, "rb", strings.NewReader(text), int64(len(text))); err != nil {
			return nil, fmt.Errorf("swap %d: feedback: %w", i, err)
		}
		if _, _, err := r.evs.wait(ctx, from, time.Minute, func(e api.Event) bool { return e.Kind == "feedback.scored" }); err != nil {
			return nil, fmt.Errorf("swap %d: feedback not scored: %w", i, err)
		}
		a, ok := r.evs.find(from, func(e api.Event) bool {
			return e.Kind == "monitor.alarm" && len(e.Refs) > 0 && e.Refs[0] == s.bad
		})
		if !ok {
			continue
		}
		s.alarm, s.by = a.Time, a.Details["by"]
		rb, _, err := r.evs.wait(ctx, from, time.Minute, func(e api.Event) bool {
			return e.Kind == "model.rolled_back_to" && e.Details["from"] == s.bad
		})
		if err != nil {
			return nil, fmt.Errorf("swap %d: alarm on %s but no rollback: %w", i, s.bad, err)
		}
		if rb.Refs[0] != s.good || rb.Actor != "kilnd" {
			return nil, fmt.Errorf("swap %d: rolled back to %s by %s; want %s by kilnd", i, rb.Refs[0], rb.Actor, s.good)
		}
		s.rolled = rb.Time
		go func() { s.stopped <- r.waitStopped(ctx, s.bad) }()
		return s, nil
	}
	return nil, fmt.Errorf("swap %d: no alarm on %s after %d feedback files", i, s.bad, s.feedback)
}

// rbPick chooses rbFeedback rows of n for feedback file k.
func rbPick(k, n int) []int {
	out := make([]int, rbFeedback)
	for j := range out {
		out[j] = (k*rbFeedback + j*7) % n
	}
	return out
}

// waitStopped polls containerd until model's serving container has no
// running task: kilnd stops a rolled-back model once its requests drained
// (within a minute, daemon/pipeline's drainGrace).
func (r *rbRunner) waitStopped(ctx context.Context, model string) error {
	// runtime.ContainerID puts the installation and digest between the
	// kind and the model ID: match the model ID at the end.
	suffix := "-" + strings.ReplaceAll(model, "/", "-")
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, "ctr", "-a", r.addr, "-n", r.ns, "tasks", "ls").Output()
		if err != nil {
			return fmt.Errorf("ctr tasks ls: %w", err)
		}
		running := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && strings.HasPrefix(f[0], "kiln-serve-") && strings.HasSuffix(f[0], suffix) && f[2] == "RUNNING" {
				running = true
			}
		}
		if !running {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("still running 90 s after the rollback")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// rbEvents is kilnd's event stream, followed from the start.
type rbEvents struct {
	mu  sync.Mutex
	evs []api.Event
	err error
}

func (e *rbEvents) follow(ctx context.Context, c *apiclient.Client) {
	err := c.FollowEvents(ctx, 0, func(ev api.Event) error {
		e.mu.Lock()
		e.evs = append(e.evs, ev)
		e.mu.Unlock()
		return nil
	})
	e.mu.Lock()
	e.err = fmt.Errorf("event stream ended: %v", err)
	e.mu.Unlock()
}

func (e *rbEvents) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.evs)
}

// find returns the first event from index from on that matches.
func (e *rbEvents) find(from int, match func(api.Event) bool) (api.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.evs[min(from, len(e.evs)):] {
		if match(ev) {
			return ev, true
		}
	}
	return api.Event{}, false
}

// wait polls for the first matching event from index from on.
func (e *rbEvents) wait(ctx context.Context, from int, limit time.Duration, match func(api.Event) bool) (api.Event, int, error) {
	deadline := time.Now().Add(limit)
	for {
		if ev, ok := e.find(from, match); ok {
			return ev, from, nil
		}
		e.mu.Lock()
		err := e.err
		e.mu.Unlock()
		switch {
		case err != nil:
			return api.Event{}, from, err
		case ctx.Err() != nil:
			return api.Event{}, from, ctx.Err()
		case time.Now().After(deadline):
			return api.Event{}, from, fmt.Errorf("not within %s", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
