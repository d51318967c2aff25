package model

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadJSONLTable(t *testing.T) {
	// Keys out of alphabetical order, the label in the middle, later lines
	// in another order, a BOM, a blank line, numbers written several ways.
	in := "\ufeff" + `{"zeta": 1.5, "class": "a", "alpha": -2}` + "\n\n" +
		`{"alpha": 3e2, "zeta": 0, "class": "b"}` + "\r\n" +
		`  {"class": "a", "alpha": 7, "zeta": 1E-3}  ` + "\n"
	tab, err := ReadJSONLTable(strings.NewReader(in), "class")
	if err != nil {
		t.Fatal(err)
	}
	want := &Table{
		Features: []string{"zeta", "alpha"}, Label: "class",
		X: [][]float64{{1.5, -2}, {0, 300}, {0.001, 7}},
		Y: []string{"a", "b", "a"},
	}
	if d := cmp.Diff(want, tab); d != "" {
		t.Fatalf("table (-want +got):\n%s", d)
	}

	// A second file: same keys, another order.
	if err := tab.AppendJSONL(strings.NewReader(`{"class":"c","alpha":1,"zeta":2}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if got := tab.X[3]; !cmp.Equal(got, []float64{2, 1}) || tab.Y[3] != "c" {
		t.Errorf("appended row = %v %q; want [2 1] \"c\"", got, tab.Y[3])
	}

	// Labels need not be strings: true/false and numbers are read as text.
	tab, err = ReadJSONLTable(strings.NewReader(`{"x":1,"y":true}`+"\n"+`{"x":2,"y":false}`+"\n"+`{"x":3,"y":10}`), "y")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"true", "false", "10"}, tab.Y); d != "" {
		t.Errorf("labels (-want +got):\n%s", d)
	}
}

// TestReadJSONLTableCSV: the same data as CSV and as JSON Lines make the same
// table, so a model trained on either is the same.
func TestReadJSONLTableCSV(t *testing.T) {
	csvIn := "a,b,label\n1,2.5,x\n-3,4e1,y\n"
	jsonIn := `{"a":1,"b":2.5,"label":"x"}` + "\n" + `{"label":"y","b":4e1,"a":-3}` + "\n"
	c, err := ReadTable(strings.NewReader(csvIn), "label")
	if err != nil {
		t.Fatal(err)
	}
	j, err := ReadJSONLTable(strings.NewReader(jsonIn), "label")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(c, j); d != "" {
		t.Errorf("csv vs jsonl table (-csv +jsonl):\n%s", d)
	}
}

func TestReadJSONLTableErrors(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
	}{
		{"no label", `{"a":1,"b":2}`, `line 1: label key "label" not in the keys a,b`},
		{"null feature", `{"a":1,"label":"x"}` + "\n" + `{"a":null,"label":"y"}`, `line 2, column a: "" is not a finite number`},
		{"string feature", `{"a":"big","label":"x"}`, `line 1, column a: "big" is not a finite number`},
		{"missing key", `{"a":1,"b":2,"label":"x"}` + "\n" + `{"a":1,"label":"y"}`, `line 2: no key "b" (columns a,b,label)`},
		{"unknown key", `{"a":1,"label":"x"}` + "\n" + `{"a":1,"c":3,"label":"y"}`, `line 2: key "c" is not one of the columns a,label`},
		{"key twice", `{"a":1,"a":2,"label":"x"}`, `line 1: key "a" twice`},
		{"nested", `{"a":[1,2],"label":"x"}`, `line 1: key "a": want a number, string, boolean or null, got an array`},
		{"nested object", `{"a":{"b":1},"label":"x"}`, `line 1: key "a": want a number, string, boolean or null, got an object`},
		{"not an object", `{"a":1,"label":"x"}` + "\n" + `[1,2]`, `line 2: not a JSON object`},
		{"broken", `{"a":1,"label":"x"`, `line 1: not a JSON object`},
		{"two values", `{"a":1,"label":"x"} {"a":2,"label":"y"}`, `line 1: more than one JSON value on the line`},
		{"empty", "\n\n", `no JSON object in the file`},
		{"too long", `{"a":"` + strings.Repeat("x", maxJSONLLine) + `"}`, `a line is longer than`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadJSONLTable(strings.NewReader(c.in), "label")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want it to contain %q", err, c.want)
			}
		})
	}
	tab, err := ReadJSONLTable(strings.NewReader(`{"a":1,"label":"x"}`), "label")
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.AppendJSONL(strings.NewReader(`{"a":1,"b":2,"label":"x"}`)); err == nil || !strings.Contains(err.Error(), `line 1: key "b" is not one of the columns a,label`) {
		t.Errorf("append with another key: err = %v", err)
	}
}

func TestJSONLColumns(t *testing.T) {
	keys, err := JSONLColumns(strings.NewReader("\n" + `{"z":1,"m":"a","b":null}` + "\n" + `garbage`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"z", "m", "b"}, keys); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	for in, want := range map[string]string{"": "no JSON object", "{}": "line 1: an object without keys", "[1]": "line 1: not a JSON object"} {
		if _, err := JSONLColumns(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("JSONLColumns(%q): err = %v; want %q", in, err, want)
		}
	}
}
