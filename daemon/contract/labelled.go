package contract

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Labelled is labelled rows split into the feature columns, in training
// order (the data's column order without the label), and the labels: a
// holdout the evaluator scores a candidate on, or feedback the monitor
// scores the live model on. Rows[i] is labelled Labels[i]. For an images
// pipeline it holds Images instead of Rows: Images[i] is labelled
// Labels[i]. One Labelled holds rows or images, never both.
type Labelled struct {
	Columns []string
	Rows    [][]string
	Images  [][]byte
	Labels  []string
}

// Len is the number of rows or images.
func (l *Labelled) Len() int { return max(len(l.Rows), len(l.Images)) }

// AddImage appends one labelled image: the bytes of a PNG or JPEG file.
func (l *Labelled) AddImage(label string, data []byte) {
	l.Images = append(l.Images, data)
	l.Labels = append(l.Labels, label)
}

// Inputs is what to send the model for these rows or images, in the
// pipeline's data format (data.format: csv, jsonl or images).
func (l *Labelled) Inputs(format string) Inputs {
	if format == FormatImages {
		return Inputs{Format: format, Images: l.Images}
	}
	return Inputs{Format: format, Columns: l.Columns, Rows: l.Rows}
}

// AddCSV appends the rows of a CSV part (header first, as ingest stores
// parts) whose label column is label. Every part must have the same columns
// in the same order. name says where the rows come from in errors.
func (l *Labelled) AddCSV(r io.Reader, label, name string) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: header: %w", name, err)
	}
	if len(header) > 0 {
		header[0] = trimBOM(header[0])
	}
	li := slices.Index(header, label)
	if li < 0 {
		return fmt.Errorf("%s: no label column %q in header %v", name, label, header)
	}
	cols := slices.Delete(slices.Clone(header), li, li+1)
	if l.Columns == nil {
		l.Columns = cols
	} else if !slices.Equal(l.Columns, cols) {
		return fmt.Errorf("%s: columns %v differ from the earlier parts' %v", name, cols, l.Columns)
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err) // a csv.ParseError names the line
		}
		l.Labels = append(l.Labels, rec[li])
		l.Rows = append(l.Rows, slices.Delete(rec, li, li+1))
	}
}

func trimBOM(s string) string {
	if len(s) >= 3 && s[:3] == "\ufeff" {
		return s[3:]
	}
	return s
}

// maxJSONLLine bounds one JSONL line; a labelled row is far smaller, and a
// file without newlines must not be read into memory whole.
const maxJSONLLine = 4 << 20

// AddJSONL appends the rows of a JSON Lines part: one flat object a line,
// holding the label under the key label. The columns are the first line's
// keys in the order that line writes them (JSON objects are unordered, but
// writers keep the data's order in practice); every later line, and every
// later part, must have the same set of keys in any order. Values become
// strings the way DecodeRequest writes them: numbers in 'g' format,
// booleans as true/false, null as the empty string (a missing value, as an
// empty CSV field). Blank lines are skipped.
func (l *Labelled) AddJSONL(r io.Reader, label, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxJSONLLine)
	var index map[string]int // column -> position in l.Columns
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(text) == 0 {
			continue
		}
		keys, vals, err := flatObject(text)
		if err != nil {
			return fmt.Errorf("%s line %d: %w", name, line, err)
		}
		li := slices.Index(keys, label)
		if li < 0 {
			return fmt.Errorf("%s line %d: no label key %q in %v", name, line, label, keys)
		}
		if l.Columns == nil {
			l.Columns = slices.Delete(slices.Clone(keys), li, li+1)
		}
		if index == nil {
			index = make(map[string]int, len(l.Columns))
			for i, c := range l.Columns {
				index[c] = i
			}
		}
		row := make([]string, len(l.Columns))
		seen := 0
		for i, k := range keys {
			if i == li {
				continue
			}
			j, ok := index[k]
			if !ok {
				return fmt.Errorf("%s line %d: key %q is not one of the columns %v", name, line, k, l.Columns)
			}
			row[j] = vals[i]
			seen++
		}
		if seen != len(l.Columns) {
			for _, c := range l.Columns {
				if !slices.Contains(keys, c) {
					return fmt.Errorf("%s line %d: no key %q (columns %v)", name, line, c, l.Columns)
				}
			}
		}
		l.Rows = append(l.Rows, row)
		l.Labels = append(l.Labels, vals[li])
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s: a line is longer than %d bytes", name, maxJSONLLine)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// flatObject reads one JSON object whose values are all scalars, keeping
// its keys in the order written. A key written twice is an error: which
// value was meant is unknowable.
func flatObject(text []byte) (keys, vals []string, err error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key, ok := tok.(string)
		if !ok { // the decoder rejects a non-string key first; kept for safety
			return nil, nil, errors.New("not a JSON object")
		}
		if slices.Contains(keys, key) {
			return nil, nil, fmt.Errorf("key %q twice", key)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", key, err)
		}
		var v string
		switch t := tok.(type) {
		case json.Delim:
			return nil, nil, fmt.Errorf("key %q: want a flat value, got an %s", key, map[json.Delim]string{'{': "object", '[': "array"}[t])
		case json.Number:
			if v, err = formatNumber(t); err != nil {
				return nil, nil, fmt.Errorf("key %q: %w", key, err)
			}
		case string:
			v = t
		case bool:
			v = strconv.FormatBool(t)
		case nil:
			v = ""
		}
		keys = append(keys, key)
		vals = append(vals, v)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("more than one JSON value on the line")
	}
	return keys, vals, nil
}
