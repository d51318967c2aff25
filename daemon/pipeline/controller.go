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
)

type command struct {
	kind    cmdKind
	model   string
	run     string
	force   bool
	actor   string
	reply   chan error
	started chan string      // cmdTrain: the new run's ID
	serving chan ServingPair // cmdBackends: the live and standby backends
}

// deployed is a model serving behind (or beside) the endpoint.
type deployed struct {
	deployment string
	model      string
	srv        Serving
}

// flight is the one slow step a pipeline has under way: a run (then its
// candidate's evaluation) or a manual promotion's evaluation.
type flight struct {
	run     string // "" for a manual evaluation
	model   string // set once there is a candidate
	cancel  context.CancelFunc
	reply   chan error // a person waiting on a manual promotion
	attempt int

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
	flight    *flight
	model     string
	cand      Serving
	score     float64
	liveScore float64
	hasLive   bool
	rows      int
	pass      bool
	reason    string
	err       error
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
	pending  bool // a trigger arrived while busy
	debounce *time.Timer
	sched    *time.Timer
	pinned   string
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
				c.maybeTrain(ctx, "new data")
			}
		case <-c.debounce.C:
			c.maybeTrain(ctx, "new data")
		case <-c.sched.C:
			c.armSchedule()
			c.startRun(ctx, "schedule", actorKilnd, nil)
		case cmd := <-c.cmdCh:
			c.handle(ctx, cmd)
		case r := <-c.results:
			switch r := r.(type) {
			case runResult:
				c.runDone(ctx, r)
			case evalResult:
				c.evalDone(ctx, r)
			}
		}
	}
}

const actorKilnd = "kilnd"

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

// maybeTrain starts a run when enough new rows arrived since the last one.
func (c *controller) maybeTrain(ctx context.Context, why string) {
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
	c.startRun(ctx, why, actorKilnd, nil)
}

// handle carries out a person's command.
func (c *controller) handle(ctx context.Context, cmd command) {
	var err error
	switch cmd.kind {
	case cmdTrain:
		if c.busy != nil {
			err = fmt.Errorf("%w: %s is busy with %s", ErrConflict, c.name, c.busy.describe())
			break
		}
		c.startRun(ctx, "manual", cmd.actor, cmd.started)
		if c.busy == nil {
			err = fmt.Errorf("run for %s not started; see kiln events", c.name)
		}
	case cmdCancel:
		err = c.cancelRun(ctx, cmd.run, cmd.actor)
	case cmdPromote:
		err = c.promoteCmd(ctx, cmd)
		if err == nil && !cmd.force {
			return // answered when the evaluation ends
		}
	case cmdRollback:
		err = c.rollback(ctx, cmd.model, cmd.actor, "manual rollback")
	case cmdPin:
		err = c.pin(ctx, cmd.model, cmd.actor)
	case cmdUnpin:
		err = c.unpin(ctx, cmd.actor)
	case cmdBackends:
		cmd.serving <- c.servingPair()
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
	if c.busy != nil && c.busy.run != "" {
		_ = c.cancelRun(stopCtx, c.busy.run, actorKilnd)
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
