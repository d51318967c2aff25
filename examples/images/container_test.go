// Package images_test runs the example image trainer and server the way
// kilnd does: built as OCI archives by examples/tabular/images, imported
// into a real (private) containerd, trained on a synthetic imagedata batch
// in a container, and served from a container over its unix socket.
package images_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/examples/images/model"
	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/runtime"
)

// TestExamplesInContainers imports every archive `make images` writes, then
// trains the image trainer on one seed's images and scores another seed's
// through the image server in both protocols.
func TestExamplesInContainers(t *testing.T) {
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but KILN_TEST_CONTAINERD is not set: run through .ci/with-containerd")
		}
		t.Skip("KILN_TEST_CONTAINERD is not set: run through .ci/with-containerd, which starts a private containerd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ki") // short: the serving socket's path must fit 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	r, err := runtime.New(addr, "kiln-test-examples", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	built, err := images.BuildAll(ctx, filepath.Join(dir, "img"), images.Examples)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range built {
		f, err := os.Open(b.File)
		if err != nil {
			t.Fatal(err)
		}
		ims, err := r.Import(ctx, f, nil)
		_ = f.Close()
		if err != nil {
			t.Fatalf("import %s: %v", b.File, err)
		}
		if d, err := r.Resolve(ctx, b.Ref); err != nil || d != b.Digest {
			t.Errorf("%s: resolves to %s, %v after import (%+v); want %s", b.Ref, d, err, ims, b.Digest)
		}
	}

	classes := []string{"bolt", "nut", "washer", "gear"}
	channel := filepath.Join(dir, "train")
	if _, err := imagedata.Write(channel, classes, 50, 1, imagedata.Options{JPEG: true}); err != nil {
		t.Fatal(err)
	}
	tid := fmt.Sprintf("t-imgtrain-%d", time.Now().UnixNano()%1e9)
	removeAfter(t, r, tid)
	ws := filepath.Join(dir, "ws")
	task, err := r.Train(ctx, runtime.TrainSpec{
		Common: runtime.Common{ID: tid, Image: images.ImageTrainerRef, Pipeline: "parts",
			LogFile:   filepath.Join(dir, "train.log"),
			Resources: runtime.Resources{MemoryBytes: 256 << 20, CPUs: 1, Pids: 64}},
		Workspace: ws, Channels: map[string]string{"train": channel},
		Hyperparameters: map[string]string{"size": "8"},
		RunID:           "parts/r1", Dataset: "parts/d1", Timeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	exit, err := task.Wait(ctx)
	var log bytes.Buffer
	_ = runtime.ReadLog(task.LogFile(), &log)
	if err != nil || !exit.OK() {
		t.Fatalf("training: %+v, %v; log:\n%s", exit, err, log.String())
	}
	_ = task.Delete(ctx)
	var met map[string]float64
	if b, err := os.ReadFile(filepath.Join(ws, "output", "metrics.json")); err != nil || json.Unmarshal(b, &met) != nil {
		t.Fatalf("metrics.json: %v (log: %s)", err, log.String())
	}
	if met["train_images"] != 200 || met["train_accuracy"] < 0.95 {
		t.Errorf("metrics.json = %v", met)
	}

	sid := fmt.Sprintf("t-imgserve-%d", time.Now().UnixNano()%1e9)
	removeAfter(t, r, sid)
	srv, err := r.Serve(ctx, runtime.ServeSpec{Common: runtime.Common{ID: sid, Image: images.ImageServerRef,
		Pipeline: "parts", LogFile: filepath.Join(dir, "serve.log")},
		ModelDir: filepath.Join(ws, "model"), SocketDir: filepath.Join(dir, "s"), ModelID: "parts/m1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitReady(ctx, "/ping"); err != nil {
		t.Fatal(err)
	}
	hc := srv.HTTPClient()
	hold, err := imagedata.Generate(classes, 10, 2, imagedata.Options{Size: 24, JPEG: true})
	if err != nil {
		t.Fatal(err)
	}
	var got, want, b64 []string
	for _, f := range hold {
		got = append(got, strings.TrimSuffix(post(t, hc, "/invocations", model.ContentTypeImage, f.Data), "\n"))
		want = append(want, f.Label)
		b64 = append(b64, base64.StdEncoding.EncodeToString(f.Data))
	}
	ok := 0
	for i := range got {
		if got[i] == want[i] {
			ok++
		}
	}
	acc := float64(ok) / float64(len(want))
	t.Logf("trainer: %s; accuracy through the serving container on %d unseen images: %.3f",
		strings.TrimSpace(log.String()), len(want), acc)
	if acc < 0.95 {
		t.Errorf("accuracy through the serving container on %d unseen images: %.3f; want >= 0.95", len(want), acc)
	}
	data, _ := json.Marshal(b64)
	req, _ := json.Marshal(model.InferRequest{Inputs: []model.InferTensor{{Name: "input", Datatype: "BYTES",
		Shape: []int{len(b64)}, Data: data}}})
	var ir model.InferResponse
	if err := json.Unmarshal([]byte(post(t, hc, "/v2/models/parts/infer", "application/json", req)), &ir); err != nil {
		t.Fatal(err)
	}
	if len(ir.Outputs) != 1 || !slices.Equal(ir.Outputs[0].Data, got) {
		t.Errorf("v2 answer %+v; want the /invocations labels %v", ir, got)
	}
}

func removeAfter(t *testing.T, r *runtime.Runtime, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := r.Remove(ctx, id); err != nil {
			t.Logf("cleanup %s: %v", id, err)
		}
	})
}

func post(t *testing.T, hc *http.Client, path, ct string, body []byte) string {
	t.Helper()
	resp, err := hc.Post("http://task"+path, ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}
