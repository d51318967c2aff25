package pipeline

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/examples/tabular/model"
)

// handlerBackend serves an http.Handler on a unix socket, as a serving
// container would.
type handlerBackend struct{ sock string }

func (b handlerBackend) Model() string { return "pumps/m1" }

func (b handlerBackend) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", b.sock)
}

// TestEvaluatorSpeaksTheGoldenContract sends the golden file's rows through
// the example server with the evaluator's own client, in both protocols,
// and expects the golden answers: the evaluator and the example server
// agree on the container contract byte for byte.
func TestEvaluatorSpeaksTheGoldenContract(t *testing.T) {
	raw, err := os.ReadFile("../../examples/tabular/testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Pipeline string          `json:"pipeline"`
		Model    json.RawMessage `json:"model"`
		Cases    []struct {
			Name, Path, Request, Response string
			Status                        int
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	modelFile := filepath.Join(dir, "model.json")
	if err := os.WriteFile(modelFile, golden.Model, 0o644); err != nil {
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
	b := handlerBackend{sock}

	checked := 0
	for _, c := range golden.Cases {
		if c.Status != http.StatusOK || c.Request == "" {
			continue
		}
		var rows [][]string
		var want []string
		switch {
		case c.Path == "/invocations":
			for line := range strings.SplitSeq(strings.TrimSpace(strings.ReplaceAll(c.Request, "\r\n", "\n")), "\n") {
				rows = append(rows, strings.Split(line, ","))
			}
			want = strings.Split(strings.TrimSpace(c.Response), "\n")
			got, err := Predict(context.Background(), b, "sagemaker", golden.Pipeline, rows)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("%s: Predict(sagemaker) = %v, %v; want %v", c.Name, got, err, want)
			}
			checked++
		case strings.HasSuffix(c.Path, "/infer") && strings.Contains(c.Request, `"shape":[3,2]`):
			var req struct {
				Inputs []struct {
					Data []float64 `json:"data"`
				} `json:"inputs"`
			}
			var resp struct {
				Outputs []struct {
					Data []string `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal([]byte(c.Request), &req); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(c.Response), &resp); err != nil {
				t.Fatal(err)
			}
			d := req.Inputs[0].Data
			for i := 0; i+1 < len(d); i += 2 {
				rows = append(rows, []string{ftoa(d[i]), ftoa(d[i+1])})
			}
			got, err := Predict(context.Background(), b, "v2", golden.Pipeline, rows)
			if err != nil || !slices.Equal(got, resp.Outputs[0].Data) {
				t.Errorf("%s: Predict(v2) = %v, %v; want %v", c.Name, got, err, resp.Outputs[0].Data)
			}
			checked++
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d golden cases; the golden file changed shape", checked)
	}
}

func ftoa(f float64) string { return strings.TrimRight(strings.TrimRight(jsonNumber(f), "0"), ".") }

func jsonNumber(f float64) string {
	b, _ := json.Marshal(f)
	s := string(b)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}
