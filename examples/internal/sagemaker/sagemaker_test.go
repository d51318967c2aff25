package sagemaker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLayout(t *testing.T) {
	ml := Layout{Root: t.TempDir()}
	hp, err := ml.Hyperparameters()
	if err != nil || len(hp) != 0 {
		t.Fatalf("no hyperparameters.json: %v, %v; want none, no error", hp, err)
	}
	cfg := filepath.Join(ml.Root, "input", "config", "hyperparameters.json")
	if err := WriteJSON(cfg, map[string]string{"epochs": "3"}); err != nil {
		t.Fatal(err)
	}
	if hp, err = ml.Hyperparameters(); err != nil || hp["epochs"] != "3" {
		t.Fatalf("Hyperparameters = %v, %v; want epochs=3", hp, err)
	}
	if err := os.WriteFile(cfg, []byte(`{"epochs": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.Hyperparameters(); err == nil || !strings.HasPrefix(err.Error(), "hyperparameters.json: ") {
		t.Errorf("a number where SageMaker writes strings: %v; want an error naming hyperparameters.json", err)
	}
	if got, want := ml.Channel("train"), filepath.Join(ml.Root, "input", "data", "train"); got != want {
		t.Errorf("Channel = %s; want %s", got, want)
	}

	ml.Fail(errors.New("no rows")) // output/ does not exist yet: Fail makes it
	b, err := os.ReadFile(filepath.Join(ml.Root, "output", "failure"))
	if err != nil || string(b) != "no rows\n" {
		t.Errorf("failure = %q, %v; want %q", b, err, "no rows\n")
	}
}

// TestServeSocket serves on a real unix socket named by KILN_SOCKET (a
// stale file there goes first) and returns nil once ctx ends, after the
// request in flight is answered.
func TestServeSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "sm") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KILN_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		time.Sleep(200 * time.Millisecond) // still running when ctx ends
		_, _ = io.WriteString(w, "late but answered\n")
	})
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, h, "test server") }()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	got := make(chan string, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := hc.Get("http://server/")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				got <- string(b)
				return
			}
			if time.Now().After(deadline) {
				got <- "no answer: " + err.Error()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("Serve returned before a request: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("no request reached the handler in 10s: %s", <-got)
	}
	cancel()
	if s := <-got; s != "late but answered\n" {
		t.Errorf("in-flight request got %q; want it drained", s)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after ctx ended: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10s after ctx ended")
	}
}

func TestModelName(t *testing.T) {
	t.Setenv("KILN_PIPELINE", "")
	if got := ModelName(); got != "model" {
		t.Errorf("no KILN_PIPELINE: %q; want model", got)
	}
	t.Setenv("KILN_PIPELINE", "pumps")
	if got := ModelName(); got != "pumps" {
		t.Errorf("KILN_PIPELINE=pumps: %q", got)
	}
}
