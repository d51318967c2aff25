package ingest

import "bytes"

// splitCSV splits one record on commas, unquoting quoted fields (RFC 4180: "" is a quote).
// The fields alias rec or t.scratch and live until the next call.
func (t *tabular) splitCSV(rec []byte) ([][]byte, bool) {
	fields := t.fields[:0]
	if bytes.IndexByte(rec, '"') < 0 {
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
