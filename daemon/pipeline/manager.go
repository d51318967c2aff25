package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Sentinel errors the API maps to status codes.
var (
	ErrNoPipeline = errors.New("no such pipeline")
	ErrConflict   = errors.New("conflict")
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

// Promote makes model live: through the same evaluation and gate as any
// candidate, unless force, then at once.
func (m *Manager) Promote(ctx context.Context, model string, force bool, actor string) error {
	c, err := m.controller(pipelineOf(model))
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdPromote, model: model, force: force, actor: actor})
}

// Rollback flips the pipeline back to its standby model (or to a given
// earlier model).
func (m *Manager) Rollback(ctx context.Context, pipeline, to, actor string) error {
	c, err := m.controller(pipeline)
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdRollback, model: to, actor: actor})
}

// Pin holds the pipeline on model (making it live if it is not) and turns
// automatic promotion and rollback off.
func (m *Manager) Pin(ctx context.Context, pipeline, model, actor string) error {
	c, err := m.controller(pipeline)
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdPin, model: model, actor: actor})
}

// Unpin turns automation back on.
func (m *Manager) Unpin(ctx context.Context, pipeline, actor string) error {
	c, err := m.controller(pipeline)
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdUnpin, actor: actor})
}

// Cancel stops a queued or running run.
func (m *Manager) Cancel(ctx context.Context, run, actor string) error {
	c, err := m.controller(pipelineOf(run))
	if err != nil {
		return err
	}
	return c.do(ctx, command{kind: cmdCancel, run: run, actor: actor})
}

// Train starts a run now, whatever the triggers say (`kiln runs start`).
func (m *Manager) Train(ctx context.Context, pipeline, actor string) (string, error) {
	c, err := m.controller(pipeline)
	if err != nil {
		return "", err
	}
	reply := make(chan string, 1)
	if err := c.do(ctx, command{kind: cmdTrain, actor: actor, started: reply}); err != nil {
		return "", err
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
