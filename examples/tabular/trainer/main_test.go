package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
	"github.com/kiln-edge/kiln/examples/tabular/model"
)

const dataCSV = "../data/breast_cancer.csv"

// readCSV is the breast cancer data: header and records.
func readCSV(t *testing.T) ([]string, [][]string) {
	t.Helper()
	f, err := os.Open(dataCSV)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs[0], recs[1:]
}

// toJSONL writes records as JSON Lines: numbers as JSON numbers (their CSV
// text, unchanged), other values as strings. Lines after the first put their
// keys in a shuffled order, as a writer may.
func toJSONL(t *testing.T, header []string, recs [][]string, rng *rand.Rand) []byte {
	t.Helper()
	var b bytes.Buffer
	for n, rec := range recs {
		order := make([]int, len(header))
		for i := range order {
			order[i] = i
		}
		if n > 0 {
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		b.WriteByte('{')
		for k, i := range order {
			if k > 0 {
				b.WriteByte(',')
			}
			key, _ := json.Marshal(header[i])
			b.Write(key)
			b.WriteByte(':')
			if _, err := strconv.ParseFloat(rec[i], 64); err == nil {
				b.WriteString(rec[i])
			} else {
				v, _ := json.Marshal(rec[i])
				b.Write(v)
			}
		}
		b.WriteString("}\n")
	}
	return b.Bytes()
}

func toCSV(header []string, recs [][]string) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(header)
	_ = w.WriteAll(recs)
	return b.Bytes()
}

// mlRoot makes a SageMaker layout whose train channel holds files (name ->
// content) and hyperparameters.json holds hp.
func mlRoot(t *testing.T, files map[string][]byte, hp map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, b := range files {
		p := filepath.Join(root, "input", "data", "train", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := sagemaker.WriteJSON(filepath.Join(root, "input", "config", "hyperparameters.json"), hp); err != nil {
		t.Fatal(err)
	}
	return root
}

func readModel(t *testing.T, root string) (*model.Model, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "model", "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m model.Model
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m, b
}

// TestTrainJSONL: the breast cancer data as two JSON Lines parts, named as
// kilnd links them, the label key (diagnosis) named by the hyperparameter
// and last in no line's fixed place, trains the very model that the same
// parts as CSV train: the first line's key order is the feature order.
func TestTrainJSONL(t *testing.T) {
	header, recs := readCSV(t)
	// Move the label to the front so that "the last column" would be wrong.
	li := len(header) - 1
	if header[li] != "diagnosis" {
		t.Fatalf("%s: last column %q; the test expects diagnosis", dataCSV, header[li])
	}
	move := func(r []string) []string { return append([]string{r[li]}, r[:li]...) }
	header = move(header)
	for i := range recs {
		recs[i] = move(recs[i])
	}
	half := len(recs) / 2
	rng := rand.New(rand.NewPCG(7, 7)) //nolint:gosec // test data
	hp := map[string]string{"label": "diagnosis", "epochs": "200"}
	jroot := mlRoot(t, map[string][]byte{
		"cancer-d1.jsonl": toJSONL(t, header, recs[:half], rng),
		"cancer-d2.jsonl": toJSONL(t, header, recs[half:], rng),
	}, hp)
	croot := mlRoot(t, map[string][]byte{
		"cancer-d1.csv": toCSV(header, recs[:half]),
		"cancer-d2.csv": toCSV(header, recs[half:]),
	}, hp)
	for _, root := range []string{jroot, croot} {
		if err := train(context.Background(), root); err != nil {
			t.Fatalf("train %s: %v", root, err)
		}
	}
	jm, jb := readModel(t, jroot)
	_, cb := readModel(t, croot)
	if !bytes.Equal(jb, cb) {
		t.Errorf("model.json from JSON Lines differs from the one from CSV:\n%.400s\nvs\n%.400s", jb, cb)
	}
	if jm.Label != "diagnosis" || len(jm.Features) != 30 || jm.Features[0] != "radius_mean" || jm.Features[29] != "fractal_dimension_worst" {
		t.Errorf("model label %q features %v; want diagnosis and the 30 features in the file's order", jm.Label, jm.Features)
	}
	var met Metrics
	b, err := os.ReadFile(filepath.Join(jroot, "output", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &met); err != nil {
		t.Fatal(err)
	}
	if met.TrainRows+met.ValidationRows != len(recs) || met.ValidationAccuracy < 0.9 || met.Classes != 2 {
		t.Errorf("metrics %+v; want %d rows in all, 2 classes, validation accuracy >= 0.9", met, len(recs))
	}
}

// TestTrainJSONLDefaultLabel: without the label hyperparameter the first
// object's last key is the label, as a CSV's last column is.
func TestTrainJSONLDefaultLabel(t *testing.T) {
	var b strings.Builder
	for i := range 40 {
		c := "lo"
		if i%2 == 1 {
			c = "hi"
		}
		b.WriteString(`{"x":` + strconv.Itoa(i%2*10+i%3) + `,"y":` + strconv.Itoa(i%5) + `,"c":"` + c + `"}` + "\n")
	}
	root := mlRoot(t, map[string][]byte{"p-d1.jsonl": []byte(b.String())}, map[string]string{})
	if err := train(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	m, _ := readModel(t, root)
	if m.Label != "c" || strings.Join(m.Features, ",") != "x,y" {
		t.Errorf("label %q features %v; want c and [x y]", m.Label, m.Features)
	}
}

func TestTrainChannelErrors(t *testing.T) {
	row := []byte(`{"x":1,"c":"a"}` + "\n")
	for _, c := range []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"mixed", map[string][]byte{"p-d1.csv": []byte("x,c\n1,a\n"), "p-d2.jsonl": row},
			"holds both CSV (p-d1.csv) and JSON Lines (p-d2.jsonl) files; want one format"},
		{"mixed in a subfolder", map[string][]byte{"p-d1.jsonl": row, "sub/p-d2.csv": []byte("x,c\n1,a\n")},
			"holds both CSV (p-d2.csv) and JSON Lines (p-d1.jsonl) files"},
		{"none", map[string][]byte{"notes.txt": []byte("hi")}, "no CSV (*.csv) or JSON Lines (*.jsonl) files in the train channel"},
		{"bad line names the file", map[string][]byte{"p-d1.jsonl": row, "p-d2.jsonl": []byte(`{"x":1,"c":"a"}` + "\n" + `{"x":[1],"c":"b"}` + "\n")},
			`p-d2.jsonl: line 2: key "x": want a number, string, boolean or null, got an array`},
		{"no label key", map[string][]byte{"p-d1.jsonl": []byte(`{"x":1,"y":2}` + "\n")},
			`p-d1.jsonl: line 1: label key "c" not in the keys x,y`},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := mlRoot(t, c.files, map[string]string{"label": "c"})
			err := train(context.Background(), root)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want it to contain %q", err, c.want)
			}
		})
	}
}
