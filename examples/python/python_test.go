// The Python trainer and server of docs/container-contract.md, run for
// real: the trainer on the example data in a /tmp copy of SageMaker's
// layout, the server on a unix socket as kilnd starts it, asked through
// daemon/contract.Predict, the same client kilnd's evaluator uses.
package python_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/contract"
)

// python3 finds the interpreter, or skips (failing under KILN_REQUIRE_REAL=1).
func python3(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("python3 not found, and KILN_REQUIRE_REAL=1 forbids skipping the Python examples")
		}
		t.Skip("python3 not found: the Python examples are not run (apt-get install python3)")
	}
	// A version manager's shim (pyenv) costs a second a start; run the
	// interpreter it stands for.
	if out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		py = strings.TrimSpace(string(out))
	}
	return py
}

// run runs a script with a private bytecode cache, so the test writes
// nothing into the source tree.
func run(t *testing.T, ctx context.Context, py string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = append(os.Environ(), append(env, "PYTHONPYCACHEPREFIX="+t.TempDir())...)
	return cmd
}

func TestScriptsCompile(t *testing.T) {
	py := python3(t)
	out, err := run(t, context.Background(), py, nil, "-m", "py_compile", "trainer.py", "server.py").CombinedOutput()
	if err != nil {
		t.Fatalf("py_compile: %v\n%s", err, out)
	}
}

// The scripts in the page are the files here, so the page cannot drift.
func TestScriptsAreThePage(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "..", "docs", "container-contract.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"trainer.py", "server.py"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(page), "```python\n"+string(src)+"```\n") {
			t.Errorf("docs/container-contract.md does not hold examples/python/%s as it is (a ```python block)", f)
		}
	}
}

// readCSV reads the example data: header, then rows with the label last.
func readCSV(t *testing.T) (header []string, rows [][]string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "tabular", "data", "breast_cancer.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return all[0], all[1:]
}

func writeCSV(t *testing.T, path string, rows [][]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTrainAndServe(t *testing.T) {
	py := python3(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A short root: the socket path must fit in 108 bytes.
	root, err := os.MkdirTemp("", "kpy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ml := filepath.Join(root, "ml")

	header, rows := readCSV(t)
	label := len(header) - 1
	train, holdout := rows[:400], rows[400:]
	// Two files in the channel, as a window of two versions links them.
	writeCSV(t, filepath.Join(ml, "input", "data", "train", "cancer-d1.csv"), append([][]string{header}, train[:200]...))
	writeCSV(t, filepath.Join(ml, "input", "data", "train", "cancer-d2.csv"), append([][]string{header}, train[200:]...))
	hp, _ := json.Marshal(map[string]string{"label": header[label]})
	if err := os.MkdirAll(filepath.Join(ml, "input", "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ml, "input", "config", "hyperparameters.json"), hp, 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := run(t, ctx, py, nil, "trainer.py", "train", "--ml-root", ml).CombinedOutput()
	if err != nil {
		t.Fatalf("trainer.py train: %v\n%s", err, out)
	}
	var metrics map[string]float64
	b, err := os.ReadFile(filepath.Join(ml, "output", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &metrics); err != nil || metrics["train_rows"] != 400 || metrics["train_accuracy"] < 0.8 {
		t.Errorf("metrics.json = %s (%v); want train_rows 400 and train_accuracy >= 0.8", b, err)
	}

	sock := filepath.Join(root, "serve.sock")
	srv := run(t, context.Background(), py, []string{"KILN_SOCKET=" + sock}, "server.py", "serve", "--model-dir", filepath.Join(ml, "model"))
	var log strings.Builder
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Kill()
		}
	})
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	// Ready is GET /ping answering 200, as kilnd waits for it.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get("http://kiln/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server.py not ready after 20s: %v\n%s", err, log.String())
		}
	}

	features := make([][]string, len(holdout))
	for i, r := range holdout {
		features[i] = r[:label]
	}
	preds, err := contract.Predict(ctx, dial, contract.ProtocolSageMaker, "cancer", features)
	if err != nil {
		t.Fatalf("Predict: %v\n%s", err, log.String())
	}
	if len(preds) != len(holdout) {
		t.Fatalf("%d predictions for %d rows", len(preds), len(holdout))
	}
	correct := 0
	for i, p := range preds {
		if p == holdout[i][label] {
			correct++
		}
	}
	acc := float64(correct) / float64(len(holdout))
	t.Logf("holdout accuracy of the Python example: %.3f on %d rows never trained on", acc, len(holdout))
	if acc < 0.85 {
		t.Errorf("holdout accuracy %.3f; the nearest-centroid example should reach 0.85 on this data", acc)
	}
	// A row of the wrong width is the client's mistake: 400 naming the row.
	if _, err := contract.Predict(ctx, dial, contract.ProtocolSageMaker, "cancer", [][]string{features[0][:3]}); err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Errorf("a 3-value row: err = %v; want a 400 naming row 1", err)
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("server.py after SIGTERM: %v; want exit 0\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("server.py still running 10s after SIGTERM\n%s", log.String())
	}
}

// A trainer that cannot train says why in /opt/ml/output/failure and exits
// non-zero: kilnd records that line as the run's reason.
func TestTrainFailureIsWritten(t *testing.T) {
	py := python3(t)
	ml := t.TempDir()
	writeCSV(t, filepath.Join(ml, "input", "data", "train", "x.csv"), [][]string{{"a", "b"}, {"1", "x"}})
	if err := os.MkdirAll(filepath.Join(ml, "input", "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ml, "input", "config", "hyperparameters.json"), []byte(`{"label": "condition"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, context.Background(), py, nil, "trainer.py", "train", "--ml-root", ml).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("trainer.py on a CSV without the label column: %v; want exit 1\n%s", err, out)
	}
	failure, err := os.ReadFile(filepath.Join(ml, "output", "failure"))
	if err != nil || !strings.Contains(string(failure), "no label column 'condition'") {
		t.Errorf("output/failure = %q, %v; want the missing label column named", failure, err)
	}
}
