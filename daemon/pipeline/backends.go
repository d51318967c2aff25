package pipeline

import (
	"context"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// ServingPair is what a pipeline serves right now: the live model's backend
// and the warm standby's (nil when there is none, or when the spec says
// standby: stop and it is not running).
type ServingPair struct {
	Live, Standby Backend
}

// servingPair reads the loop's state; only the loop calls it.
func (c *controller) servingPair() ServingPair {
	var p ServingPair
	if c.live != nil && c.live.srv != nil {
		p.Live = c.live.srv
	}
	if c.standby != nil && c.standby.srv != nil {
		p.Standby = c.standby.srv
	}
	return p
}

// Serving returns pipeline's live and standby backends, as its controller
// sees them now. The monitor scores feedback through them; a backend may be
// stopped right after (a promotion retires the standby), which the caller
// sees as a failed request and retries.
func (m *Manager) Serving(ctx context.Context, pipeline string) (ServingPair, error) {
	c, err := m.controller(pipeline)
	if err != nil {
		return ServingPair{}, err
	}
	reply := make(chan ServingPair, 1)
	if err := c.do(ctx, command{kind: cmdBackends, serving: reply}); err != nil {
		return ServingPair{}, err
	}
	return <-reply, nil
}

// SpecWindow is the data versions a run on the spec's window would train
// on now (the monitor's retrain adds labelled feedback to it).
func SpecWindow(all []storage.Dataset, w config.Window, now time.Time) []storage.Dataset {
	return window(all, w, now)
}
