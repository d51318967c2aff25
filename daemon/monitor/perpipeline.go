package monitor

import "sync"

// perPipeline is what the monitor keeps in memory per pipeline between
// passes (probation's tally, the signals pass's reading of the log): a
// restarted kilnd starts without it and reads the log once more.
type perPipeline[T any] struct {
	mu sync.Mutex
	m  map[string]*T
}

// get returns pipeline's value, nil if it has none.
func (p *perPipeline[T]) get(pipeline string) *T {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[pipeline]
}

// getOrNew returns pipeline's value, a new zero one if it had none.
func (p *perPipeline[T]) getOrNew(pipeline string) *T {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.m[pipeline]
	if v == nil {
		if p.m == nil {
			p.m = map[string]*T{}
		}
		v = new(T)
		p.m[pipeline] = v
	}
	return v
}

// set replaces pipeline's value; nil drops it.
func (p *perPipeline[T]) set(pipeline string, v *T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v == nil {
		delete(p.m, pipeline)
		return
	}
	if p.m == nil {
		p.m = map[string]*T{}
	}
	p.m[pipeline] = v
}
