package main

import (
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
)

// fakeKilnd serves the routes `kiln predict` calls on a real unix socket:
// the pipeline (its spec says the protocol), the live model, its run and
// its newest dataset (the columns), and predict (a fixed answer, after
// checking the rows arrived as flow,temp).
func fakeKilnd(t *testing.T, protocol, answer string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pipelines/pumps", func(w http.ResponseWriter, _ *http.Request) {
		spec := map[string]any{"pipeline": "pumps"}
		if protocol != "" {
			spec["serve"] = map[string]any{"protocol": protocol}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"pipeline": "pumps", "spec": spec})
	})
	// The live model's run trained on pumps/d1, whose columns are flow,
	// state (the label) and temp: the features are flow,temp.
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"id":"pumps/m1","pipeline":"pumps","state":"standby","run":"pumps/r0"},{"id":"pumps/m2","pipeline":"pumps","state":"live","run":"pumps/r1"}]`)
	})
	mux.HandleFunc("GET /v1/runs/pumps/r1", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"id":"pumps/r1","datasets":["pumps/d0","pumps/d1"]}`)
	})
	mux.HandleFunc("GET /v1/datasets/pumps/d1", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"id":"pumps/d1","manifest":{"label":"state","schema":[{"name":"flow","type":"number"},{"name":"state","type":"string"},{"name":"temp","type":"number"}]}}`)
	})
	mux.HandleFunc("POST /v1/pipelines/pumps/predict", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if string(body) != "2.1,71.5\n0.2,41\n" {
			http.Error(w, "unexpected rows "+string(body), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, answer)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

func TestPredictJSON(t *testing.T) {
	const v2Answer = `{"model_name":"pumps","outputs":[{"name":"label","shape":[2],"datatype":"BYTES","data":["failing","normal"]}]}`
	tests := []struct {
		name, specProtocol, flag, answer string
		want                             []string
		wantErr                          string
	}{
		{"sagemaker from the spec", "sagemaker", "", "failing\r\nnormal\n", []string{"failing", "normal"}, ""},
		{"spec without serve: sagemaker", "", "", "failing\nnormal", []string{"failing", "normal"}, ""},
		{"v2 from the spec", "v2", "", v2Answer, []string{"failing", "normal"}, ""},
		{"flag overrides the spec", "sagemaker", "v2", v2Answer, []string{"failing", "normal"}, ""},
		{"no predictions", "sagemaker", "", "", []string{}, ""},
		{"v2 answer without label", "v2", "", `{"outputs":[]}`, nil, `pipeline pumps: v2 answer has no output "label"`},
		{"unknown protocol flag", "v2", "grpc", "x\n", nil, `--protocol "grpc": want sagemaker or v2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := fakeKilnd(t, tt.specProtocol, tt.answer)
			out, err := os.CreateTemp(t.TempDir(), "out")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = out.Close() }()
			withStdin(t, "2.1,71.5\n0.2,41\n")
			e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: "json"}, out: out}
			err = predictCmd{Pipeline: "pumps", Protocol: tt.flag}.Run(e)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Run = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			printed, err := os.ReadFile(out.Name())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if err := json.Unmarshal(printed, &got); err != nil || !slices.Equal(got, tt.want) || got == nil {
				t.Errorf("printed %q (%v); want the JSON array %q", printed, err, tt.want)
			}
		})
	}
}

// TestPredictTable: without -o json the answer is copied as it comes.
func TestPredictTable(t *testing.T) {
	sock := fakeKilnd(t, "sagemaker", "failing\r\nnormal\n")
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = out.Close() }()
	withStdin(t, "2.1,71.5\n0.2,41\n")
	e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: "table"}, out: out}
	if err := (predictCmd{Pipeline: "pumps"}).Run(e); err != nil {
		t.Fatal(err)
	}
	if printed, _ := os.ReadFile(out.Name()); string(printed) != "failing\r\nnormal\n" {
		t.Errorf("printed %q, want the answer unchanged", printed)
	}
}

// TestPredictEmptyInput: no rows is an error before anything is sent, with
// one line saying what to give; blank lines before the rows are dropped.
func TestPredictEmptyInput(t *testing.T) {
	sock := fakeKilnd(t, "sagemaker", "failing\nnormal\n")
	for _, in := range []string{"", "\n", "\r\n\n"} {
		withStdin(t, in)
		e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: "table"}, out: os.Stdout}
		err := (predictCmd{Pipeline: "pumps"}).Run(e)
		if err == nil || !strings.HasPrefix(err.Error(), "no rows on stdin") || strings.Contains(err.Error(), "\n") {
			t.Errorf("predict with stdin %q = %v; want a one-line no-rows error", in, err)
		}
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = out.Close() }()
	withStdin(t, "\n2.1,71.5\n0.2,41\n")
	e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: "table"}, out: out}
	if err := (predictCmd{Pipeline: "pumps"}).Run(e); err != nil {
		t.Fatalf("predict after a blank line: %v", err)
	}
}

// withStdin makes os.Stdin a file holding s for the rest of the test.
func withStdin(t *testing.T, s string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, strings.NewReader(s)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = f
	t.Cleanup(func() { os.Stdin = old; _ = f.Close() })
}

// TestPredictHeader: a header is matched by name, whatever the order, with
// the label and unknown columns left out; a missing feature is one line
// naming it; a bad row after the header names its line.
func TestPredictHeader(t *testing.T) {
	sock := fakeKilnd(t, "sagemaker", "failing\nnormal\n")
	for _, tc := range []struct{ in, wantErr string }{
		{"flow,temp\n2.1,71.5\n0.2,41\n", ""},
		{"temp,flow\n71.5,2.1\n41,0.2\n", ""},
		{"\ufeffstate,temp,id,flow\r\nfailing,71.5,a,2.1\r\nnormal,41,b,0.2\r\n", ""},
		{"2.1,71.5\n0.2,41\n", ""}, // no header: as it came
		{"flow,state\n2.1,failing\n", "stdin line 1: the header lacks column temp of pipeline pumps (its model takes flow,temp); add them, or send rows without a header in that order"},
		{"id,state\n1,failing\n", "stdin line 1: the header lacks columns flow,temp of pipeline pumps (its model takes flow,temp); add them, or send rows without a header in that order"},
		{"temp,flow,temp\n1,2,3\n", `stdin line 1: column "temp" appears twice in the header`},
		{"temp,flow\n71.5,2.1\n41\n", "stdin: record on line 3: wrong number of fields"},
	} {
		withStdin(t, tc.in)
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: "json"}, out: out}
		err = (predictCmd{Pipeline: "pumps"}).Run(e)
		printed, _ := os.ReadFile(out.Name())
		_ = out.Close()
		switch {
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("predict %q = %v; want %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || string(printed) != "[\n  \"failing\",\n  \"normal\"\n]\n"):
			t.Errorf("predict %q = %v, printed %q; want the two predictions", tc.in, err, printed)
		}
	}
}
