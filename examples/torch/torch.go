// Package torch is kiln's PyTorch example: the image kiln.local/torch-digits:1
// (Debian bookworm's CPU-only PyTorch, a small CNN trainer and a stdlib HTTP
// server, image/), built without Docker from a debootstrapped rootfs that
// mkrootfs.sh makes once and the Makefile caches under /var/cache/kiln, and
// the 8x8 digits data set it learns (digits.go), which comes from Debian's
// python3-sklearn package. `make images-torch` builds the archive and `make
// test-torch` trains and serves it through kiln's runtime.
package torch

import (
	"embed"
	"fmt"
	goruntime "runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-edge/kiln/runtime/ocitar"
)

// Ref is the image's tag; pipelines name it as both train.image and
// serve.image (one image, `train` or `serve` picks the program).
const Ref = "kiln.local/torch-digits:1"

// ArchiveName is the archive's file name under bin/images.
const ArchiveName = "torch-digits.tar"

// The image's programs, as files: the launcher and what it runs.
//
//go:embed image/kiln-torch image/trainer.py image/server.py image/digitsnet.py
var programs embed.FS

// AppDir is where the Python programs live in the image.
const AppDir = "/opt/kiln/torch-digits"

// RootfsExclude are left out of the image: the cache's own files at the
// rootfs top, and libtorch's C++ unit tests (50 MB python3-torch pulls in).
var RootfsExclude = []string{".kiln-complete", ".kiln-build.log", "usr/lib/libtorch-test"}

// Spec is the image's own layer and config, on top of the rootfs.
func Spec() (ocitar.Spec, error) {
	var files []ocitar.File
	for name, dst := range map[string]string{
		"kiln-torch":   "/usr/local/bin/kiln-torch",
		"trainer.py":   AppDir + "/trainer.py",
		"server.py":    AppDir + "/server.py",
		"digitsnet.py": AppDir + "/digitsnet.py",
	} {
		b, err := programs.ReadFile("image/" + name)
		if err != nil {
			return ocitar.Spec{}, err
		}
		mode := int64(0o644)
		if name == "kiln-torch" {
			mode = 0o755
		}
		files = append(files, ocitar.File{Path: dst, Mode: mode, Data: b})
	}
	return ocitar.Spec{
		Files: files,
		Dirs: []string{"/tmp", "/opt/ml/model", "/opt/ml/input/data", "/opt/ml/input/config",
			"/opt/ml/output", "/run"},
		Entrypoint: []string{"/usr/local/bin/kiln-torch"},
		// A read-only rootfs with /tmp on tmpfs: every cache and home is
		// there; nothing is downloaded (TORCH_HOME would hold hub models).
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"HOME=/tmp", "TORCH_HOME=/tmp/torch", "XDG_CACHE_HOME=/tmp/.cache", "MPLCONFIGDIR=/tmp/matplotlib",
			"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8",
		},
		User:       "1000:1000",
		WorkingDir: "/tmp",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "torch-digits",
			"org.opencontainers.image.description": "kiln's PyTorch example (Debian bookworm python3-torch, CPU only): <image> train | serve",
		},
		Arch: goruntime.GOARCH,
	}, nil
}

// Build returns the image on the rootfs folder; call cleanup once it is
// written (the rootfs layer waits in a scratch file until then).
func Build(rootfs, scratch string) (v1.Image, func(), error) {
	spec, err := Spec()
	if err != nil {
		return nil, func() {}, err
	}
	img, cleanup, err := ocitar.BuildOnRootfs(ocitar.Rootfs{Dir: rootfs, Exclude: RootfsExclude, Scratch: scratch}, spec)
	if err != nil {
		return nil, cleanup, fmt.Errorf("image %s: %w", Ref, err)
	}
	return img, cleanup, nil
}
