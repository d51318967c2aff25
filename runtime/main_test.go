package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/runtime/ocitar"
)

// testNamespace is this package's own containerd namespace.
const testNamespace = "kiln-test-runtime"

// Archives built once per test binary (when a containerd is there to use them).
var archives struct {
	dir             string
	trainer, server images.Built
	testbox         images.Built // OCI
	testboxDocker   string       // docker save format, tagged testboxDockerRef
	err             error
}

const (
	testboxRef       = "kiln.local/testbox:1"
	testboxDockerRef = "kiln.local/testbox-docker:1"
)

var testboxImage = images.Image{Ref: testboxRef, Package: "github.com/kiln-edge/kiln/runtime/testdata/testbox",
	Binary: "testbox", Cmd: []string{"diag"}, File: "testbox.tar"}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	var dir string
	if os.Getenv("KILN_TEST_CONTAINERD") != "" {
		dir, archives.err = os.MkdirTemp("", "kiln-rt-img-")
		if archives.err == nil {
			archives.dir = dir
			archives.err = buildArchives(dir)
		}
	}
	code := m.Run()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

func buildArchives(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var err error
	if archives.trainer, err = images.Build(ctx, dir, images.Examples[0]); err != nil {
		return err
	}
	if archives.server, err = images.Build(ctx, dir, images.Examples[1]); err != nil {
		return err
	}
	bin, err := images.GoBinary(ctx, testboxImage.Package)
	if err != nil {
		return err
	}
	img, err := ocitar.Build(images.Spec(testboxImage, bin))
	if err != nil {
		return err
	}
	file := filepath.Join(dir, testboxImage.File)
	if err := ocitar.WriteOCI(file, testboxRef, img); err != nil {
		return err
	}
	d, _ := ocitar.Digest(img)
	archives.testbox = images.Built{Ref: testboxRef, File: file, Digest: d}
	archives.testboxDocker = filepath.Join(dir, "testbox-docker.tar")
	return ocitar.WriteDocker(archives.testboxDocker, testboxDockerRef, img)
}

// newTestRuntime connects to the private containerd with this package's
// namespace, and makes sure the example and test images are imported.
func newTestRuntime(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	addr := needContainerd(t)
	if archives.err != nil {
		t.Fatalf("build test images: %v", archives.err)
	}
	r, err := New(addr, testNamespace, slog.New(slog.NewTextHandler(testWriter{t}, nil)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	importOnce(t, r)
	return r
}

var imported bool

func importOnce(t *testing.T, r *Runtime) {
	t.Helper()
	if imported {
		return
	}
	for _, f := range []string{archives.trainer.File, archives.server.File, archives.testbox.File} {
		importFile(t, r, f)
	}
	imported = true
}

func importFile(t *testing.T, r *Runtime, file string) []Image {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ims, err := r.Import(ctx, f, nil)
	if err != nil {
		t.Fatalf("Import(%s) = %v", file, err)
	}
	return ims
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// scratch is a short temp dir (socket paths must fit 108 bytes).
func scratch(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// uniqueID makes a container ID unique to this test run.
func uniqueID(name string) string {
	return fmt.Sprintf("t-%s-%d", name, time.Now().UnixNano()%1e9)
}

// cleanupTask removes a task's container at the end of the test.
func cleanupTask(t *testing.T, r *Runtime, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := r.Remove(ctx, id); err != nil {
			t.Logf("cleanup %s: %v", id, err)
		}
	})
}
