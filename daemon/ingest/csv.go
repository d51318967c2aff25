package ingest

import "bytes"

// splitCSV splits one record on commas, unquoting quoted fields (RFC 4180: "" is a quote).
// The fields alias rec or t.scratch and live until the next call.
func (t *tabular) splitCSV(rec []byte) ([][]byte, bool) {
	fields := t.fields[:0]
	t.quoted = bytes.IndexByte(rec, '"') >= 0
	if !t.quoted {
		for {
			i := bytes.IndexByte(rec, ',')
			if i < 0 {
				fields = append(fields, rec)
				break
			}
			fields = append(fields, rec[:i])
			rec = rec[i+1:]
		}
		t.fields = fields
		return fields, true
	}
	t.scratch = t.scratch[:0]
	type span struct{ a, b int }
	var spans []span
	for {
		if len(rec) > 0 && rec[0] == '"' {
			a := len(t.scratch)
			rec = rec[1:]
			for {
				i := bytes.IndexByte(rec, '"')
				if i < 0 {
					return nil, false
				}
				t.scratch = append(t.scratch, rec[:i]...)
				rec = rec[i+1:]
				if len(rec) > 0 && rec[0] == '"' {
					t.scratch = append(t.scratch, '"')
					rec = rec[1:]
					continue
				}
				break
			}
			spans = append(spans, span{a, len(t.scratch)})
			if len(rec) == 0 {
				break
			}
			if rec[0] != ',' {
				return nil, false
			}
			rec = rec[1:]
			continue
		}
		i := bytes.IndexByte(rec, ',')
		end := i
		if i < 0 {
			end = len(rec)
		}
		if bytes.IndexByte(rec[:end], '"') >= 0 {
			return nil, false
		}
		a := len(t.scratch)
		t.scratch = append(t.scratch, rec[:end]...)
		spans = append(spans, span{a, len(t.scratch)})
		if i < 0 {
			break
		}
		rec = rec[i+1:]
	}
	for _, s := range spans {
		fields = append(fields, t.scratch[s.a:s.b])
	}
	t.fields = fields
	return fields, true
}

// plainRow checks a record without quotes and with the header's field count in one pass over
// it: a field that is a plain number (most cells of a numeric CSV) is found and checked by the
// same scan, the rest go through cell as splitCSV's fields do. It reports false, having done
// nothing, for any other record.
func (t *tabular) plainRow(rec []byte) bool {
	if bytes.IndexByte(rec, '"') >= 0 || bytes.Count(rec, []byte{','})+1 != len(t.cols) {
		return false
	}
	t.quoted = false
	for i := range t.cols {
		n := numberLen(rec)
		if n > 0 && (n == len(rec) || rec[n] == ',') {
			t.numberCell(i, rec[:n])
		} else {
			if n = bytes.IndexByte(rec, ','); n < 0 {
				n = len(rec)
			}
			t.cell(i, rec[:n], false)
		}
		rec = rec[min(n+1, len(rec)):]
	}
	return true
}

// numberCell is cell for a value numberLen accepted whole, which is never null: the common
// case (a numeric column, neither the label nor ranged) without cell's other branches.
func (t *tabular) numberCell(i int, v []byte) {
	c := &t.cols[i]
	if i == t.labelIdx || c.kind == colString || c.ranged {
		t.cell(i, v, false)
		return
	}
	t.cells++
	c.values++
	if c.kind == colUnknown {
		c.kind, c.inferred = colNumber, true
	}
	c.offer(v)
}
