//go:build cgo

package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/gpu/gputest"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/runtime/ocitar"
)

// TestImagesImportAndList streams an archive through the API socket into a
// real containerd and lists it back.
func TestImagesImportAndList(t *testing.T) {
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but KILN_TEST_CONTAINERD is not set: run through `make test`")
		}
		t.Skip("KILN_TEST_CONTAINERD is not set: run through `make test`, which starts a private containerd")
	}
	td := startTestDaemon(t, shortRoot(t), gputest.New(1, gpus.A100_SXM4_40GB))
	rt, err := runtime.New(addr, "kiln-test-daemon-images", td.d.log)
	if err != nil {
		t.Fatal(err)
	}
	old := td.d.rt
	td.d.rt = rt // before any image request; the daemon reads it per request
	t.Cleanup(func() { _ = rt.Close(); _ = old.Close() })

	img, err := ocitar.Build(ocitar.Spec{Files: []ocitar.File{{Path: "/hello", Data: []byte("hi")}}, Cmd: []string{"/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "kiln.local/daemon-test:1"
	file := filepath.Join(t.TempDir(), "img.tar")
	if err := ocitar.WriteOCI(file, ref, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := ocitar.Digest(img)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := td.client.ImportImages(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if res.Bytes != st.Size() || len(res.Images) != 2 {
		t.Errorf("ImportImages() = %+v; want %d bytes and the tag plus its pin", res, st.Size())
	}
	ims, err := td.client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ims, func(im api.Image) bool { return im.ID == ref && im.Digest == digest && im.State == "tagged" }) ||
		!slices.ContainsFunc(ims, func(im api.Image) bool { return im.ID == digest && im.State == "pinned" }) {
		t.Errorf("Images() = %+v; want %s tagged and pinned at %s", ims, ref, digest)
	}
	if kinds := eventKinds(t, td); !strings.Contains(kinds, "images.imported") {
		t.Errorf("events = %s; want images.imported", kinds)
	}
	if _, err := td.client.ImportImages(ctx, strings.NewReader("not a tar")); err == nil {
		t.Error("ImportImages(garbage) = nil error")
	}
}
