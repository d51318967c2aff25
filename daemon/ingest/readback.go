package ingest

import (
	"bufio"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// RowKey is the stable hash of one row's feature values (label excluded, fields trimmed as the
// split does), with no seed: equal rows in data and feedback get equal keys, so the monitor can
// leave out of a model's score the rows it trained on.
//
// fields are the feature values in training order, without the label. Each is trimmed of
// spaces; a number is taken by value (1, 1.0 and 1e0 are one key, so a row logged through
// OIP v2's FP64 matches its CSV spelling); every null spelling (empty, NA, NaN, null, ...) is
// one value. Fields are length-prefixed, so no separator inside a value can make two rows
// collide.
func RowKey(fields []string) uint64 {
	var stack [256]byte
	b := stack[:0]
	for _, f := range fields {
		v := strings.TrimSpace(f)
		switch {
		case isNull([]byte(v), false):
			b = append(b, 0) // a length no value has (values get len+1)
			continue
		case isNumber([]byte(v)):
			if x, err := strconv.ParseFloat(v, 64); err == nil {
				v = strconv.FormatFloat(x, 'g', -1, 64)
			}
		}
		b = binary.AppendUvarint(b, uint64(len(v))+1)
		b = append(b, v...)
	}
	return xxh64(b, 0)
}

// Feedback is a feedback version read back from the store.
type Feedback struct {
	Type    string     // storage.FeedbackRows or FeedbackLabels (or Joined)
	Columns []string   // rows: feature columns in training order, without the label
	Rows    [][]string // rows: feature values
	Labels  []string   // rows and labels: the label of each row / each id
	IDs     []string   // labels: request ids ("<request-id>" or "<request-id>:<row>")
}

// ReadFeedback reads an accepted feedback version's rows (train and holdout parts together, in
// file order is not needed; a stable order is) or its labels.
//
// Rows come train part first, then holdout, each in its stored order. label is the label
// column ("" takes the one the version was ingested with). A quarantined version is refused.
// An images version (labelled images, type rows) has no rows to read here: its images are
// its Files, each with its Label.
func ReadFeedback(store BlobOpener, d storage.Dataset, label string) (*Feedback, error) {
	if d.Kind != storage.KindFeedback {
		return nil, fmt.Errorf("dataset %s is %s, not feedback: %w", d.ID, d.Kind, storage.ErrInvalid)
	}
	if !admitted(d) {
		return nil, fmt.Errorf("feedback %s is %s (%s): %w", d.ID, d.State, d.Reason, storage.ErrInvalid)
	}
	fb := &Feedback{Type: d.Feedback}
	switch d.Feedback {
	case storage.FeedbackLabels:
		for _, f := range d.Files {
			if f.Path == LabelsName {
				return fb, readLabels(store, d.ID, f.Blob, fb)
			}
		}
		return fb, nil // nothing usable (a released version that had no usable row)
	case storage.FeedbackRows, storage.FeedbackJoined:
	default:
		return nil, fmt.Errorf("feedback %s has type %q, not rows, labels or joined: %w", d.ID, d.Feedback, storage.ErrInvalid)
	}
	meta, err := ReadMeta(store, d)
	if err != nil {
		return nil, err
	}
	if meta.Manifest == nil {
		return nil, fmt.Errorf("feedback %s has no manifest: %w", d.ID, storage.ErrInvalid)
	}
	if label == "" {
		label = meta.Manifest.Label
	}
	fb.Columns = featureColumns(meta.Manifest.Schema, label)
	for _, ref := range []*storage.BlobRef{d.Train, d.Holdout} {
		if ref == nil {
			continue
		}
		err := eachRow(store, d.ID, *ref, meta.Manifest.Format, fb.Columns, label, func(features []string, l string) {
			fb.Rows = append(fb.Rows, features)
			fb.Labels = append(fb.Labels, l)
		})
		if err != nil {
			return nil, err
		}
	}
	return fb, nil
}

// TrainRowKeys returns RowKey of every row of the train parts of the given data versions
// (what a model trained on), reading the blobs.
//
// Each version's columns are taken in its own manifest's schema order (the pipeline's order:
// CSV headers are held to it and JSONL objects are read into it). Memory grows with the
// distinct rows (a map entry each, about 40 bytes).
func TrainRowKeys(store BlobOpener, datasets []storage.Dataset, label string) (map[uint64]struct{}, error) {
	out := map[uint64]struct{}{}
	for _, d := range datasets {
		if d.Train == nil {
			continue
		}
		meta, err := ReadMeta(store, d)
		if err != nil {
			return nil, err
		}
		if meta.Manifest == nil {
			continue
		}
		l := label
		if l == "" {
			l = meta.Manifest.Label
		}
		cols := featureColumns(meta.Manifest.Schema, l)
		err = eachRow(store, d.ID, *d.Train, meta.Manifest.Format, cols, l, func(features []string, _ string) {
			out[RowKey(features)] = struct{}{}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func featureColumns(schema []Column, label string) []string {
	var out []string
	for _, c := range schema {
		if c.Name != label {
			out = append(out, c.Name)
		}
	}
	return out
}

// eachRow reads a part (CSV with its header, or JSONL) and hands each row's values of
// columns, and its label, to fn. Rows ingest would have refused (a released version may
// hold some) are skipped: a CSV record of the wrong width, a line that is not an object.
func eachRow(store BlobOpener, id string, ref storage.BlobRef, format string, columns []string, label string, fn func(features []string, label string)) error {
	f, err := store.OpenBlob(ref)
	if err != nil {
		return fmt.Errorf("dataset %s part %s: %w", id, ref.Digest, err)
	}
	defer func() { _ = f.Close() }() // read-only
	where := func(line int, err error) error {
		return fmt.Errorf("dataset %s part %s line %d: %w", id, ref.Digest, line, err)
	}
	switch format {
	case config.FormatCSV:
		r := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
		r.FieldsPerRecord, r.LazyQuotes = -1, true
		header, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return where(1, err)
		}
		idx := map[string]int{}
		for i, h := range header {
			h = strings.TrimSpace(h)
			if i == 0 {
				h = strings.TrimPrefix(h, "\uFEFF")
			}
			idx[h] = i
		}
		pos := make([]int, len(columns))
		for i, c := range columns {
			p, ok := idx[c]
			if !ok {
				return where(1, fmt.Errorf("no column %q in the header %s", c, strings.Join(header, ",")))
			}
			pos[i] = p
		}
		li, hasLabel := idx[label]
		for {
			rec, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				line, _ := r.FieldPos(0)
				return where(line, err)
			}
			if len(rec) != len(header) {
				continue
			}
			features := make([]string, len(pos))
			for i, p := range pos {
				features[i] = rec[p]
			}
			l := ""
			if hasLabel {
				l = rec[li]
			}
			fn(features, l)
		}
	case config.FormatJSONL:
		br := bufio.NewReaderSize(f, MaxLineLength+2)
		var pairs []jsonPair
		for line := 1; ; line++ {
			b, err := br.ReadSlice('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return where(line, err)
			}
			if obj := trimEOL(b); len(obj) > 0 {
				var ok bool
				if pairs, ok = scanObject(obj, pairs[:0]); ok {
					vals := make(map[string]string, len(pairs))
					for _, p := range pairs {
						v := string(p.val)
						if !p.str && v == "null" {
							v = ""
						}
						vals[p.key] = v
					}
					features := make([]string, len(columns))
					for i, c := range columns {
						features[i] = vals[c]
					}
					fn(features, vals[label])
				}
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
		}
	}
	return fmt.Errorf("dataset %s: format %q has no rows: %w", id, format, storage.ErrInvalid)
}

// readLabels reads a labels part (request_id,label, as ingest normalised it).
func readLabels(store BlobOpener, id string, ref storage.BlobRef, fb *Feedback) error {
	f, err := store.OpenBlob(ref)
	if err != nil {
		return fmt.Errorf("dataset %s labels: %w", id, err)
	}
	defer func() { _ = f.Close() }() // read-only
	r := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
	r.FieldsPerRecord = 2
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("dataset %s labels line 1: %w", id, err)
	}
	if header[0] != labelsHeaderCSV[0] || header[1] != labelsHeaderCSV[1] {
		return fmt.Errorf("dataset %s labels line 1: header %s, want request_id,label: %w", id, strings.Join(header, ","), storage.ErrInvalid)
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dataset %s labels: %w", id, err)
		}
		fb.IDs = append(fb.IDs, rec[0])
		fb.Labels = append(fb.Labels, rec[1])
	}
}
