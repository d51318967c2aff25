package pipeline

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Manager runs one controller per loaded pipeline.
type Manager struct {
	deps Deps

	mu    sync.Mutex
	ctx   context.Context // set by Start; controllers live under it
	ctrls map[string]*controller
	wg    sync.WaitGroup
}

// New builds a manager; Start runs it.
func New(deps Deps) *Manager {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Manager{deps: deps, ctrls: map[string]*controller{}}
}

// Start begins watching the store for new data and runs controllers for
// the pipelines of specs. It returns at once; everything stops with ctx.
func (m *Manager) Start(ctx context.Context, specs map[string]*config.Pipeline) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	seq, _ := m.deps.Store.Head()
	events := m.deps.Store.Subscribe(ctx, seq+1)
	m.Apply(specs)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for e := range events {
			if isDataEvent(e) {
				m.kick(e.Pipeline)
			}
		}
	}()
}

// Wait returns once every controller has stopped (after Start's ctx ends).
func (m *Manager) Wait() { m.wg.Wait() }

// isDataEvent reports whether e may add training data to its pipeline: a
// dataset accepted by ingest or released from quarantine by a person. Feedback
// versions (details "kind": "feedback") never start training by themselves;
// events written before ingest named the kind were all data's.
func isDataEvent(e storage.Event) bool {
	return e.Pipeline != "" && (e.Kind == "dataset.accepted" || e.Kind == "dataset.released") &&
		e.Details["kind"] != string(storage.KindFeedback)
}

// Apply makes the running controllers match specs: new pipelines start,
// changed ones get their new spec, removed ones stop (history and the
// containers' records stay; their serving containers are stopped).
func (m *Manager) Apply(specs map[string]*config.Pipeline) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return // not started: Start applies them
	}
	for name, spec := range specs {
		if c, ok := m.ctrls[name]; ok {
			c.updateSpec(spec)
			continue
		}
		c := newController(m.deps, spec, &m.wg)
		m.ctrls[name] = c
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.run(m.ctx)
		}()
	}
	for name, c := range m.ctrls {
		if _, ok := specs[name]; !ok {
			c.remove()
			delete(m.ctrls, name)
		}
	}
}

func (m *Manager) kick(pipeline string) {
	m.mu.Lock()
	c := m.ctrls[pipeline]
	m.mu.Unlock()
	if c != nil {
		c.newData()
	}
}

func (m *Manager) controller(pipeline string) (*controller, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.ctrls[pipeline]
	if c == nil {
		return nil, fmt.Errorf("%w %q is loaded", ErrNoPipeline, pipeline)
	}
	return c, nil
}

// pipelineOf is the pipeline part of a short ID ("iris/m7" -> "iris").
func pipelineOf(id string) string {
	p, _, _ := strings.Cut(id, "/")
	return p
}

// controllerFor finds req's controller; req.Pipeline defaults to the
// pipeline of id (a model or run ID) and must agree with it.
func (m *Manager) controllerFor(req *Request, id string) (*controller, error) {
	if id != "" {
		p := pipelineOf(id)
		if req.Pipeline != "" && req.Pipeline != p {
			return nil, fmt.Errorf("%s is not of pipeline %s: %w", id, req.Pipeline, storage.ErrInvalid)
		}
		req.Pipeline = p
	}
	return m.controller(req.Pipeline)
}

// Promote makes model live: through the same evaluation and gate as any
// candidate, unless force, then at once. The guard applies (pin; busy;
// cooldown for automation); a rolled_back model is refused unless a person
// forces it.
func (m *Manager) Promote(ctx context.Context, req Request, model string, force bool) error {
	c, err := m.controllerFor(&req, model)
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdPromote, req: req, model: model, force: force})
}

// Rollback flips req.Pipeline back to its standby model. from is the live
// model the caller acted on (the model an alarm was about): when another
// model is live by now the command is void with ErrStale; "" accepts
// whichever is live (a person's kiln rollback). The replaced model becomes
// rolled_back and the data only it trained on suspect (see rollback.go).
func (m *Manager) Rollback(ctx context.Context, req Request, from string) error {
	c, err := m.controllerFor(&req, "")
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdRollback, req: req, from: from})
}

// RollbackTo is Rollback to a named earlier model (kiln rollback --to).
func (m *Manager) RollbackTo(ctx context.Context, req Request, to string) error {
	c, err := m.controllerFor(&req, "")
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdRollback, req: req, model: to})
}

// Pin holds the pipeline on model (making it live if it is not) and turns
// automatic promotion and rollback off. People only.
func (m *Manager) Pin(ctx context.Context, req Request, model string) error {
	c, err := m.controllerFor(&req, "")
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdPin, req: req, model: model})
}

// Unpin turns automation back on. People only.
func (m *Manager) Unpin(ctx context.Context, req Request) error {
	c, err := m.controllerFor(&req, "")
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdUnpin, req: req})
}

// Cancel stops a queued or running run.
func (m *Manager) Cancel(ctx context.Context, req Request, run string) error {
	c, err := m.controllerFor(&req, run)
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdCancel, req: req, run: run})
}

// Train records a run on the spec's window now, whatever the triggers say
// (kiln runs start). While a run or evaluation is in flight the run waits
// in the queue (Ticket.Queued); see startRun for what one slot holds.
func (m *Manager) Train(ctx context.Context, req Request) (Ticket, error) {
	return m.train(ctx, req, nil, false)
}

// Retrain is Train on an explicit window: data versions and labelled
// feedback versions (storage.KindFeedback of type rows or joined). Their
// train parts go to the trainer; their holdout parts to the evaluation, the
// feedback's scored apart, so the candidate must beat the live model on
// recent labelled rows the trainer never saw as well as on the holdout.
// Suspect versions are left out (listed in the run.queued event).
func (m *Manager) Retrain(ctx context.Context, req Request, datasets []string) (Ticket, error) {
	if len(datasets) == 0 {
		return Ticket{}, fmt.Errorf("retrain %s: an empty window (Train takes the spec's): %w", req.Pipeline, storage.ErrInvalid)
	}
	return m.train(ctx, req, datasets, true)
}

func (m *Manager) train(ctx context.Context, req Request, datasets []string, explicit bool) (Ticket, error) {
	c, err := m.controllerFor(&req, "")
	if err != nil {
		return Ticket{}, err
	}
	reply := make(chan Ticket, 1)
	if err := c.do(ctx, command{kind: cmdTrain, req: req, datasets: datasets, explicit: explicit, ticket: reply}); err != nil {
		return Ticket{}, err
	}
	return <-reply, nil
}

// EnsureStandby returns pipeline's standby backend, starting its serving
// container first when serve.standby: stop left it stopped, so the monitor
// can replay logged inputs through it before deciding. The container stays
// warm until the next switch of the live model; a rollback uses it.
func (m *Manager) EnsureStandby(ctx context.Context, pipeline string) (Backend, error) {
	c, err := m.controller(pipeline)
	if err != nil {
		return nil, err
	}
	reply := make(chan Backend, 1)
	if err := c.do(ctx, command{kind: cmdStandby, standby: reply}); err != nil {
		return nil, err
	}
	return <-reply, nil
}

// Live is the model a pipeline's endpoint serves, "" when none.
func (m *Manager) Live(pipeline string) string {
	c, err := m.controller(pipeline)
	if err != nil {
		return ""
	}
	return c.liveModel()
}
