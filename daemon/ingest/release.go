package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-edge/kiln/storage"
)

// Errors of Release, matched with errors.Is.
var (
	// ErrNotQuarantined: only a quarantined (or suspect) dataset can be released.
	ErrNotQuarantined = errors.New("neither quarantined nor suspect")
	// ErrUnread: the batch was rejected before it was read (a link, a special file, an empty
	// or oversized file), so there is no content to admit.
	ErrUnread = errors.New("rejected before it was read; nothing to release")
	// ErrUntyped: a feedback batch whose header was neither the data's columns nor
	// request_id,label holds nothing anyone could read back.
	ErrUntyped = errors.New("feedback of no known type (neither the data's columns nor request_id,label); fix it and drop it again")
)

// Release re-admits a quarantined dataset on a person's word: its state becomes released
// (training treats it as accepted), with a released edge from actor ("uid:1000") and an
// event. The quarantine folder is removed once the release is durable: the content is in
// the blob store. A batch rejected unread cannot be released.
//
// A suspect version (admitted, then flagged by a rollback: Dataset.Suspect) is released
// the same way: Suspect is cleared, so it enters training windows again; its state stays.
func (m *Manager) Release(ctx context.Context, id, actor string) (storage.Dataset, error) {
	var out storage.Dataset
	suspect := false
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		d, err := tx.Dataset(id)
		if err != nil {
			return err
		}
		if d.Suspect != "" && d.State != storage.DatasetQuarantined {
			was := d.Suspect
			d.Suspect, d.Released, suspect = "", actor, true
			if err := tx.PutDataset(d); err != nil {
				return err
			}
			if err := tx.Link(actor, id, storage.EdgeReleased); err != nil {
				return err
			}
			_, err = tx.Append(storage.Event{Actor: actor, Kind: "dataset.released", Pipeline: d.Pipeline,
				Refs: []string{id, was}, Details: map[string]string{"suspect": was, "kind": string(d.Kind), "feedback": d.Feedback}})
			if err != nil {
				return err
			}
			out, err = tx.Dataset(id)
			return err
		}
		if d.State != storage.DatasetQuarantined {
			return fmt.Errorf("dataset %s is %s: %w", id, d.State, ErrNotQuarantined)
		}
		if !hasContent(d) {
			return fmt.Errorf("dataset %s (%s): %w", id, d.Reason, ErrUnread)
		}
		if d.Kind == storage.KindFeedback && d.Feedback == "" {
			return fmt.Errorf("dataset %s (%s): %w: %w", id, d.Reason, ErrUntyped, storage.ErrInvalid)
		}
		d.State, d.Released = storage.DatasetReleased, actor
		if err := tx.PutDataset(d); err != nil {
			return err
		}
		if err := tx.Link(actor, id, storage.EdgeReleased); err != nil {
			return err
		}
		_, err = tx.Append(storage.Event{Actor: actor, Kind: "dataset.released", Pipeline: d.Pipeline,
			Refs: []string{id}, Details: map[string]string{"reason": d.Reason, "kind": string(d.Kind), "feedback": d.Feedback}})
		if err != nil {
			return err
		}
		out, err = tx.Dataset(id)
		return err
	})
	if err != nil || suspect {
		return out, err // a suspect version was admitted before: nothing more to do
	}
	m.index.admit(out)
	if meta, err := ReadMeta(m.opt.Store, out); err == nil {
		m.index.foldAdmitted(out, meta.Manifest)
	}
	qdir := filepath.Join(m.opt.QuarantineDir, out.ID)
	if err := os.RemoveAll(qdir); err != nil {
		m.log.Warn("ingest: remove released quarantine folder", "dir", qdir, "err", err)
	}
	m.log.Info("dataset released", "dataset", out.ID, "actor", actor)
	return out, nil
}
