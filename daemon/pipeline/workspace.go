package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/storage"
)

// A run's workspace: the channel folders a trainer reads, in the SageMaker
// layout, made of hard links to the blobs of its window's versions.

// channelContentType is how SageMaker names a format's channel data.
func channelContentType(format string) string {
	switch format {
	case config.FormatJSONL:
		return contract.ContentTypeJSONLines
	case config.FormatImages:
		return contract.ContentTypeImage
	}
	return contract.ContentTypeCSV
}

// prepareWorkspace links each window dataset's train part (and, for a
// validation channel, its holdout part) into the channel folders: hard
// links, so training never copies the data. A tabular part is one file named
// after its version with its format's extension (d3.csv, d3.jsonl); an images
// part is its images in the SageMaker (and torchvision ImageFolder) layout,
// <channel>/<label>/<version>-<name>.
func (c *controller) prepareWorkspace(run storage.Run, job TrainJob) error {
	if err := os.RemoveAll(job.Workspace); err != nil { // a half-made one from a crash
		return err
	}
	for ch, dir := range job.Channels {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, id := range run.Datasets {
			d, err := c.dataset(id)
			if err != nil {
				return err
			}
			holdout := ch == config.ChannelValidation
			// A feedback version's holdout rows are the gate's alone:
			// the trainer never sees them, not even to validate.
			if holdout && d.Kind == storage.KindFeedback {
				continue
			}
			if err := c.linkPart(d, holdout, dir); err != nil {
				return fmt.Errorf("channel %s: %w", ch, err)
			}
		}
	}
	return nil
}

// linkPart links d's train (or holdout) part into dir.
func (c *controller) linkPart(d storage.Dataset, holdout bool, dir string) error {
	prefix := strings.ReplaceAll(d.ID, "/", "-")
	if d.Format == storage.FormatImages {
		made := map[string]bool{}
		for _, f := range d.Files {
			if f.Label == "" || f.Holdout != holdout {
				continue // labels.csv, or the other part
			}
			if !made[f.Label] {
				// Ingest admits only labels that are one plain path element;
				// a record saying otherwise must not write outside dir.
				if f.Label == "." || f.Label == ".." || strings.ContainsAny(f.Label, "/\x00") {
					return fmt.Errorf("version %s: label %q is not a folder name", d.ID, f.Label)
				}
				if err := os.MkdirAll(filepath.Join(dir, f.Label), 0o755); err != nil {
					return err
				}
				made[f.Label] = true
			}
			// The version prefix keeps equal names from different batches
			// apart; the path's folders are flattened into the name.
			name := prefix + "-" + strings.ReplaceAll(f.Path, "/", "-")
			if err := c.deps.Store.LinkBlob(f.Blob, filepath.Join(dir, f.Label, name)); err != nil {
				return err
			}
		}
		return nil
	}
	part := d.Train
	if holdout {
		part = d.Holdout
	}
	if part == nil {
		return nil
	}
	ext := ".csv"
	if d.Format == config.FormatJSONL {
		ext = ".jsonl"
	}
	return c.deps.Store.LinkBlob(*part, filepath.Join(dir, prefix+ext))
}

func (c *controller) dataset(id string) (d storage.Dataset, err error) {
	err = c.deps.Store.View(func(tx *storage.Tx) error { d, err = tx.Dataset(id); return err })
	return d, err
}
