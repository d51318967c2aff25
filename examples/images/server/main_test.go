package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/examples/images/model"
	"github.com/kiln-edge/kiln/examples/internal/goldentest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.json's responses from the server")

const goldenPath = "../testdata/golden.json"

// readGolden reads examples/images/testdata/golden.json: the image serving
// contract pinned byte for byte for the example image server and kiln's
// contract package. A binary request body (an image) is request_base64.
func readGolden(t *testing.T) goldentest.File[*model.Model] {
	t.Helper()
	g := goldentest.Read[*model.Model](t, goldenPath)
	if err := g.Model.Check(); err != nil {
		t.Fatalf("golden model: %v", err)
	}
	return g
}

func TestGolden(t *testing.T) {
	g := readGolden(t)
	goldentest.Replay(t, goldenPath, g, model.NewHandler(g.Model, g.Pipeline), *update)
}

// TestGoldenCoversContract keeps golden.json honest: it must hold a
// successful and a failing case of each protocol, with real PNG and JPEG
// bodies, so that a consumer reading it checks what matters.
func TestGoldenCoversContract(t *testing.T) {
	g := readGolden(t)
	seen := map[string]bool{}
	for _, c := range g.Cases {
		body, err := c.Body()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.Path == "/invocations" && c.ContentType == model.ContentTypeImage && c.Status == 200:
			if _, err := model.Decode(body); err != nil {
				t.Errorf("%s: request is not an image: %v", c.Name, err)
			}
			seen["sagemaker ok "+string(body[1:4])] = true // "PNG" or a JPEG marker
		case c.Path == "/invocations" && c.Status == 400:
			seen["sagemaker bad"] = true
		case c.Path == "/v2/models/"+g.Pipeline+"/infer" && c.Status == 200:
			seen["v2 ok"] = true
		case c.Path == "/v2/models/"+g.Pipeline+"/infer" && c.Status == 400:
			seen["v2 bad"] = true
		}
	}
	for _, want := range []string{"sagemaker ok PNG", "sagemaker bad", "v2 ok", "v2 bad"} {
		if !seen[want] {
			t.Errorf("golden.json has no %q case (has %v)", want, seen)
		}
	}
	jpeg := false
	for k := range seen {
		jpeg = jpeg || strings.HasPrefix(k, "sagemaker ok \xd8\xff")
	}
	if !jpeg {
		t.Errorf("golden.json has no successful JPEG /invocations case (has %v)", seen)
	}
}

// TestServeUnixSocket runs the real binary on $KILN_SOCKET, as kilnd does:
// it answers over the socket and exits 0 on SIGTERM.
func TestServeUnixSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server binary")
	}
	g := readGolden(t)
	dir, err := os.MkdirTemp("", "kis") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := filepath.Join(dir, "image-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mb, _ := json.Marshal(g.Model)
	if err := os.WriteFile(filepath.Join(dir, "model.json"), mb, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(bin, "-model-dir", dir, "serve")
	cmd.Env = append(os.Environ(), "KILN_SOCKET="+sock, "KILN_PIPELINE="+g.Pipeline)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	hc := unixClient(sock)
	var c goldentest.Case
	for _, gc := range g.Cases {
		if gc.Path == "/invocations" && gc.Status == 200 {
			c = gc
			break
		}
	}
	body, _ := c.Body()
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for {
		resp, err := hc.Post("http://server/invocations", model.ContentTypeImage, bytes.NewReader(body))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			got = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s in 10s: %v; output:\n%s", sock, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != c.Response {
		t.Errorf("over the socket: %q; want %q", got, c.Response)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; output:\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

// TestProtocolsAgree trains the example model on synthetic images and
// sends unseen ones through both protocols: the answers must be right and
// the same.
func TestProtocolsAgree(t *testing.T) {
	classes := []string{"bolt", "nut", "washer"}
	tr, err := imagedata.Generate(classes, 30, 1, imagedata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var samples []model.Sample
	for _, f := range tr {
		img, err := model.Decode(f.Data)
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, model.Sample{Label: f.Label, X: model.Features(img, 8)})
	}
	m, err := model.Train(samples, 8)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(model.NewHandler(m, "parts"))
	defer srv.Close()
	hold, err := imagedata.Generate(classes, 10, 2, imagedata.Options{JPEG: true, Size: 24})
	if err != nil {
		t.Fatal(err)
	}
	var sm, want, b64 []string
	for _, f := range hold {
		resp, err := http.Post(srv.URL+"/invocations", model.ContentTypeImage, bytes.NewReader(f.Data))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", f.Path, resp.StatusCode, b)
		}
		sm = append(sm, strings.TrimSuffix(string(b), "\n"))
		want = append(want, f.Label)
		b64 = append(b64, base64.StdEncoding.EncodeToString(f.Data))
	}
	data, _ := json.Marshal(b64)
	req, _ := json.Marshal(model.InferRequest{Inputs: []model.InferTensor{{Name: "input", Datatype: "BYTES",
		Shape: []int{len(hold)}, Data: data}}})
	resp, err := http.Post(srv.URL+"/v2/models/parts/infer", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	var ir model.InferResponse
	if err := json.NewDecoder(resp.Body).Decode(&ir); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if len(ir.Outputs) != 1 || !cmp.Equal(ir.Outputs[0].Data, sm) {
		t.Errorf("v2 answers %+v differ from /invocations %v", ir, sm)
	}
	ok := 0
	for i := range want {
		if sm[i] == want[i] {
			ok++
		}
	}
	if acc := float64(ok) / float64(len(want)); acc < 0.95 {
		t.Errorf("accuracy on %d unseen images %.3f; want >= 0.95", len(want), acc)
	}
}
