package contract

import (
	"reflect"
	"strings"
	"testing"
)

func TestLabelledAddCSV(t *testing.T) {
	var l Labelled
	if err := l.AddCSV(strings.NewReader("\ufeffvibration,status,temperature\n2.1,failing,71.5\n0.2,normal,41\n"), "status", "part-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.AddCSV(strings.NewReader("vibration,status,temperature\r\n1.1,failing,52.5\r\n"), "status", "part-2"); err != nil {
		t.Fatal(err)
	}
	if err := l.AddCSV(strings.NewReader(""), "status", "empty"); err != nil {
		t.Fatal(err)
	}
	want := Labelled{
		Columns: []string{"vibration", "temperature"},
		Rows:    [][]string{{"2.1", "71.5"}, {"0.2", "41"}, {"1.1", "52.5"}},
		Labels:  []string{"failing", "normal", "failing"},
	}
	if !reflect.DeepEqual(l, want) || l.Len() != 3 {
		t.Errorf("Labelled = %+v, want %+v", l, want)
	}
	for _, tc := range []struct{ name, part, want string }{
		{"no label column", "a,b\n1,2\n", `p: no label column "status" in header [a b]`},
		{"other columns", "vibration,status,pressure\n1,a,2\n", "p: columns [vibration pressure] differ from the earlier parts' [vibration temperature]"},
		{"other order", "temperature,status,vibration\n1,a,2\n", "differ from the earlier parts'"},
		{"short row", "vibration,status,temperature\n1,a,2\n3,b\n", "p: record on line 3: wrong number of fields"},
	} {
		if err := l.AddCSV(strings.NewReader(tc.part), "status", "p"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: AddCSV = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLabelledAddJSONL(t *testing.T) {
	var l Labelled
	part1 := "\ufeff" + `{"vibration": 2.10, "status": "failing", "temperature": 71.5}` + "\n\n" +
		`{"temperature": 41, "vibration": 0.2, "status": "normal"}` + "\r\n" +
		`{"status": true, "temperature": null, "vibration": "n/a"}` // no final newline
	if err := l.AddJSONL(strings.NewReader(part1), "status", "fb-1.jsonl"); err != nil {
		t.Fatal(err)
	}
	// A later part may write the keys in another order.
	if err := l.AddJSONL(strings.NewReader(`{"temperature":52.5,"status":"failing","vibration":1.1}`+"\n"), "status", "fb-2.jsonl"); err != nil {
		t.Fatal(err)
	}
	want := Labelled{
		Columns: []string{"vibration", "temperature"},
		Rows:    [][]string{{"2.1", "71.5"}, {"0.2", "41"}, {"n/a", ""}, {"1.1", "52.5"}},
		Labels:  []string{"failing", "normal", "true", "failing"},
	}
	if !reflect.DeepEqual(l, want) {
		t.Errorf("Labelled = %+v, want %+v", l, want)
	}
	// CSV after JSONL: the columns and their order are the first part's.
	if err := l.AddCSV(strings.NewReader("vibration,temperature,status\n3,4,normal\n"), "status", "x.csv"); err != nil {
		t.Fatal(err)
	}
	if got := l.Rows[len(l.Rows)-1]; !reflect.DeepEqual(got, []string{"3", "4"}) {
		t.Errorf("row from CSV = %v", got)
	}
}

func TestLabelledAddJSONLErrors(t *testing.T) {
	first := `{"a":1,"b":2,"y":"x"}` + "\n"
	tests := []struct{ name, body, want string }{
		{"not an object", `[1,2]`, "f.jsonl line 1: not a JSON object"},
		{"not json", first + "a,b,y\n", "f.jsonl line 2: not a JSON object"},
		{"no label", `{"a":1,"b":2}`, `f.jsonl line 1: no label key "y" in [a b]`},
		{"label missing later", first + `{"a":1,"b":2}`, `f.jsonl line 2: no label key "y"`},
		{"extra key", first + `{"a":1,"b":2,"c":3,"y":"x"}`, `f.jsonl line 2: key "c" is not one of the columns [a b]`},
		{"missing key", first + "\n" + `{"a":1,"y":"x"}`, `f.jsonl line 3: no key "b" (columns [a b])`},
		{"duplicate key", `{"a":1,"a":2,"y":"x"}`, `f.jsonl line 1: key "a" twice`},
		{"nested object", `{"a":{"b":1},"y":"x"}`, `f.jsonl line 1: key "a": want a flat value, got an object`},
		{"nested array", first + `{"a":[1],"b":2,"y":"x"}`, `f.jsonl line 2: key "a": want a flat value, got an array`},
		{"two values on a line", `{"a":1,"b":2,"y":"x"} {"a":1}`, "f.jsonl line 1: more than one JSON value"},
		{"cut short", `{"a":1,"b":`, "f.jsonl line 1:"},
		{"number out of range", `{"a":1e999,"b":2,"y":"x"}`, `f.jsonl line 1: key "a": number 1e999`},
		{"line too long", `{"a":"` + strings.Repeat("x", maxJSONLLine) + `"}`, "f.jsonl: a line is longer than"},
	}
	for _, tt := range tests {
		var l Labelled
		err := l.AddJSONL(strings.NewReader(tt.body), "y", "f.jsonl")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: AddJSONL = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// A JSONL part must have the columns earlier parts set.
	l := Labelled{Columns: []string{"a", "b"}}
	if err := l.AddJSONL(strings.NewReader(`{"a":1,"c":2,"y":"x"}`), "y", "g.jsonl"); err == nil || !strings.Contains(err.Error(), `g.jsonl line 1: key "c" is not one of the columns [a b]`) {
		t.Errorf("AddJSONL with other columns = %v", err)
	}
}
