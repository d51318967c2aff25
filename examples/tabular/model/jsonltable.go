package model

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// maxJSONLLine bounds one JSON Lines record, so that a file without
// newlines is refused instead of read into memory whole.
const maxJSONLLine = 4 << 20

// ReadJSONLTable reads JSON Lines: one flat JSON object a line, label naming
// the label key. The columns are the first object's keys in the order that
// line writes them (encoding/json maps would lose it; it is the feature
// order the model, and so /invocations CSV rows, follow). Every later object
// must hold the same keys, in any order. Values are read as text, as a CSV
// field would be: numbers as written, strings as they are, true/false, and
// null as the empty string (a missing value, refused like an empty CSV
// field). Blank lines are skipped.
func ReadJSONLTable(r io.Reader, label string) (*Table, error) {
	t := &Table{Label: label}
	if err := t.readJSONL(r, true); err != nil {
		return nil, err
	}
	if t.Features == nil {
		return nil, errors.New("no JSON object in the file")
	}
	return t, nil
}

// AppendJSONL reads more JSON Lines with the same keys (in any order) into t.
func (t *Table) AppendJSONL(r io.Reader) error { return t.readJSONL(r, false) }

func (t *Table) readJSONL(r io.Reader, first bool) error {
	var header []string      // the columns, label included, in row order
	var index map[string]int // key -> position in header
	li := -1
	if !first {
		header = append(slices.Clone(t.Features), t.Label)
		li = len(t.Features)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxJSONLLine)
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
			return fmt.Errorf("line %d: %w", line, err)
		}
		if header == nil {
			if li = slices.Index(keys, t.Label); li < 0 {
				return fmt.Errorf("line %d: label key %q not in the keys %s", line, t.Label, strings.Join(keys, ","))
			}
			header = keys
			t.Features = slices.Delete(slices.Clone(keys), li, li+1)
		}
		if index == nil {
			index = make(map[string]int, len(header))
			for i, k := range header {
				index[k] = i
			}
		}
		rec := make([]string, len(header))
		for i, k := range keys {
			j, ok := index[k]
			if !ok {
				return fmt.Errorf("line %d: key %q is not one of the columns %s", line, k, strings.Join(header, ","))
			}
			rec[j] = vals[i]
		}
		if len(keys) != len(header) { // no key twice (flatObject), none unknown: so one is missing
			for _, k := range header {
				if !slices.Contains(keys, k) {
					return fmt.Errorf("line %d: no key %q (columns %s)", line, k, strings.Join(header, ","))
				}
			}
		}
		if err := t.addRecord(header, li, rec, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("a line is longer than %d bytes", maxJSONLLine)
		}
		return err
	}
	return nil
}

// flatObject reads one JSON object whose values are all scalars, keeping
// its keys in the order written, values as text. A key written twice is an
// error: which value was meant is unknowable.
func flatObject(text []byte) (keys, vals []string, err error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("not a JSON object: %w", err)
		}
		key, _ := tok.(string) // the decoder refuses a key that is not a string
		if slices.Contains(keys, key) {
			return nil, nil, fmt.Errorf("key %q twice", key)
		}
		if tok, err = dec.Token(); err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", key, err)
		}
		var v string
		switch x := tok.(type) {
		case json.Delim:
			kind := "array"
			if x == '{' {
				kind = "object"
			}
			return nil, nil, fmt.Errorf("key %q: want a number, string, boolean or null, got an %s", key, kind)
		case json.Number:
			v = x.String()
		case string:
			v = x
		case bool:
			v = fmt.Sprint(x)
		case nil:
			v = ""
		}
		keys, vals = append(keys, key), append(vals, v)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("more than one JSON value on the line")
	}
	return keys, vals, nil
}

// JSONLColumns is the keys of the first object of JSON Lines, in the order
// written: the columns ReadJSONLTable would take.
func JSONLColumns(r io.Reader) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxJSONLLine)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(text) == 0 {
			continue
		}
		keys, _, err := flatObject(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("line %d: an object without keys", line)
		}
		return keys, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no JSON object in the file")
}
