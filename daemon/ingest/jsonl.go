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
	seen := 0
	for j, p := range pairs {
		i := j
		if i >= len(t.header) || t.header[i] != p.key {
			var ok bool
			if i, ok = t.colIdx[p.key]; !ok {
				t.fail("columns", p.key, "an unknown key", strings.Join(t.header, ","))
				continue
			}
		}
		seen++
		t.cell(i, p.val, p.str)
	}
	if seen < len(t.header) {
		// Missing keys are null values.
		missing := len(t.header) - seen
		t.cells += int64(missing)
		t.nulls += int64(missing)
		if t.labelIdx >= 0 {
			has := false
			for _, p := range pairs {
				if p.key == t.label {
					has = true
					break
				}
			}
			if !has {
				t.badLabel("label_missing", t.label, "no key", "a label on every row")
			}
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
