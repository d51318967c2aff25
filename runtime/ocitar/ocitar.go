// Package ocitar builds small single-layer container images from files and
// writes them as OCI image archives or `docker save` archives, with no Docker
// daemon and no network: kiln's example images and the runtime tests' images
// are made with it (go-containerregistry underneath).
//
// Archives are reproducible: every timestamp is fixed (Epoch), entries are
// sorted and the layer is gzipped at a fixed level, so the same files give the
// same manifest digest on every machine.
package ocitar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time stamped on every file, layer and config.
var Epoch = time.Unix(0, 0).UTC()

// File is one file of the image's only layer. Parent folders are created.
type File struct {
	Path string // absolute path inside the image
	Mode int64  // permission bits, 0644 when zero
	Data []byte
}

// Spec describes an image.
type Spec struct {
	Files      []File
	Dirs       []string // empty folders to create (mode 0755), e.g. mount points
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Labels     map[string]string
	// Arch is the image's architecture; empty means amd64.
	Arch string
}

// FileFrom reads a host file into a File at dst.
func FileFrom(src, dst string, mode int64) (File, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return File{}, err
	}
	return File{Path: dst, Mode: mode, Data: b}, nil
}

// Build returns the OCI image for spec.
func Build(spec Spec) (v1.Image, error) {
	layerTar, err := layerBytes(spec)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: Epoch}, CreatedBy: "kiln ocitar",
	}})
	if err != nil {
		return nil, err
	}
	arch := spec.Arch
	if arch == "" {
		arch = "amd64"
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = arch, "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = v1.Config{
		Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, Env: spec.Env, User: spec.User,
		WorkingDir: spec.WorkingDir, Labels: spec.Labels,
	}
	return mutate.ConfigFile(img, cf)
}

func layerBytes(spec Spec) ([]byte, error) {
	dirs := map[string]bool{}
	for _, d := range spec.Dirs {
		addParents(dirs, path.Clean(d)+"/x")
	}
	for _, f := range spec.Files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("file path %q is not absolute", f.Path)
		}
		addParents(dirs, path.Clean(f.Path))
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range slices.Sorted(mapKeys(dirs)) {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode,
			ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	files := slices.Clone(spec.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(f.Path), "/"),
			Mode: mode, Size: int64(len(f.Data)), ModTime: Epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addParents(dirs map[string]bool, p string) {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		dirs[strings.TrimPrefix(d, "/")] = true
	}
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Digest is the manifest digest of img ("sha256:...").
func Digest(img v1.Image) (string, error) {
	h, err := img.Digest()
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

// WriteOCI writes img as an OCI image layout archive (what `ctr images export`
// and buildah write) to file, named ref in both the OCI ref.name annotation
// and containerd's image-name annotation, so an import tags it as ref.
func WriteOCI(file, ref string, img v1.Image) error {
	if _, err := name.ParseReference(ref); err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	return writeAtomically(file, func(w io.Writer) error { return writeOCI(w, ref, img) })
}

func writeOCI(w io.Writer, ref string, img v1.Image) error {
	tw := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644,
			Size: int64(len(b)), ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	blob := func(h v1.Hash, b []byte) error { return add("blobs/"+h.Algorithm+"/"+h.Hex, b) }

	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "blobs/sha256/", Mode: 0o755,
		ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
		if err := blob(h, b); err != nil {
			return err
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := blob(cfgName, cfg); err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mDigest, err := img.Digest()
	if err != nil {
		return err
	}
	if err := blob(mDigest, manifest); err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(manifest)),
			Digest:    mDigest,
			Platform:  &v1.Platform{Architecture: cf.Architecture, OS: cf.OS},
			Annotations: map[string]string{
				"io.containerd.image.name":          ref,
				"org.opencontainers.image.ref.name": ref,
			},
		}},
	}
	ib, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := add("index.json", ib); err != nil {
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	return tw.Close()
}

// WriteDocker writes img in the `docker save` format (manifest.json,
// repositories) to file, tagged ref.
func WriteDocker(file, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image tag %q: %w", ref, err)
	}
	// `docker save` stores docker media types; a converted copy keeps the
	// test honest about what a docker archive really holds.
	return writeAtomically(file, func(w io.Writer) error { return tarball.Write(tag, img, w) })
}

func writeAtomically(file string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(file), ".ocitar-*.tmp")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }() // best effort; a no-op (ENOENT) after the rename
	if err := write(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), file)
}
