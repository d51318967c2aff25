package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// parseBatch runs the tabular pass over files (name, content) and returns the violations.
func parseBatch(t *testing.T, p *config.Pipeline, ref []Column, files ...string) (*tabular, []Violation) {
	t.Helper()
	var train, holdout bytes.Buffer
	tab := newTabular(p, "data", ref, &train, &holdout)
	for i := 0; i < len(files); i += 2 {
		if err := tab.parse(files[i], strings.NewReader(files[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	tab.finish()
	var out []Violation
	for _, v := range tab.violations {
		out = append(out, *v)
	}
	return tab, out
}

func TestValidationRules(t *testing.T) {
	base := "format: csv\nlabel: label\n"
	for _, tc := range []struct {
		name, data string
		ref        []Column
		files      []string
		rule       string // "" = passes
		line       int64
		column     string
	}{
		{name: "ok", data: base, files: []string{"a.csv", csvRows(20, 0)}},
		{name: "crlf and bom", data: base, files: []string{"a.csv", "\uFEFFx,label\r\n1,a\r\n2,b\r\n"}},
		{name: "quoted fields", data: base, files: []string{"a.csv", "x,label\n1,\"a,\"\"b\"\"\"\n2,\"multi\nline\"\n"}},
		{name: "column count", data: base, files: []string{"a.csv", "x,label\n1,a\n2\n"}, rule: "columns", line: 3},
		{name: "no label column", data: base, files: []string{"a.csv", "x,y\n1,2\n"}, rule: "label_column", column: "label"},
		{name: "labels", data: base + "validate: {labels: [a, b]}\n", files: []string{"a.csv", "x,label\n1,a\n2,c\n"}, rule: "labels", line: 3, column: "label"},
		{name: "rows min", data: base + "validate: {rows: {min: 10}}\n", files: []string{"a.csv", csvRows(3, 0)}, rule: "rows"},
		{name: "rows max", data: base + "validate: {rows: {max: 2}}\n", files: []string{"a.csv", csvRows(3, 0)}, rule: "rows"},
		{name: "nulls", data: base + "validate: {max_null_fraction: 0.1}\n", files: []string{"a.csv", "x,label\n,a\nNaN,b\ninf,a\n1,b\n"}, rule: "max_null_fraction"},
		{name: "duplicates", data: base + "validate: {max_duplicate_fraction: 0.2}\n", files: []string{"a.csv", "x,label\n1,a\n1,a\n1,a\n2,b\n"}, rule: "max_duplicate_fraction"},
		{name: "ranges", data: base + "validate: {ranges: {x: {min: 0, max: 10}}}\n", files: []string{"a.csv", "x,label\n1,a\n11,b\n"}, rule: "ranges", line: 3, column: "x"},
		{name: "types against accepted", data: base, ref: []Column{{"x", TypeNumber}, {"label", TypeString}},
			files: []string{"a.csv", "x,label\n1,a\nseven,b\n"}, rule: "types", line: 3, column: "x"},
		{name: "types inferred within batch", data: base, files: []string{"a.csv", "x,label\n1,a\nseven,b\n"}},
		{name: "schema against accepted", data: base, ref: []Column{{"x", TypeNumber}, {"label", TypeString}},
			files: []string{"a.csv", "x,z,label\n1,2,a\n"}, rule: "schema"},
		{name: "schema across files", data: base, files: []string{"a.csv", "x,label\n1,a\n", "b.csv", "y,label\n1,a\n"}, rule: "schema"},
		{name: "over-long line", data: base, files: []string{"a.csv", "x,label\n" + strings.Repeat("1", MaxLineLength+10) + ",a\n2,b\n"}, rule: "max_line_length", line: 2},
		{name: "jsonl ok", data: "format: jsonl\nlabel: label\n", files: []string{"a.jsonl", `{"x": 1, "label": "a"}` + "\n" + `{"label": "b", "x": 2.5}` + "\n"}},
		{name: "jsonl syntax", data: "format: jsonl\nlabel: label\n", files: []string{"a.jsonl", `{"x": 1, "label": "a"}` + "\n{oops\n"}, rule: "json_syntax", line: 2},
		{name: "jsonl unknown key", data: "format: jsonl\nlabel: label\n", files: []string{"a.jsonl", `{"x": 1, "label": "a"}` + "\n" + `{"x": 1, "z": 2, "label": "a"}` + "\n"}, rule: "columns", line: 2},
		{name: "jsonl types", data: "format: jsonl\nlabel: label\n", ref: []Column{{"x", TypeNumber}, {"label", TypeString}},
			files: []string{"a.jsonl", `{"x": 1, "label": "a"}` + "\n" + `{"x": "1", "label": "a"}` + "\n"}, rule: "types", line: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := spec(t, "p", tc.data)
			_, vs := parseBatch(t, p, tc.ref, tc.files...)
			if tc.rule == "" {
				if len(vs) > 0 {
					t.Fatalf("violations = %+v, want none", vs)
				}
				return
			}
			if len(vs) == 0 || vs[0].Rule != tc.rule {
				t.Fatalf("violations = %+v, want first rule %s", vs, tc.rule)
			}
			if tc.line != 0 && vs[0].Line != tc.line {
				t.Errorf("line = %d, want %d", vs[0].Line, tc.line)
			}
			if tc.column != "" && vs[0].Column != tc.column {
				t.Errorf("column = %q, want %q", vs[0].Column, tc.column)
			}
			if vs[0].Observed == "" || vs[0].Allowed == "" {
				t.Errorf("violation lacks observed/allowed: %+v", vs[0])
			}
		})
	}
}

func TestCSVRowCountAndQuotes(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\n")
	tab, vs := parseBatch(t, p, nil, "a.csv", "x,label\n1,\"a\nb\"\n2,c\n")
	if len(vs) != 0 || tab.rows != 2 {
		t.Fatalf("rows %d, violations %+v", tab.rows, vs)
	}
}

func TestDriftPSI(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\nvalidate: {drift: {psi_max: 0.25}}\n")
	gen := func(n int, shift float64, seed int) string {
		var b strings.Builder
		b.WriteString("x,label\n")
		r := uint64(seed)*2654435761 + 1
		for range n {
			r ^= r << 13
			r ^= r >> 7
			r ^= r << 17
			fmt.Fprintf(&b, "%.4f,a\n", float64(r%10000)/100+shift)
		}
		return b.String()
	}
	profile := func(s string) map[string]ColumnProfile {
		var tr, ho bytes.Buffer
		tab := newTabular(p, "data", nil, &tr, &ho)
		if err := tab.parse("a.csv", strings.NewReader(s)); err != nil {
			t.Fatal(err)
		}
		_, prof := tab.finish()
		return prof
	}
	ref := newRefProfile()
	ref.add(profile(gen(2000, 0, 1)), 1)
	same := ref.drift(profile(gen(500, 0, 2)), "label")["x"]
	shifted := ref.drift(profile(gen(500, 40, 3)), "label")["x"]
	small := ref.drift(profile(gen(20, 40, 4)), "label")["x"]
	if same.PSI == nil || *same.PSI > 0.1 {
		t.Errorf("same distribution: %+v, want psi below 0.1", same)
	}
	if shifted.PSI == nil || *shifted.PSI < 0.5 {
		t.Errorf("shifted distribution: %+v, want psi above 0.5", shifted)
	}
	if small.PSI != nil || small.Skipped == "" {
		t.Errorf("20 values: %+v, want skipped", small)
	}
}

func TestQuarantineAndRelease(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\nvalidate: {rows: {min: 10}, labels: [a, b]}\n"))
	renameIn(t, e.drop("p"), "few.csv", csvRows(3, 0))
	ds := e.waitDatasets("p", 1, 5*time.Second)
	d := ds[0]
	if d.State != storage.DatasetQuarantined || !strings.Contains(d.Reason, "rows") {
		t.Fatalf("dataset = %+v, want quarantined for rows", d)
	}
	qdir := filepath.Join(e.quarantine("p"), "d1")
	e.waitFor("quarantine folder", 2*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(qdir, "few.csv"))
		return err == nil
	})
	var r Reason
	b, err := os.ReadFile(filepath.Join(qdir, "REASON.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Rule != "rows" || r.Dataset != "p/d1" || r.Observed != "3 rows" || r.Allowed != "at least 10" || !r.Read {
		t.Errorf("REASON.json = %s", b)
	}
	if len(entries(t, e.drop("p"))) != 0 {
		t.Errorf("drop folder not emptied")
	}
	if evs := e.events("dataset.quarantined"); len(evs) != 1 || evs[0].Details["rule"] != "rows" {
		t.Errorf("events = %+v", evs)
	}
	if _, err := e.m.Release(t.Context(), "p/d1", "uid:1000"); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Dataset("p/d1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != storage.DatasetReleased || got.Released != "uid:1000" || got.Train == nil {
		t.Errorf("released = %+v", got)
	}
	anc, _ := e.store.Ancestors("p/d1", 1)
	found := false
	for _, a := range anc {
		found = found || (a.ID == "uid:1000" && a.Edge == storage.EdgeReleased)
	}
	if !found {
		t.Errorf("no released edge from uid:1000: %+v", anc)
	}
	if ev := e.events("dataset.released"); len(ev) != 1 || ev[0].Actor != "uid:1000" {
		t.Errorf("release events = %+v", ev)
	}
	if _, err := os.Stat(qdir); !os.IsNotExist(err) {
		t.Errorf("quarantine folder kept after release: %v", err)
	}
	if _, err := e.m.Release(t.Context(), "p/d1", "uid:1000"); err == nil {
		t.Error("second release succeeded")
	}
}
