package monitor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Monitor scores feedback versions as they are accepted, one worker per
// pipeline, and keeps the hourly label-free signals.
type Monitor struct {
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	specs   map[string]pipelineSpec
	workers map[string]*worker
	ctx     context.Context
	wg      sync.WaitGroup

	train *trainCache
	stats statistics
	// probation is what probe has read of each pipeline's log since its
	// promotion (probation.go).
	probation perPipeline[probationTally]
	// signals is each pipeline's reading of its log for the hourly
	// signals, kept between passes (signalpass.go).
	signals perPipeline[signalState]
}

// worker serialises one pipeline's scoring; kick wakes it.
type worker struct {
	kick chan struct{}
	stop context.CancelFunc
}

// New builds a monitor; Start runs it.
func New(deps Deps) *Monitor {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Monitor{deps: deps, log: deps.Logger, specs: map[string]pipelineSpec{}, workers: map[string]*worker{},
		train: newTrainCache(deps.Store, deps.RowKey), stats: detectStats{}}
}

// Start runs the monitor until ctx ends: it follows the event stream for
// accepted feedback and scores every pipeline's backlog first, so versions
// accepted while kilnd was down (or scored halfway when it died) are scored
// once now.
func (m *Monitor) Start(ctx context.Context, specs map[string]*config.Pipeline) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	seq, _ := m.deps.Store.Head()
	events := m.deps.Store.Subscribe(ctx, seq+1)
	m.Apply(specs)
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		for e := range events {
			// Released feedback (a person admitted a quarantined version)
			// is scored like accepted feedback.
			if (e.Kind == "dataset.accepted" || e.Kind == "dataset.released") && e.Details["kind"] == string(storage.KindFeedback) {
				m.kick(e.Pipeline)
			}
			// A promotion starts a probation; any model change may
			// settle an alarm waiting on a cooldown.
			if strings.HasPrefix(e.Kind, "model.") {
				m.kick(e.Pipeline)
			}
		}
	}()
	go func() {
		defer m.wg.Done()
		m.runSignals(ctx)
	}()
}

// Wait returns once every goroutine Start began has ended.
func (m *Monitor) Wait() { m.wg.Wait() }

// Apply makes specs the monitored set: new pipelines get a worker (which
// scores their backlog), removed ones lose theirs (their records stay).
func (m *Monitor) Apply(specs map[string]*config.Pipeline) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[string]pipelineSpec{}
	for name, p := range specs {
		next[name] = specOf(p)
	}
	m.specs = next
	if m.ctx == nil {
		return
	}
	for name, w := range m.workers {
		if _, ok := next[name]; !ok {
			w.stop()
			delete(m.workers, name)
			m.probation.set(name, nil)
		}
	}
	for name := range next {
		if _, ok := m.workers[name]; ok {
			m.kickLocked(name) // the spec may have changed what is scorable
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		w := &worker{kick: make(chan struct{}, 1), stop: cancel}
		m.workers[name] = w
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.runWorker(ctx, name, w)
		}()
		m.kickLocked(name)
	}
}

func (m *Monitor) kick(pipeline string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kickLocked(pipeline)
}

func (m *Monitor) kickLocked(pipeline string) {
	if w := m.workers[pipeline]; w != nil {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

func (m *Monitor) spec(pipeline string) (pipelineSpec, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.specs[pipeline]
	return s, ok
}

// Retry bounds after a failed scoring (a backend restarting, a standby
// stopped by a promotion in the middle).
const (
	settleEvery = 2 * time.Second // retry of a decided action refused for now
	retryMin    = 2 * time.Second
	retryMax    = time.Minute
)

func (m *Monitor) runWorker(ctx context.Context, pipeline string, w *worker) {
	log := m.log.With("pipeline", pipeline)
	backoff := retryMin
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	probe := time.NewTimer(time.Hour)
	probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-retry.C:
		case <-probe.C:
		}
		if spec, ok := m.spec(pipeline); ok {
			on, err := m.probe(ctx, spec)
			if err != nil {
				log.Warn("probation check", "err", err)
			}
			switch pending := m.settle(ctx, spec); {
			case pending:
				probe.Reset(settleEvery) // a cooldown is seconds to minutes
			case on:
				probe.Reset(probationEvery)
			}
		}
		err := m.scoreBacklog(ctx, pipeline)
		if spec, ok := m.spec(pipeline); ok && ctx.Err() == nil && m.settle(ctx, spec) {
			// The scoring just done may have decided an action that was
			// refused for now (a cooldown): without this the retry waited
			// for the next feedback file, which may never come.
			probe.Reset(settleEvery)
		}
		if err == nil || ctx.Err() != nil {
			backoff = retryMin
			continue
		}
		log.Warn("feedback not scored yet; retrying", "err", err, "in", backoff)
		retry.Reset(backoff)
		backoff = min(2*backoff, retryMax)
	}
}

// pending lists pipeline's accepted feedback versions of type rows or labels
// that have no scoring yet, oldest first.
func (m *Monitor) pending(pipeline string) ([]storage.Dataset, error) {
	var out []storage.Dataset
	err := m.deps.Store.View(func(tx *storage.Tx) error {
		all, err := tx.Datasets(pipeline)
		if err != nil {
			return err
		}
		for _, d := range all {
			if d.Kind != storage.KindFeedback || (d.Feedback != storage.FeedbackRows && d.Feedback != storage.FeedbackLabels) {
				continue
			}
			if d.State != storage.DatasetAccepted && d.State != storage.DatasetReleased {
				continue
			}
			if _, err := tx.Scoring(d.ID); err == nil {
				continue
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b storage.Dataset) int { return a.Created.Compare(b.Created) })
	return out, err
}

func (m *Monitor) scoreBacklog(ctx context.Context, pipeline string) error {
	todo, err := m.pending(pipeline)
	if err != nil {
		return err
	}
	for _, d := range todo {
		spec, ok := m.spec(pipeline)
		if !ok {
			return nil
		}
		if err := m.scoreVersion(ctx, spec, d); err != nil {
			return err
		}
	}
	return nil
}
