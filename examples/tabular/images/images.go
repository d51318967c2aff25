// Package images builds kiln's example container images from Go source: the
// tabular trainer and server, and the image-classification trainer and
// server of examples/images. Each is one static binary (CGO_ENABLED=0,
// -trimpath, no build id) in a single layer with the folders of the
// SageMaker layout, user 1000 and fixed timestamps, written as an OCI archive
// by runtime/ocitar. The same toolchain and source give the same digests.
// `make images` and the runtime tests use it.
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/kiln-edge/kiln/runtime/ocitar"
)

// The example images and their tags.
const (
	TrainerRef      = "kiln.local/tabular-trainer:1"
	ServerRef       = "kiln.local/tabular-server:1"
	ImageTrainerRef = "kiln.local/image-trainer:1"
	ImageServerRef  = "kiln.local/image-server:1"
)

// Image is one binary image to build.
type Image struct {
	Ref     string // tag written into the archive
	Package string // Go import path of the main package
	Binary  string // file name under /usr/local/bin
	Cmd     []string
	File    string // archive file name under the output folder
}

// Examples are the trainer and server images: the tabular pair first (at
// 0 and 1, where the runtime tests take them), then the image pair.
var Examples = []Image{
	{Ref: TrainerRef, Package: "github.com/kiln-edge/kiln/examples/tabular/trainer",
		Binary: "tabular-trainer", Cmd: []string{"train"}, File: "tabular-trainer.tar"},
	{Ref: ServerRef, Package: "github.com/kiln-edge/kiln/examples/tabular/server",
		Binary: "tabular-server", Cmd: []string{"serve"}, File: "tabular-server.tar"},
	{Ref: ImageTrainerRef, Package: "github.com/kiln-edge/kiln/examples/images/trainer",
		Binary: "image-trainer", Cmd: []string{"train"}, File: "image-trainer.tar"},
	{Ref: ImageServerRef, Package: "github.com/kiln-edge/kiln/examples/images/server",
		Binary: "image-server", Cmd: []string{"serve"}, File: "image-server.tar"},
}

// Built is one written archive.
type Built struct {
	Ref    string
	File   string
	Digest string
}

// BuildAll builds imgs into outDir. Go commands run in the module holding
// the current directory.
func BuildAll(ctx context.Context, outDir string, imgs []Image) ([]Built, error) {
	var out []Built
	for _, im := range imgs {
		b, err := Build(ctx, outDir, im)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Build builds one image archive into outDir.
func Build(ctx context.Context, outDir string, im Image) (Built, error) {
	bin, err := GoBinary(ctx, im.Package)
	if err != nil {
		return Built{}, err
	}
	img, err := ocitar.Build(Spec(im, bin))
	if err != nil {
		return Built{}, fmt.Errorf("image %s: %w", im.Ref, err)
	}
	file := filepath.Join(outDir, im.File)
	if err := ocitar.WriteOCI(file, im.Ref, img); err != nil {
		return Built{}, err
	}
	d, err := ocitar.Digest(img)
	if err != nil {
		return Built{}, err
	}
	return Built{Ref: im.Ref, File: file, Digest: d}, nil
}

// Spec is the ocitar spec of im around the binary bin.
func Spec(im Image, bin []byte) ocitar.Spec {
	path := "/usr/local/bin/" + im.Binary
	return ocitar.Spec{
		Files: []ocitar.File{
			{Path: path, Mode: 0o755, Data: bin},
			{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nkiln:x:1000:1000:kiln:/tmp:/sbin/nologin\n")},
			{Path: "/etc/group", Data: []byte("root:x:0:\nkiln:x:1000:\n")},
		},
		Dirs: []string{"/tmp", "/opt/ml/model", "/opt/ml/input/data", "/opt/ml/input/config",
			"/opt/ml/output", "/proc", "/sys", "/dev", "/run"},
		Entrypoint: []string{path},
		Cmd:        im.Cmd,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		User:       "1000:1000",
		WorkingDir: "/tmp",
		Labels:     map[string]string{"org.opencontainers.image.title": im.Binary},
		Arch:       goruntime.GOARCH,
	}
}

// goTool finds the go command: on PATH, else at Go's usual home.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	const usual = "/usr/local/go/bin/go"
	if _, err := os.Stat(usual); err == nil {
		return usual, nil
	}
	return "", fmt.Errorf("no go command on PATH or at /usr/local/go/bin: building the example images needs Go")
}

// GoBinary builds pkg as a static, reproducible binary and returns it.
func GoBinary(ctx context.Context, pkg string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "kiln-img-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best-effort cleanup of the scratch build folder
	out := filepath.Join(tmp, "bin")
	goBin, err := goTool()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %v: %s", pkg, err, strings.TrimSpace(string(b)))
	}
	return os.ReadFile(out)
}
