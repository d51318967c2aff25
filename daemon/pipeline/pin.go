package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/kiln-edge/kiln/storage"
)

// pin holds the pipeline on model, making it live first when it is not
// (a person's choice: a rolled_back model may be pinned). Automation may not
// pin: a pin is how people turn automation off.
func (c *controller) pin(ctx context.Context, model string, req Request) error {
	if req.Automatic() {
		return fmt.Errorf("%w: only a person pins %s (a pin turns automation off)", ErrConflict, c.name)
	}
	if pipelineOf(model) != c.name {
		return fmt.Errorf("%w: model %s is not of pipeline %s", ErrConflict, model, c.name)
	}
	if c.live == nil || c.live.model != model {
		m, err := c.modelRecord(model)
		if err != nil {
			return err
		}
		srv, err := c.ensureServing(ctx, c.currentSpec(), m)
		if err != nil {
			return err
		}
		m.Reason = "pinned by " + req.Actor
		if err := c.promote(ctx, m, srv, switchOp{req: req, details: map[string]string{"pin": "true"}}); err != nil {
			return err
		}
	}
	if err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutPin(storage.Pin{Pipeline: c.name, Model: model, Actor: req.Actor}); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: req.Actor, Kind: "pipeline.pinned", Pipeline: c.name, Refs: []string{model}, Details: req.details(nil)})
		return err
	}); err != nil {
		return err
	}
	c.pinned = model
	return nil
}

func (c *controller) unpin(ctx context.Context, req Request) error {
	if req.Automatic() {
		return fmt.Errorf("%w: only a person unpins %s", ErrConflict, c.name)
	}
	err := c.deps.Store.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.DeletePin(c.name); err != nil {
			return err
		}
		_, err := tx.Append(storage.Event{Actor: req.Actor, Kind: "pipeline.unpinned", Pipeline: c.name, Refs: []string{c.pinned}, Details: req.details(nil)})
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s is not pinned", ErrConflict, c.name)
	}
	if err != nil {
		return err
	}
	c.pinned = ""
	return nil
}
