package storage

import (
	"bytes"
	"io"
	"path"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// fillDatasetFormats is migration 8: Dataset.Format for the versions made before it was
// recorded. Those are csv, jsonl or files (images came with schema 8). A version with a part
// is csv or jsonl, told apart by the part's first byte ('{' is a JSON object: jsonl), or by
// its files' extensions when the part's blob is gone; a late-labels version by its files'
// extensions; any other version holding files is files. A version rejected before it was
// read holds nothing, and keeps no format.
func fillDatasetFormats(s *Store, btx *bolt.Tx) error {
	b := btx.Bucket(bucketDatasets)
	type put struct{ k, v []byte }
	var puts []put
	err := b.ForEach(func(k, v []byte) error {
		var d Dataset
		if err := decodeRecord(v, &d); err != nil {
			return err
		}
		if d.Format != "" {
			return nil
		}
		if d.Format = s.guessFormat(&d); d.Format == "" {
			return nil
		}
		enc, err := encodeRecord(&d)
		if err != nil {
			return err
		}
		puts = append(puts, put{bytes.Clone(k), enc})
		return nil
	})
	if err != nil {
		return err
	}
	// Written after the walk: bbolt does not allow changing a bucket while iterating it.
	for _, p := range puts {
		if err := b.Put(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) guessFormat(d *Dataset) string {
	part := d.Train
	if part == nil {
		part = d.Holdout
	}
	if part != nil {
		if f := s.sniffPart(*part); f != "" {
			return f
		}
		return formatByExtension(d.Files)
	}
	dropped := false
	for _, f := range d.Files {
		// Names starting with a dot are kilnd's own entries (the meta blob, the labels part):
		// never dropped, since ingest ignores dot names.
		if !strings.HasPrefix(path.Base(f.Path), ".") {
			dropped = true
		}
	}
	switch {
	case !dropped:
		return ""
	case d.Feedback == FeedbackLabels:
		return formatByExtension(d.Files)
	}
	return FormatFiles
}

// sniffPart reads a part's first bytes: a JSONL part starts with '{', a CSV part with its
// header. "" when the blob cannot be read.
func (s *Store) sniffPart(ref BlobRef) string {
	f, err := s.OpenBlob(ref)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }() // read-only
	buf := make([]byte, 4096)
	n, err := io.ReadFull(f, buf)
	if n == 0 && err != nil {
		return ""
	}
	head := bytes.TrimLeft(bytes.TrimPrefix(buf[:n], []byte("\uFEFF")), " \t\r\n")
	if len(head) > 0 && head[0] == '{' {
		return "jsonl"
	}
	return "csv"
}

// formatByExtension: jsonl when a file is named .jsonl or .ndjson, else csv.
func formatByExtension(files []FileRef) string {
	for _, f := range files {
		switch strings.ToLower(path.Ext(f.Path)) {
		case ".jsonl", ".ndjson":
			return "jsonl"
		}
	}
	return "csv"
}
