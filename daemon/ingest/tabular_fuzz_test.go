package ingest

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// fuzzRules are the validation rules the fuzz targets hold batches to: every rule at once,
// so each has a chance to misbehave.
const fuzzRules = "validate: {max_null_fraction: 0.5, max_duplicate_fraction: 0.5, labels: [a, b, \"c,d\"], ranges: {x: {min: -10, max: 10}}}\n"

// checkViolations: every violation is one line that names a rule, what was observed and what
// is allowed, and points into the batch's files.
func checkViolations(t *testing.T, tab *tabular, lines int64) {
	t.Helper()
	for _, list := range [][]*Violation{tab.violations, tab.leftOut} {
		for _, v := range list {
			s := v.String()
			if strings.ContainsAny(s, "\r\n") || v.Rule == "" || v.Allowed == "" || v.Count < 1 {
				t.Fatalf("violation %q (%+v): want one line with rule, allowed and count", s, *v)
			}
			if v.Line < 0 || v.Line > lines {
				t.Fatalf("violation %q at line %d of a %d-line file", s, v.Line, lines)
			}
		}
	}
}

// FuzzTabular: CSV and JSONL batches of any bytes. Parsing never fails on the data itself
// (only read errors are errors), each row lands in exactly one part, the fractions stay
// fractions, the same bytes give the same result, and an accepted CSV batch's parts read
// back as accepted batches with the same rows.
func FuzzTabular(f *testing.F) {
	for _, s := range []string{
		"x,y,label\n1,2,a\n3,,b\nNaN,inf,a\n1,2,a\n",
		"x,label\n1,\"a\nb\"\n2,\"c,d\"\n\"3\",a\n",
		"\uFEFFx,label\r\n1,a\r\n-11,b\r\n",
		"x,label\n1,a\n2\n\"unterminated,a\n",
		"x,x,label\n1,1,a\n",
		",label\n1,a\n",
		"\"a\nb\",label\n1,a\n",
		`{"x": 1, "label": "a"}` + "\n" + `{"label": "b", "x": 2.5}` + "\n" + `{"x": null}` + "\n",
		`{"x": 1, "label": "a", "y": {"n": [1, 2]}}` + "\n" + `{"x": 1, "x": 2, "label": "a"}` + "\n",
		`{"x": "1", "label": "a"}` + "\n{oops\n" + `{"z": 1}` + "\n",
		`{"x\n": 1, "label": "a"}` + "\n",
		`{"x": "\u0000", "label": "\"q\""}` + "\n",
	} {
		jsonl := strings.HasPrefix(s, "{")
		f.Add(jsonl, []byte(s))
	}
	specs := map[bool]*config.Pipeline{ // parsed once: YAML would dominate each input's time
		false: spec(f, "p", "format: csv\nlabel: label\n"+fuzzRules),
		true:  spec(f, "p", "format: jsonl\nlabel: label\n"+fuzzRules),
	}
	f.Fuzz(func(t *testing.T, jsonl bool, data []byte) {
		name := "a.csv"
		if jsonl {
			name = "a.jsonl"
		}
		p := specs[jsonl]
		parse := func(body []byte, ref []Column) (*tabular, []Column, string, string) {
			var train, holdout bytes.Buffer
			tab := newTabular(p, "data", ref, &train, &holdout)
			if err := tab.parse(name, bytes.NewReader(body)); err != nil {
				t.Fatalf("parse: %v (only read errors are errors)", err)
			}
			schema, _ := tab.finish()
			return tab, schema, train.String(), holdout.String()
		}
		tab, schema, train, holdout := parse(data, nil)
		checkViolations(t, tab, int64(bytes.Count(data, []byte{'\n'})+1))
		if tab.train+tab.holdout != tab.rows {
			t.Fatalf("%d rows, %d train + %d holdout", tab.rows, tab.train, tab.holdout)
		}
		for _, fr := range []float64{tab.nullFrac, tab.dupFrac} {
			if fr < 0 || fr > 1 {
				t.Fatalf("fraction %v", fr)
			}
		}
		tab2, _, train2, holdout2 := parse(data, nil)
		if train2 != train || holdout2 != holdout || len(tab2.violations) != len(tab.violations) {
			t.Fatalf("the same bytes parsed twice differ")
		}
		if len(tab.violations) > 0 || jsonl {
			return
		}
		if len(schema) != len(tab.header) {
			t.Fatalf("schema %v for header %v", schema, tab.header)
		}
		for _, part := range []struct {
			body string
			rows int64
		}{{train, tab.train}, {holdout, tab.holdout}} {
			if part.rows == 0 {
				continue
			}
			back, _, _, _ := parse([]byte(part.body), schema)
			for _, v := range back.violations {
				// A part is a subset: its own size and share of nulls and duplicates may differ.
				if v.Rule != "rows" && v.Rule != "max_null_fraction" && v.Rule != "max_duplicate_fraction" {
					t.Fatalf("part of an accepted batch refused: %s\n%q", v, part.body)
				}
			}
			if back.rows != part.rows {
				t.Fatalf("part read back as %d rows, written as %d", back.rows, part.rows)
			}
		}
	})
}

// FuzzFeedback: feedback files, labelled rows or late labels (request_id,label). Every row
// read is either kept or counted under a rule; late labels kept are distinct ids with an
// allowed label, and the labels part reads back as exactly those pairs.
func FuzzFeedback(f *testing.F) {
	for _, s := range []string{
		"request_id,label\nr1,a\nr1,b\n,a\nr2,\nr3,z\nr4:0,\"c,d\"\n\"r 5\",a\n",
		"request_id,label\n\"a\"\"b\",a\n\"x\ny\",b\nr,a,extra\n\"bad,a\n",
		"x,label\n1,a\n2,\n3,z\n",
		"y,label\n1,a\n",
		`{"id": "r1", "label": "a"}` + "\n" + `{"id": 7, "label": "b"}` + "\n" + `{"id": null, "label": "a"}` + "\n" + `{"id": "r2", "label": null, "x": 1}` + "\n",
		`{"x": 1, "label": "a"}` + "\n" + `{"x": 2}` + "\n",
	} {
		f.Add(strings.HasPrefix(s, "{"), []byte(s))
	}
	ref := []Column{{Name: "x", Type: TypeNumber}, {Name: "label", Type: TypeString}}
	specs := map[bool]*config.Pipeline{
		false: spec(f, "p", "format: csv\nlabel: label\n"+fuzzRules),
		true:  spec(f, "p", "format: jsonl\nlabel: label\n"+fuzzRules),
	}
	f.Fuzz(func(t *testing.T, jsonl bool, data []byte) {
		name := "f.csv"
		if jsonl {
			name = "f.jsonl"
		}
		p := specs[jsonl]
		var train, holdout bytes.Buffer
		tab := newTabular(p, string(storage.KindFeedback), ref, &train, &holdout)
		if err := tab.parse(name, bytes.NewReader(data)); err != nil {
			t.Fatalf("parse: %v", err)
		}
		tab.finish()
		checkViolations(t, tab, int64(bytes.Count(data, []byte{'\n'})+1))
		var left int64
		for _, v := range tab.leftOut {
			left += v.Count
		}
		usable := tab.usableRows()
		if usable < 0 || usable+left > tab.rows {
			t.Fatalf("%d rows read, %d kept, %d left out", tab.rows, usable, left)
		}
		if tab.fbType != storage.FeedbackLabels {
			return
		}
		if usable+left != tab.rows {
			t.Fatalf("late labels: %d rows read, %d kept + %d left out", tab.rows, usable, left)
		}
		// The labels part: the header, then one distinct id per usable row, each label
		// allowed, as encoding/csv (not ingest's own reader) reads it.
		recs, err := csv.NewReader(bytes.NewReader(train.Bytes())).ReadAll()
		if err != nil || len(recs) == 0 || strings.Join(recs[0], ",") != "request_id,label" || int64(len(recs)-1) != usable {
			t.Fatalf("labels part %q: %d records, %v; want the header and %d rows", train.String(), len(recs), err, usable)
		}
		ids := map[string]bool{}
		for _, r := range recs[1:] {
			if len(r) != 2 || r[0] == "" || ids[r[0]] || strings.TrimSpace(r[0]) != r[0] || !slices.Contains(p.Data.Validate.Labels, r[1]) {
				t.Fatalf("labels part row %q", r)
			}
			ids[r[0]] = true
		}
	})
}
