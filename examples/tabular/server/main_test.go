package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/examples/internal/goldentest"
	"github.com/kiln-edge/kiln/examples/tabular/model"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.json's responses from the server")

const goldenPath = "../testdata/golden.json"

// TestGolden replays examples/tabular/testdata/golden.json: one file
// pinning both serving protocols, byte for byte, for the example server,
// the evaluator, `kiln predict` and the monitor.
func TestGolden(t *testing.T) {
	g := goldentest.Read[*model.Model](t, goldenPath)
	goldentest.Replay(t, goldenPath, g, model.NewHandler(g.Model, g.Pipeline), *update)
}

// TestAccuracyOnUnseenRows trains on the shipped dataset minus every fifth
// row and scores those rows through the server's both protocols.
func TestAccuracyOnUnseenRows(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "data", "breast_cancer.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all, err := model.ReadTable(f, "diagnosis")
	if err != nil {
		t.Fatal(err)
	}
	train := &model.Table{Features: all.Features, Label: all.Label}
	var holdX [][]float64
	var holdY []string
	for i := range all.X {
		if i%5 == 0 {
			holdX, holdY = append(holdX, all.X[i]), append(holdY, all.Y[i])
		} else {
			train.X, train.Y = append(train.X, all.X[i]), append(train.Y, all.Y[i])
		}
	}
	m, err := model.Train(train, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(model.NewHandler(m, "bc"))
	defer srv.Close()

	var csvBody strings.Builder
	var flat []float64
	for _, x := range holdX {
		for j, v := range x {
			if j > 0 {
				csvBody.WriteByte(',')
			}
			csvBody.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		}
		csvBody.WriteByte('\n')
		flat = append(flat, x...)
	}
	resp, err := http.Post(srv.URL+"/invocations", "text/csv", strings.NewReader(csvBody.String()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if acc := accuracy(got, holdY); acc < 0.9 {
		t.Errorf("/invocations accuracy on %d unseen rows = %.3f; want >= 0.9", len(holdY), acc)
	} else {
		t.Logf("/invocations accuracy on %d unseen rows: %.4f", len(holdY), acc)
	}

	reqBody, _ := json.Marshal(model.InferRequest{Inputs: []model.InferTensor{{Name: "input", Datatype: "FP64",
		Shape: []int{len(holdX), len(all.Features)}, Data: mustJSON(flat)}}})
	resp, err = http.Post(srv.URL+"/v2/models/bc/infer", "application/json", bytes.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	var ir model.InferResponse
	if err := json.NewDecoder(resp.Body).Decode(&ir); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(ir.Outputs) != 1 || !cmp.Equal(ir.Outputs[0].Data, got) {
		t.Errorf("v2 answers differ from /invocations: %+v", ir)
	}
}

func accuracy(got, want []string) float64 {
	if len(got) != len(want) {
		panic(fmt.Sprintf("%d answers for %d rows", len(got), len(want)))
	}
	ok := 0
	for i := range got {
		if got[i] == want[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(want))
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
