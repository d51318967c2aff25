package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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

// fakeKilndFormat is fakeKilnd for a pipeline of data.format format: its
// live model was trained on flow,temp (label state), and predict answers
// with answer(content type, body), recording the most requests in flight.
type fakePredict struct {
	mu                    sync.Mutex
	inFlight, maxInFlight int
	requests              int
}

func fakeKilndFormat(t *testing.T, protocol, format string, answer func(ctype, body string) (int, string)) (string, *fakePredict) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePredict{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pipelines/pumps", func(w http.ResponseWriter, _ *http.Request) {
		spec := map[string]any{"pipeline": "pumps", "data": map[string]any{"format": format}, "serve": map[string]any{"protocol": protocol}}
		_ = json.NewEncoder(w).Encode(map[string]any{"pipeline": "pumps", "spec": spec})
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"id":"pumps/m2","pipeline":"pumps","state":"live","run":"pumps/r1"}]`)
	})
	mux.HandleFunc("GET /v1/runs/pumps/r1", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"id":"pumps/r1","datasets":["pumps/d1"]}`)
	})
	mux.HandleFunc("GET /v1/datasets/pumps/d1", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"id":"pumps/d1","manifest":{"label":"state","schema":[{"name":"flow","type":"number"},{"name":"state","type":"string"},{"name":"temp","type":"number"}]}}`)
	})
	mux.HandleFunc("POST /v1/pipelines/pumps/predict", func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		fp.requests++
		fp.inFlight++
		fp.maxInFlight = max(fp.maxInFlight, fp.inFlight)
		fp.mu.Unlock()
		defer func() { fp.mu.Lock(); fp.inFlight--; fp.mu.Unlock() }()
		time.Sleep(5 * time.Millisecond) // requests in flight overlap
		body, _ := io.ReadAll(r.Body)
		status, text := answer(r.Header.Get("Content-Type"), string(body))
		if status != http.StatusOK {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": text})
			return
		}
		_, _ = io.WriteString(w, text)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock, fp
}

// writeImage writes a small PNG or JPEG under dir and returns its path.
func writeImage(t *testing.T, dir, name string, gray uint8) string {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 3, 2))
	for i := range img.Pix {
		img.Pix[i] = gray
	}
	var b bytes.Buffer
	var err error
	if strings.HasSuffix(name, ".png") {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runPredict runs kiln predict with stdin and output format out, and
// returns what it printed.
func runPredict(t *testing.T, sock, output, stdin string, c predictCmd) (string, error) {
	t.Helper()
	withStdin(t, stdin)
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	e := &cmdEnv{ctx: context.Background(), g: globals{Socket: sock, Output: output}, out: f}
	err = c.Run(e)
	printed, _ := os.ReadFile(f.Name())
	return string(printed), err
}

func TestPredictImages(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i := range 9 {
		name := fmt.Sprintf("img%d.png", i)
		if i%3 == 1 {
			name = fmt.Sprintf("img%d.jpeg", i)
		}
		files = append(files, writeImage(t, dir, name, uint8(20*i)))
	}
	// The answer says the image's kind and size: the prediction must come
	// back next to its own file.
	kindOf := func(body string) string {
		if strings.HasPrefix(body, "\x89PNG") {
			return "png"
		}
		return "jpeg"
	}
	sage := func(ctype, body string) (int, string) {
		if ctype != "application/x-image" {
			return http.StatusUnsupportedMediaType, "want an image, got " + ctype
		}
		return http.StatusOK, fmt.Sprintf("%s-%d\n", kindOf(body), len(body))
	}
	want := make([]string, len(files))
	for i, f := range files {
		b, _ := os.ReadFile(f)
		want[i] = fmt.Sprintf("%s-%d", kindOf(string(b)), len(b))
	}

	sock, fp := fakeKilndFormat(t, "sagemaker", "images", sage)
	printed, err := runPredict(t, sock, "json", "", predictCmd{Pipeline: "pumps", Files: files})
	var got []string
	if err != nil || json.Unmarshal([]byte(printed), &got) != nil || !slices.Equal(got, want) {
		t.Fatalf("predict -o json = %v, printed %q; want %q", err, printed, want)
	}
	if fp.requests != len(files) || fp.maxInFlight < 2 || fp.maxInFlight > predictConcurrency {
		t.Errorf("%d requests, at most %d in flight; want %d, 2..%d", fp.requests, fp.maxInFlight, len(files), predictConcurrency)
	}

	printed, err = runPredict(t, sock, "table", "", predictCmd{Pipeline: "pumps", Files: files[:2]})
	lines := strings.Split(strings.TrimSuffix(printed, "\n"), "\n")
	if err != nil || len(lines) != 2 || !slices.Equal(strings.Fields(lines[0]), []string{files[0], want[0]}) ||
		!slices.Equal(strings.Fields(lines[1]), []string{files[1], want[1]}) {
		t.Errorf("predict table = %v, printed %q; want a line of file and prediction an image", err, printed)
	}

	// v2: kilnd answers with the model's JSON; --protocol is not needed.
	v2 := func(ctype, body string) (int, string) {
		_, text := sage(ctype, body)
		return http.StatusOK, `{"model_name":"pumps","outputs":[{"name":"label","shape":[1],"datatype":"BYTES","data":["` + strings.TrimSpace(text) + `"]}]}`
	}
	sock, _ = fakeKilndFormat(t, "v2", "images", v2)
	printed, err = runPredict(t, sock, "json", "", predictCmd{Pipeline: "pumps", Files: files})
	if err != nil || json.Unmarshal([]byte(printed), &got) != nil || !slices.Equal(got, want) {
		t.Fatalf("v2 predict -o json = %v, printed %q; want %q", err, printed, want)
	}
}

func TestPredictImagesErrors(t *testing.T) {
	dir := t.TempDir()
	cat, dog := writeImage(t, dir, "cat.png", 1), writeImage(t, dir, "dog.jpg", 2)
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("a,b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refuseDog := func(_, body string) (int, string) {
		if strings.HasPrefix(body, "\xff\xd8") {
			return http.StatusBadRequest, "the model cannot read it"
		}
		return http.StatusOK, "cat\n"
	}
	images, _ := fakeKilndFormat(t, "sagemaker", "images", refuseDog)
	tabular, _ := fakeKilndFormat(t, "sagemaker", "csv", refuseDog)
	for _, tc := range []struct {
		name, sock string
		files      []string
		want       string
	}{
		{"no files", images, nil, "pipeline pumps takes images: give the files (kiln predict pumps image.png [image2.jpg ...])"},
		{"not an image", images, []string{cat, notes}, notes + ": not a PNG or JPEG file; pipeline pumps takes images"},
		{"missing file", images, []string{filepath.Join(dir, "none.png")}, "open " + filepath.Join(dir, "none.png") + ": no such file or directory"},
		{"refused", images, []string{cat, dog, cat}, dog + ": pipeline pumps: the model cannot read it"},
		{"image to a csv pipeline", tabular, []string{dog}, dog + " is an image, but pipeline pumps takes csv rows (its data.format); images go to an images pipeline"},
		{"two csv files", tabular, []string{notes, notes}, "pipeline pumps takes csv rows from one file or stdin; got 2 files"},
	} {
		_, err := runPredict(t, tc.sock, "json", "", predictCmd{Pipeline: "pumps", Files: tc.files})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: predict = %v; want %q", tc.name, err, tc.want)
		}
	}
}

// TestPredictJSONL: JSON Lines rows lose their label and other keys and go
// as JSON Lines (sagemaker) or CSV rows in training order (v2, which kilnd
// turns into its tensor); a missing key names its line.
func TestPredictJSONL(t *testing.T) {
	const in = `{"temp":71.5,"state":"failing","flow":2.10,"id":"a"}` + "\n\n" + `{"flow":0.2,"temp":41}`
	expect := func(wantCtype, wantBody string) func(ctype, body string) (int, string) {
		return func(ctype, body string) (int, string) {
			if ctype != wantCtype || body != wantBody {
				return http.StatusBadRequest, fmt.Sprintf("got %s %q", ctype, body)
			}
			return http.StatusOK, "failing\nnormal\n"
		}
	}
	sage, _ := fakeKilndFormat(t, "sagemaker", "jsonl", expect("application/jsonlines", `{"flow":2.1,"temp":71.5}`+"\n"+`{"flow":0.2,"temp":41}`+"\n"))
	v2, _ := fakeKilndFormat(t, "v2", "jsonl", expect("text/csv", "2.10,71.5\n0.2,41\n")) // kilnd parses the numbers
	file := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(file, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sock, output, stdin string
		files                     []string
		want                      string
	}{
		{"sagemaker", sage, "table", in, nil, "failing\nnormal\n"},
		{"sagemaker from a file", sage, "table", "", []string{file}, "failing\nnormal\n"},
		{"v2 gets rows in training order", v2, "table", in, nil, "failing\nnormal\n"},
		{"- is stdin", v2, "table", in, []string{"-"}, "failing\nnormal\n"},
	} {
		printed, err := runPredict(t, tc.sock, tc.output, tc.stdin, predictCmd{Pipeline: "pumps", Files: tc.files, Protocol: "sagemaker"})
		if err != nil || printed != tc.want {
			t.Errorf("%s: predict = %v, printed %q; want %q", tc.name, err, printed, tc.want)
		}
	}
	for _, tc := range []struct{ stdin, want string }{
		{`{"flow":1,"temp":2}` + "\n" + `{"flow":1}`, `stdin line 2: no key "temp" (pipeline's model takes flow,temp)`},
		{`{"flow":1,"temp":[2]}`, `stdin line 1: key "temp": want a number, string, boolean or null`},
		{`{"flow":1,"temp":2} {}`, `stdin line 1: want one JSON object`},
		{`[1,2]`, `stdin line 1: json: cannot unmarshal array into Go value of type map[string]interface {}`},
		{"\n\n", "no rows in stdin: give JSON Lines, one object per line (kiln predict pumps < rows.jsonl)"},
	} {
		_, err := runPredict(t, sage, "table", tc.stdin, predictCmd{Pipeline: "pumps"})
		if err == nil || err.Error() != tc.want {
			t.Errorf("predict %q = %v; want %q", tc.stdin, err, tc.want)
		}
	}
}

// TestPredictCSVFile: a CSV pipeline reads FILE instead of stdin, and its
// errors name the file.
func TestPredictCSVFile(t *testing.T) {
	sock := fakeKilnd(t, "sagemaker", "failing\nnormal\n")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "rows.csv"), filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(good, []byte("temp,flow\n71.5,2.1\n41,0.2\n"), 0o600)
	_ = os.WriteFile(bad, []byte("temp,flow\n71.5,2.1\n41\n"), 0o600)
	if printed, err := runPredict(t, sock, "table", "", predictCmd{Pipeline: "pumps", Files: []string{good}}); err != nil || printed != "failing\nnormal\n" {
		t.Errorf("predict FILE = %v, printed %q", err, printed)
	}
	if _, err := runPredict(t, sock, "table", "", predictCmd{Pipeline: "pumps", Files: []string{bad}}); err == nil || err.Error() != bad+": record on line 3: wrong number of fields" {
		t.Errorf("predict bad FILE = %v", err)
	}
}
