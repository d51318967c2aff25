package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

type cmdKind int

const (
	cmdPromote cmdKind = iota
	cmdRollback
	cmdPin
	cmdUnpin
	cmdCancel
	cmdTrain
	cmdBackends
	cmdStandby
)

// command is one request to the loop; every kind carries its Request.
type command struct {
	kind  cmdKind
	req   Request
	model string // promote, pin: the model; rollback: the target ("" = the standby)
	from  string // rollback: the live model the caller acted on ("" = whichever)
	run   string
	force bool
	// cmdTrain: an explicit window (explicit set), else the spec's.
	datasets []string
	explicit bool

	reply   chan error
	ticket  chan Ticket      // cmdTrain: the recorded run
	serving chan ServingPair // cmdBackends: the live and standby backends
	standby chan Backend     // cmdStandby: the started standby
}

// Ticket answers Train and Retrain: the run recorded for the request and,
// when a flight was in progress, that it waits behind it.
type Ticket struct {
	Run    string
	Queued bool
	// Behind is what the queued run waits for: "run iris/r4", "the
	// evaluation of iris/m3".
	Behind string
}

// deployed is a model serving behind (or beside) the endpoint.
type deployed struct {
	deployment string
	model      string
	srv        Serving
}

// flight is the one slow step a pipeline has under way: a run (then its
// candidate's evaluation) or a person's promotion's evaluation.
type flight struct {
	run     string // "" for a promotion's evaluation
	model   string // set once there is a candidate
	req     Request
	cancel  context.CancelFunc
	reply   chan error // a person waiting on a promotion
	attempt int

	// Evaluation state, loop only. against is the live model the running
	// evaluation scores the candidate against ("" when none was live).
	// stale and void are set when the world changed under it: stale re-runs
	// the evaluation against the new live model, void rejects the candidate.
	evaluating bool
	against    string
	evalCancel context.CancelFunc
	stale      string
	void       string

	// The worker sets training; the loop reads it to cancel. cancelled
	// tells a worker that starts its container after a cancel to stop it.
	mu        sync.Mutex
	training  Training
	cancelled bool
}

// setTraining records the started container; it reports false (and the
// caller must stop the container) when the run was cancelled meanwhile.
func (f *flight) setTraining(t Training) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.training = t
	return !f.cancelled
}

// markCancelled returns the container to stop, if one started.
func (f *flight) markCancelled() Training {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = true
	return f.training
}

type runResult struct {
	flight  *flight
	run     storage.Run
	model   *storage.Model
	attempt int
	err     error
}

type evalResult struct {
	flight *flight
	model  string
	cand   Serving
	// sets are the rows the candidate was gated on: the holdout, and the
	// labelled feedback of an explicit window's feedback versions.
	sets   []setScore
	pass   bool
	reason string
	err    error
}

// setScore is the candidate and the live model scored on one set of rows.
type setScore struct {
	name  string // "holdout" or "feedback"
	rows  int
	score float64
	// absErrP90 is the candidate's 90th-percentile |error| on these rows
	// (mae and rmse): the monitor watches the rate of errors above it.
	absErrP90 float64
	liveScore float64
	hasLive   bool
	pass      bool
	reason    string
}

// controller owns one pipeline. Fields below "loop state" are touched only
// by the run goroutine; workers report back through results.
type controller struct {
	deps Deps
	name string
	log  *slog.Logger

	specMu sync.Mutex
	spec   *config.Pipeline

	dataCh   chan struct{}
	specCh   chan *config.Pipeline
	cmdCh    chan command
	results  chan any
	removeCh chan struct{}
	once     sync.Once

	liveMu sync.Mutex
	liveID string

	// workers counts this controller's worker goroutines, so stopping
	// kilnd waits for them to let go of the store.
	workers *sync.WaitGroup

	// loop state
	endpoint Endpoint
	live     *deployed
	standby  *deployed
	busy     *flight
	pending  bool       // new data arrived while busy: count it again after
	queued   *queuedRun // at most one request waiting for the flight to end
	debounce *time.Timer
	sched    *time.Timer
	pinned   string
	// starting is the standby's container being started off the loop for
	// EnsureStandby, nil when none is.
	starting *standbyStart
}

// queuedRun is a recorded run (state queued) waiting for the flight.
type queuedRun struct {
	run string
	req Request
}

func newController(deps Deps, spec *config.Pipeline, workers *sync.WaitGroup) *controller {
	c := &controller{
		workers:  workers,
		deps:     deps,
		name:     spec.Name,
		log:      deps.Log.With("pipeline", spec.Name),
		spec:     spec,
		dataCh:   make(chan struct{}, 1),
		specCh:   make(chan *config.Pipeline, 1),
		cmdCh:    make(chan command),
		results:  make(chan any, 4),
		removeCh: make(chan struct{}),
	}
	c.debounce = time.NewTimer(time.Hour)
	c.debounce.Stop()
	c.sched = time.NewTimer(time.Hour)
	c.sched.Stop()
	return c
}

func (c *controller) currentSpec() *config.Pipeline {
	c.specMu.Lock()
	defer c.specMu.Unlock()
	return c.spec
}

func (c *controller) updateSpec(spec *config.Pipeline) {
	if spec.Digest == c.currentSpec().Digest {
		return
	}
	select {
	case <-c.specCh: // a newer spec replaces one not yet taken
	default:
	}
	c.specCh <- spec
}

func (c *controller) newData() {
	select {
	case c.dataCh <- struct{}{}:
	default:
	}
}

func (c *controller) remove() { c.once.Do(func() { close(c.removeCh) }) }

func (c *controller) liveModel() string {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	return c.liveID
}

// do hands a command to the loop and waits for its answer.
func (c *controller) do(ctx context.Context, cmd command) error {
	cmd.reply = make(chan error, 1)
	select {
	case c.cmdCh <- cmd:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.removeCh:
		return fmt.Errorf("%w: pipeline %s was removed", ErrNoPipeline, c.name)
	}
	select {
	case err := <-cmd.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *controller) now() time.Time { return c.deps.Now() }

// run is the controller's loop: restore, then react to data, the schedule,
// commands and finished work until kilnd stops or the spec is removed.
func (c *controller) run(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if err := c.restore(ctx); err != nil {
		c.log.Error("restore pipeline", "err", err)
	}
	c.armSchedule()
	c.newData() // data that arrived while kilnd was down
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.removeCh:
			c.shutdownRemoved(parent)
			return
		case spec := <-c.specCh:
			c.specMu.Lock()
			c.spec = spec
			c.specMu.Unlock()
			c.log.Info("pipeline spec changed")
			c.armSchedule()
		case <-c.dataCh:
			if d := c.currentSpec().Triggers.NewData.Debounce.Duration; d > 0 {
				c.debounce.Reset(d)
			} else {
				c.maybeTrain(ctx)
			}
		case <-c.debounce.C:
			c.maybeTrain(ctx)
		case <-c.sched.C:
			c.armSchedule()
			req := kilndRequest(c.name, TriggerSchedule, "triggers.schedule "+c.currentSpec().Triggers.Schedule)
			if _, err := c.startRun(ctx, req, nil, false); err != nil {
				c.log.Info("scheduled run not started", "reason", err)
			}
		case cmd := <-c.cmdCh:
			c.handle(ctx, cmd)
		case r := <-c.results:
			switch r := r.(type) {
			case runResult:
				c.runDone(ctx, r)
			case evalResult:
				c.evalDone(ctx, r)
			case *standbyStart:
				c.standbyDone(ctx, r)
			case stopReplaced:
				c.stopDone(ctx, r)
			}
		}
	}
}

const actorKilnd = ActorKilnd

func (c *controller) armSchedule() {
	c.sched.Stop()
	expr := c.currentSpec().Triggers.Schedule
	if expr == "" {
		return
	}
	cr, err := config.ParseCron(expr)
	if err != nil {
		c.log.Error("schedule", "err", err)
		return
	}
	c.sched.Reset(time.Until(cr.Next(c.now())))
}

// maybeTrain starts a run when enough new rows arrived since the last one;
// while busy it remembers to count again when the flight ends.
func (c *controller) maybeTrain(ctx context.Context) {
	if c.busy != nil {
		c.pending = true
		return
	}
	spec := c.currentSpec()
	newRows, err := c.newRows()
	if err != nil {
		c.log.Error("count new rows", "err", err)
		return
	}
	if newRows == 0 || newRows < int64(spec.Triggers.NewData.MinRows) {
		if newRows > 0 {
			c.log.Info("new data below triggers.new_data.min_rows; waiting for more", "rows", newRows, "min_rows", spec.Triggers.NewData.MinRows)
		}
		return
	}
	req := kilndRequest(c.name, TriggerNewData, fmt.Sprintf("%d new rows", newRows))
	if _, err := c.startRun(ctx, req, nil, false); err != nil {
		c.log.Info("run on new data not started", "reason", err)
	}
}

// handle carries out a command, a person's or automation's.
func (c *controller) handle(ctx context.Context, cmd command) {
	if cmd.kind != cmdBackends && cmd.kind != cmdStandby {
		var err error
		if cmd.req, err = cmd.req.check(); err != nil {
			cmd.reply <- err
			return
		}
	}
	var err error
	switch cmd.kind {
	case cmdTrain:
		var t Ticket
		if err = c.guard(cmd.req, opTrain); err == nil {
			t, err = c.startRun(ctx, cmd.req, cmd.datasets, cmd.explicit)
		}
		if err == nil {
			cmd.ticket <- t
		}
	case cmdCancel:
		err = c.cancelRun(ctx, cmd.run, cmd.req, "")
	case cmdPromote:
		err = c.promoteCmd(ctx, cmd)
		if err == nil && !cmd.force {
			return // answered when the evaluation ends
		}
	case cmdRollback:
		err = c.rollback(ctx, cmd.req, cmd.from, cmd.model)
	case cmdPin:
		err = c.pin(ctx, cmd.model, cmd.req)
	case cmdUnpin:
		err = c.unpin(ctx, cmd.req)
	case cmdBackends:
		cmd.serving <- c.servingPair()
	case cmdStandby:
		if err = c.ensureStandby(ctx, cmd); err == nil {
			return // answered now or once the container is ready
		}
	}
	cmd.reply <- err
}

func (f *flight) describe() string {
	if f.run != "" {
		return "run " + f.run
	}
	return "the evaluation of " + f.model
}

// event appends one event, logging (not failing) when the store refuses:
// the records already say what happened.
func (c *controller) event(ctx context.Context, actor, kind string, refs []string, details map[string]string) {
	if err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.Append(storage.Event{Actor: actor, Kind: kind, Pipeline: c.name, Refs: refs, Details: details})
		return err
	}); err != nil && !errors.Is(err, context.Canceled) {
		c.log.Error("record event", "kind", kind, "err", err)
	}
}

func (c *controller) setLive(d *deployed) {
	c.live = d
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.liveID = ""
	if d != nil {
		c.liveID = d.model
	}
}

// shutdownRemoved stops what a removed pipeline runs: its training (the
// run is recorded cancelled) and its serving containers; records stay, so
// loading the spec again brings the live model back.
func (c *controller) shutdownRemoved(ctx context.Context) {
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	req := kilndRequest(c.name, "reload", "spec removed")
	c.pending = false
	if q := c.queued; q != nil {
		_ = c.cancelRun(stopCtx, q.run, req, "the pipeline's spec was removed")
	}
	if c.busy != nil && c.busy.run != "" {
		_ = c.cancelRun(stopCtx, c.busy.run, req, "the pipeline's spec was removed")
	}
	if c.busy != nil && c.busy.cancel != nil {
		c.busy.cancel()
	}
	for _, d := range []*deployed{c.live, c.standby} {
		if d != nil && d.srv != nil {
			if err := d.srv.Stop(stopCtx); err != nil {
				c.log.Warn("stop serving container of removed pipeline", "model", d.model, "err", err)
			}
		}
	}
	if err := c.deps.Endpoints.Close(c.name); err != nil {
		c.log.Warn("close endpoint", "err", err)
	}
	c.event(stopCtx, actorKilnd, "pipeline.stopped", nil, map[string]string{"reason": "spec removed"})
}
