package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// ErrNoData: labelled rows are held to the data's columns, and the pipeline has no admitted
// data version yet.
var ErrNoData = errors.New("no data version admitted yet")

// CommitJoined records labelled rows the monitor joined from labels version source as a
// feedback version of type joined: split like data, parts stored, manifest and report as for
// any version, lineage source -> new (storage.EdgeJoined), event dataset.accepted with
// feedback=joined. Idempotent per source (a second call for the same source returns the first
// version), since the monitor may crash after it and retry.
//
// columns are the feature columns in training order without the label (Feedback.Columns):
// they must be the newest data version's, label left out. Each row holds their values as
// text (JSONL pipelines too: numbers as written, strings unquoted); labels[i] is row i's.
// The rows are written out in the pipeline's format (the label put back in its column) and
// read by the same parser as a dropped file, so they are checked and split exactly like
// data; a row with a label outside data.validate.labels is left out and counted. If no row
// is usable, or a value breaks the data's types, the version is recorded quarantined (there
// is no folder to move: the reason is in the record and its report).
func (m *Manager) CommitJoined(ctx context.Context, pipeline, source string, columns []string, rows [][]string, labels []string) (storage.Dataset, error) {
	start := time.Now()
	var prev storage.Dataset
	found := false
	if err := m.opt.Store.View(func(tx *storage.Tx) error {
		src, err := tx.Dataset(source)
		if err != nil {
			return fmt.Errorf("joined feedback: source %s: %w", source, err)
		}
		if src.Pipeline != pipeline || src.Kind != storage.KindFeedback || src.Feedback != storage.FeedbackLabels {
			return fmt.Errorf("joined feedback: source %s is %s %s of pipeline %s, want late labels of %s: %w",
				source, src.Kind, src.Feedback, src.Pipeline, pipeline, storage.ErrInvalid)
		}
		prev, found, err = joinedFrom(tx, pipeline, source)
		return err
	}); err != nil {
		return storage.Dataset{}, err
	}
	if found {
		return prev, nil
	}
	spec := (*m.specs.Load())[pipeline]
	if spec == nil {
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: pipeline %s is not loaded: %w", source, pipeline, storage.ErrNotFound)
	}
	if spec.Data.Format != config.FormatCSV && spec.Data.Format != config.FormatJSONL {
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: pipeline %s has format %s, not csv or jsonl: %w", source, pipeline, spec.Data.Format, storage.ErrInvalid)
	}
	if len(rows) != len(labels) {
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: %d rows and %d labels: %w", source, len(rows), len(labels), storage.ErrInvalid)
	}
	schema, from, err := m.index.schema(m.opt.Store, pipeline, storage.KindData)
	if err != nil {
		return storage.Dataset{}, err
	}
	if schema == nil {
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: pipeline %s: %w", source, pipeline, ErrNoData)
	}
	label := spec.Data.Label
	var features []string
	for _, c := range schema {
		if c.Name != label {
			features = append(features, c.Name)
		}
	}
	if !slices.Equal(columns, features) {
		col, why := firstDifference(columns, features, false)
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: columns %s, want %s's features %s: column %q: %s: %w",
			source, strings.Join(columns, ","), from, strings.Join(features, ","), col, why, storage.ErrInvalid)
	}
	for i, r := range rows {
		if len(r) != len(columns) {
			return storage.Dataset{}, fmt.Errorf("joined feedback of %s: row %d has %d values for %d columns: %w", source, i+1, len(r), len(columns), storage.ErrInvalid)
		}
	}
	content := encodeRows(spec.Data.Format, schema, label, rows, labels)
	b := &batchRead{files: []ManifestFile{}, train: &partSink{ctx: ctx, store: m.opt.Store}, holdout: &partSink{ctx: ctx, store: m.opt.Store}}
	b.tab = newTabular(spec, string(storage.KindFeedback), schema, b.train, b.holdout)
	name := "joined from " + source
	if err := b.tab.parse(name, bytes.NewReader(content)); err != nil {
		b.train.abort()
		b.holdout.abort()
		return storage.Dataset{}, err
	}
	d, _, err := m.commitBatch(ctx, commitIn{spec: spec, pipeline: pipeline, kind: storage.KindFeedback, source: source, b: b, start: start})
	if err != nil {
		return storage.Dataset{}, fmt.Errorf("joined feedback of %s: %w", source, err)
	}
	m.index.admit(d)
	m.log.Info("joined feedback recorded", "dataset", d.ID, "source", source, "rows", d.Rows, "state", d.State)
	return d, nil
}

// joinedFrom finds the joined version already made from source.
func joinedFrom(tx *storage.Tx, pipeline, source string) (storage.Dataset, bool, error) {
	ds, err := tx.Datasets(pipeline)
	if err != nil {
		return storage.Dataset{}, false, err
	}
	for _, d := range ds {
		if d.Kind == storage.KindFeedback && d.Source == source {
			return d, true, nil
		}
	}
	return storage.Dataset{}, false, nil
}

// encodeRows writes rows in the pipeline's format, with the data's columns in the data's
// order and the label in its column: CSV with a header, quoted where needed; JSONL with
// numbers bare where the data's column is numeric and the value is a number, null for null
// spellings there, strings elsewhere.
func encodeRows(format string, schema []Column, label string, rows [][]string, labels []string) []byte {
	var b []byte
	if format == config.FormatCSV {
		for i, c := range schema {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCSVField(b, []byte(c.Name))
		}
		b = append(b, '\n')
	}
	for r, row := range rows {
		k := 0
		if format == config.FormatJSONL {
			b = append(b, '{')
		}
		for i, c := range schema {
			v := labels[r]
			if c.Name != label {
				v = row[k]
				k++
			}
			if i > 0 {
				b = append(b, ',')
			}
			if format == config.FormatCSV {
				b = appendCSVField(b, []byte(v))
				continue
			}
			key, _ := json.Marshal(c.Name)
			b = append(append(b, key...), ':')
			switch {
			case c.Type == TypeNumber && c.Name != label && isNumber([]byte(v)):
				b = append(b, strings.TrimSpace(v)...)
			case c.Type == TypeNumber && c.Name != label && isNull([]byte(v), false):
				b = append(b, "null"...)
			default:
				s, _ := json.Marshal(v)
				b = append(b, s...)
			}
		}
		if format == config.FormatJSONL {
			b = append(b, '}')
		}
		b = append(b, '\n')
	}
	return b
}
