package ingest

import (
	"fmt"
	"strings"
	"testing"
)

// wideCSV writes rows of 20 numeric features and a label; the features named in holes get
// NaN, inf, empty and null spellings in the rows where i%10 < 3 (30% of them).
func wideCSV(rows int, holes ...int) string {
	var b strings.Builder
	for j := range 20 {
		fmt.Fprintf(&b, "f%d,", j)
	}
	b.WriteString("label\n")
	spellings := []string{"NaN", "inf", ""}
	for i := range rows {
		for j := range 20 {
			v := fmt.Sprintf("%d.%d", i, j)
			for _, h := range holes {
				if h == j && i%10 < 3 {
					v = spellings[i%3]
				}
			}
			b.WriteString(v + ",")
		}
		b.WriteString([]string{"a", "b"}[i%2] + "\n")
	}
	return b.String()
}

// TestNullFractionPerColumn: two columns 30% NaN/inf/empty among twenty full ones are 3% of
// all cells; a 5% limit must still stop them, naming the column and its fraction.
func TestNullFractionPerColumn(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\nvalidate: {max_null_fraction: 0.05}\n")
	tab, vs := parseBatch(t, p, nil, "a.csv", wideCSV(100, 4, 11))
	if len(vs) != 1 || vs[0].Rule != "max_null_fraction" {
		t.Fatalf("violations = %+v, want one max_null_fraction", vs)
	}
	v := vs[0]
	if v.Column != "f4" || v.Observed != "0.3 (30 of 100 cells)" || v.Allowed != "at most 0.05 per column" || v.Count != 2 {
		t.Errorf("violation = %+v, want column f4, 0.3 (30 of 100 cells), 2 columns over", v)
	}
	if s := v.String(); !strings.Contains(s, `column "f4"`) || strings.Contains(s, "\n") {
		t.Errorf("reason %q: want one line naming the column", s)
	}
	for _, c := range tab.checks() {
		if c.Rule == "max_null_fraction" && (c.OK || !strings.Contains(c.Observed, "f4")) {
			t.Errorf("check = %+v, want failed naming f4", c)
		}
	}
	// The same holes under a 30% limit pass: the limit is "at most".
	p = spec(t, "p", "format: csv\nlabel: label\nvalidate: {max_null_fraction: 0.3}\n")
	if _, vs := parseBatch(t, p, nil, "a.csv", wideCSV(100, 4, 11)); len(vs) != 0 {
		t.Errorf("30%% limit: violations = %+v, want none", vs)
	}
}

// TestNullFractionJSONLMissingKeys: a key an object leaves out is a null of that column.
func TestNullFractionJSONLMissingKeys(t *testing.T) {
	p := spec(t, "p", "format: jsonl\nlabel: label\nvalidate: {max_null_fraction: 0.2}\n")
	var b strings.Builder
	for i := range 10 {
		if i < 3 {
			fmt.Fprintf(&b, `{"x": %d, "label": "a"}`+"\n", i)
		} else {
			fmt.Fprintf(&b, `{"x": %d, "y": %d, "z": 1, "w": 2, "label": "a"}`+"\n", i, i)
		}
	}
	// The first object names the columns: make it a full one.
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")
	rows[0], rows[9] = rows[9], rows[0]
	_, vs := parseBatch(t, p, nil, "a.jsonl", strings.Join(rows, "\n")+"\n")
	if len(vs) != 1 || vs[0].Rule != "max_null_fraction" || vs[0].Column != "y" || !strings.HasPrefix(vs[0].Observed, "0.3 ") || vs[0].Count != 3 {
		t.Fatalf("violations = %+v, want max_null_fraction on y at 0.3, 3 columns over", vs)
	}
}

// TestJSONLRepeatedKey: an object that sets a key twice is ambiguous (RFC 8259 leaves the
// meaning to the reader); it is a columns violation, not two cells of one column.
func TestJSONLRepeatedKey(t *testing.T) {
	p := spec(t, "p", "format: jsonl\nlabel: label\n")
	_, vs := parseBatch(t, p, nil, "a.jsonl", `{"x": 1, "label": "a"}`+"\n"+`{"x": 1, "x": 2, "label": "a"}`+"\n")
	if len(vs) != 1 || vs[0].Rule != "columns" || vs[0].Line != 2 || vs[0].Column != "x" {
		t.Fatalf("violations = %+v, want columns at line 2, column x", vs)
	}
}

// TestDuplicateFractionByValue: duplicates are rows with the same values, however they are
// written: CSV quoting and JSON key order do not make two rows different.
func TestDuplicateFractionByValue(t *testing.T) {
	for _, tc := range []struct {
		name, data, file, body string
		dups                   string // "" = passes
	}{
		{"csv quoting", "format: csv\nlabel: label\nvalidate: {max_duplicate_fraction: 0.2}\n", "a.csv",
			"x,label\n1,a\n\"1\",a\n1,\"a\"\n2,b\n", "0.5 (2 of 4 rows)"},
		{"jsonl key order", "format: jsonl\nlabel: label\nvalidate: {max_duplicate_fraction: 0.2}\n", "a.jsonl",
			`{"x": 1, "label": "a"}` + "\n" + `{"label": "a", "x": 1}` + "\n" + `{"x": 2, "label": "b"}` + "\n", "0.3333 (1 of 3 rows)"},
		{"jsonl string is not number", "format: jsonl\nlabel: label\nvalidate: {max_duplicate_fraction: 0.2}\n", "a.jsonl",
			`{"x": 1, "label": "a"}` + "\n" + `{"x": "1", "label": "a"}` + "\n" + `{"x": 2, "label": "b"}` + "\n", ""},
		{"jsonl missing is not empty", "format: jsonl\nlabel: label\nvalidate: {max_duplicate_fraction: 0.2}\n", "a.jsonl",
			`{"x": "", "label": "a"}` + "\n" + `{"label": "a"}` + "\n" + `{"x": 2, "label": "b"}` + "\n", ""},
		{"different rows", "format: csv\nlabel: label\nvalidate: {max_duplicate_fraction: 0.2}\n", "a.csv",
			"x,label\n1,a\n11,a\n1,aa\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, vs := parseBatch(t, spec(t, "p", tc.data), nil, tc.file, tc.body)
			var got string
			for _, v := range vs {
				if v.Rule == "max_duplicate_fraction" {
					got = v.Observed
				}
			}
			if got != tc.dups {
				t.Errorf("max_duplicate_fraction observed %q, want %q (violations %+v)", got, tc.dups, vs)
			}
		})
	}
}
