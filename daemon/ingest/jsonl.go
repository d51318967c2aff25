package ingest

import (
	"bytes"
	"encoding/json"
	"strings"
)

// jsonPair is one key and raw value of a flat JSON object.
type jsonPair struct {
	key string
	val []byte
	str bool // the value is a JSON string (val is unquoted)
}

func (t *tabular) jsonRow(pairs []jsonPair) {
	// seen marks the columns this object set, so a missing key counts as a null of its own
	// column (max_null_fraction holds per column) and a repeated key is not a second cell.
	if cap(t.seen) < len(t.header) {
		t.seen = make([]bool, len(t.header))
		t.jvals = make([][]byte, len(t.header))
		t.jstr = make([]bool, len(t.header))
	}
	seen, vals, str := t.seen[:len(t.header)], t.jvals[:len(t.header)], t.jstr[:len(t.header)]
	clear(seen)
	clear(vals)
	for j, p := range pairs {
		i := j
		if i >= len(t.header) || t.header[i] != p.key {
			var ok bool
			if i, ok = t.colIdx[p.key]; !ok {
				// "the batch's columns: " keeps the reason whole when they are one empty name.
				t.fail("columns", p.key, "an unknown key", "the batch's columns: "+strings.Join(t.header, ","))
				continue
			}
		}
		if seen[i] {
			t.fail("columns", p.key, "the key twice in one object", "each key once")
			continue
		}
		seen[i] = true
		vals[i], str[i] = p.val, p.str
		if vals[i] == nil {
			vals[i] = []byte{} // present, empty: not the same as a missing key
		}
		t.cell(i, p.val, p.str)
	}
	t.dupKey(vals, str)
	for i, ok := range seen {
		if ok {
			continue
		}
		// A missing key is a null value.
		t.cells++
		t.nulls++
		t.cols[i].nulls++
		if i == t.labelIdx {
			t.badLabel("label_missing", t.label, "no key", "a label on every row")
		}
	}
}

// scanObject reads a flat JSON object ({"k": v, ...}) without building a map. Nested objects
// and arrays are kept as raw text values. It returns false on any syntax error.
func scanObject(b []byte, pairs []jsonPair) ([]jsonPair, bool) {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, false
	}
	if !json.Valid(b) {
		return nil, false
	}
	i := 1
	skipWS := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
			i++
		}
	}
	readString := func() ([]byte, bool) {
		start := i
		i++
		esc := false
		for i < len(b) {
			switch b[i] {
			case '\\':
				esc = true
				i += 2
				continue
			case '"':
				i++
				raw := b[start:i]
				if !esc {
					return raw[1 : len(raw)-1], true
				}
				var s string
				if json.Unmarshal(raw, &s) != nil {
					return nil, false
				}
				return []byte(s), true
			}
			i++
		}
		return nil, false
	}
	skipWS()
	if i < len(b) && b[i] == '}' {
		return pairs, true
	}
	for i < len(b) {
		skipWS()
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		k, ok := readString()
		if !ok {
			return nil, false
		}
		skipWS()
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i++
		skipWS()
		if i >= len(b) {
			return nil, false
		}
		p := jsonPair{key: string(k)}
		switch b[i] {
		case '"':
			v, ok := readString()
			if !ok {
				return nil, false
			}
			p.val, p.str = v, true
		case '{', '[':
			start, depth, inStr := i, 0, false
			for ; i < len(b); i++ {
				c := b[i]
				if inStr {
					switch c {
					case '\\':
						i++
					case '"':
						inStr = false
					}
					continue
				}
				if c == '"' {
					inStr = true
				} else if c == '{' || c == '[' {
					depth++
				} else if c == '}' || c == ']' {
					depth--
					if depth == 0 {
						i++
						break
					}
				}
			}
			p.val, p.str = b[start:i], true
		default:
			start := i
			for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' {
				i++
			}
			p.val = b[start:i]
			if string(p.val) == "true" || string(p.val) == "false" {
				p.str = true
			}
		}
		pairs = append(pairs, p)
		skipWS()
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			return pairs, true
		}
		return nil, false
	}
	return nil, false
}
