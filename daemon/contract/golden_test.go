package contract_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/examples/tabular/model"
)

// TestGoldenContract holds this package and the example model server to the
// golden file both are written against. For every successful prediction
// case, in both protocols, the golden request is decoded into rows, the rows
// are encoded again and sent through the real example server: its answer
// must equal the golden answer byte for byte, ParseAnswer must read the
// golden predictions from it, and Predict must return them. JSON Lines
// requests are decoded (keys sorted) and put back in the model's training
// order; the case marked "(kiln's encoding)" is what Encode writes, byte
// for byte.
func TestGoldenContract(t *testing.T) {
	raw, err := os.ReadFile("../../examples/tabular/testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Pipeline string          `json:"pipeline"`
		Model    json.RawMessage `json:"model"`
		Cases    []struct {
			Name, Path, Request, Response string
			ContentType                   string `json:"content_type"`
			Status                        int
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kg") // a short path: a socket's is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	modelFile := filepath.Join(dir, "model.json")
	if err := os.WriteFile(modelFile, golden.Model, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(modelFile)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: model.NewHandler(m, golden.Pipeline)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}}
	t.Cleanup(hc.CloseIdleConnections)

	checked := map[string]int{}
	for _, c := range golden.Cases {
		var protocol string
		switch {
		case c.Path == "/invocations":
			protocol = contract.ProtocolSageMaker
		case c.Path == contract.V2InferPath(golden.Pipeline):
			protocol = contract.ProtocolV2
		default:
			continue
		}
		if c.Status != http.StatusOK {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			in, err := contract.DecodeInputs(protocol, c.ContentType, []byte(c.Request))
			if err != nil {
				t.Fatalf("DecodeInputs(golden request): %v", err)
			}
			if in.Format == contract.FormatJSONL {
				in = trainingOrder(t, in, m.Features)
			}
			rows := in.Rows
			if n := contract.CountRows(c.ContentType, []byte(c.Request)); n != len(rows) {
				t.Errorf("CountRows(golden request) = %d, DecodeInputs found %d rows", n, len(rows))
			}
			want, err := contract.ParseAnswer(protocol, []byte(c.Response))
			if err != nil || len(want) != len(rows) {
				t.Fatalf("ParseAnswer(golden answer) = %q, %v; want %d predictions", want, err, len(rows))
			}

			reqs, err := contract.Encode(protocol, golden.Pipeline, in)
			if err != nil || len(reqs) != 1 {
				t.Fatalf("Encode = %d requests, %v; want one", len(reqs), err)
			}
			req := reqs[0]
			if req.Path != c.Path || req.ContentType != c.ContentType {
				t.Errorf("Encode = POST %s (%s); golden POST %s (%s)", req.Path, req.ContentType, c.Path, c.ContentType)
			}
			if strings.HasSuffix(c.Name, "(kiln's encoding)") {
				if string(req.Body) != c.Request {
					t.Errorf("Encode wrote\n%q\nwant the golden request\n%q", req.Body, c.Request)
				}
				checked["exact "+in.Format]++
			}
			answer := post(t, hc, req)
			wantAnswer := c.Response
			if protocol == contract.ProtocolV2 {
				// The server echoes a request's "id"; kiln sends none.
				wantAnswer = strings.Replace(wantAnswer, `"id":"req-1",`, "", 1)
			}
			if string(answer) != wantAnswer {
				t.Errorf("the example server answered kiln's request with\n%q\nwant the golden\n%q", answer, wantAnswer)
			}
			if got, err := contract.ParseAnswer(protocol, answer); err != nil || !slices.Equal(got, want) {
				t.Errorf("ParseAnswer(answer) = %q, %v; want %q", got, err, want)
			}

			got, err := contract.PredictInputs(context.Background(), dial, protocol, golden.Pipeline, in)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("PredictInputs(%s) = %q, %v; want %q", protocol, got, err, want)
			}
			if in.Format == contract.FormatCSV {
				got, err := contract.Predict(context.Background(), dial, protocol, golden.Pipeline, rows)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("Predict(%s) = %q, %v; want %q", protocol, got, err, want)
				}
			}
			checked[protocol]++
			checked[in.Format]++
		})
	}
	if checked[contract.ProtocolSageMaker] < 4 || checked[contract.ProtocolV2] < 2 || checked[contract.FormatJSONL] < 2 || checked["exact jsonl"] != 1 {
		t.Fatalf("checked %v golden cases; the golden file changed shape", checked)
	}
}

func post(t *testing.T, hc *http.Client, r contract.Request) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://model"+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", r.ContentType)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s: %s", r.Path, resp.Status, b)
	}
	return b
}

// trainingOrder puts the sorted columns DecodeInputs gives a JSON Lines
// request into the model's feature order, dropping other keys (the label),
// as kiln's callers do with the columns the model was trained on.
func trainingOrder(t *testing.T, in contract.Inputs, features []string) contract.Inputs {
	t.Helper()
	out := contract.Inputs{Format: in.Format, Columns: features, Rows: make([][]string, len(in.Rows))}
	for i, r := range in.Rows {
		out.Rows[i] = make([]string, len(features))
		for j, f := range features {
			k := slices.Index(in.Columns, f)
			if k < 0 {
				t.Fatalf("golden request has no key %q (keys %v)", f, in.Columns)
			}
			out.Rows[i][j] = r[k]
		}
	}
	return out
}
