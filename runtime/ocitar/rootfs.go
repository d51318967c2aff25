package ocitar

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Rootfs is a base layer made from a host folder holding a whole root
// filesystem (a debootstrapped Debian, say), for images too big to hold in
// memory the way Build's single layer is.
type Rootfs struct {
	Dir string
	// Exclude lists paths relative to Dir left out with everything under
	// them (a cache's completion marker, its build log).
	Exclude []string
	// Scratch is the folder for the compressed layer file ("" = os.TempDir()).
	Scratch string
}

// The folders whose contents never go into a layer: the runtime mounts its
// own /proc, /sys and /dev (a debootstrap leaves device nodes in /dev).
var mountPoints = map[string]bool{"proc": true, "sys": true, "dev": true}

// BuildOnRootfs returns spec's image (its files as Build lays them out, and
// its config) on top of a base layer holding base.Dir. The base layer is
// written once, gzipped, to a file in base.Scratch while its digests are
// computed; call cleanup after the image is written to remove that file.
//
// Owners, permission bits, symlinks and hard links are kept; sockets,
// fifos and device nodes are left out. Modification times are kept as they
// are in the folder, not set to Epoch: Python's bytecode caches record the
// mtime of their source, and a clamped source would make every import
// recompile (and fail to cache on a read-only rootfs). The same folder
// gives the same digests.
func BuildOnRootfs(base Rootfs, spec Spec) (img v1.Image, cleanup func(), err error) {
	layer, err := writeRootfsLayer(base)
	if err != nil {
		return nil, func() {}, err
	}
	cleanup = func() { _ = os.Remove(layer.file) } // best effort: a scratch file
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	app, err := Build(spec)
	if err != nil {
		return nil, cleanup, err
	}
	appLayers, err := app.Layers()
	if err != nil {
		return nil, cleanup, err
	}
	appCfg, err := app.ConfigFile()
	if err != nil {
		return nil, cleanup, err
	}
	img = mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "kiln ocitar rootfs"}},
		mutate.Addendum{Layer: appLayers[0], History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "kiln ocitar"}})
	if err != nil {
		return nil, cleanup, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, cleanup, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created, cf.Config = appCfg.Architecture, appCfg.OS, appCfg.Created, appCfg.Config
	img, err = mutate.ConfigFile(img, cf)
	return img, cleanup, err
}

// fileLayer is a gzipped layer tar in a file, its digests known.
type fileLayer struct {
	file           string
	digest, diffID v1.Hash
	size           int64
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.file) }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.file)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// countingHash counts and hashes what goes through it.
type countingHash struct {
	hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.Hash.Write(p)
}

func (c *countingHash) v1Hash() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(c.Sum(nil))}
}

// writeRootfsLayer streams the tar of base.Dir through gzip into a scratch
// file, hashing the tar (diff ID) and the gzip stream (digest) on the way.
func writeRootfsLayer(base Rootfs) (*fileLayer, error) {
	st, err := os.Stat(base.Dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("rootfs %s is not a folder", base.Dir)
	}
	f, err := os.CreateTemp(base.Scratch, ".ocitar-rootfs-*.tar.gz")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	compressed := &countingHash{Hash: sha256.New()}
	fileBuf := bufio.NewWriterSize(io.MultiWriter(f, compressed), 1<<20)
	zw, err := gzip.NewWriterLevel(fileBuf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	uncompressed := &countingHash{Hash: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(zw, uncompressed))
	if err := tarRootfs(tw, base); err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", base.Dir, err)
	}
	for _, c := range []io.Closer{tw, zw} {
		if err := c.Close(); err != nil {
			return nil, err
		}
	}
	if err := fileBuf.Flush(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	ok = true
	return &fileLayer{file: f.Name(), digest: compressed.v1Hash(), diffID: uncompressed.v1Hash(), size: compressed.n}, nil
}

func tarRootfs(tw *tar.Writer, base Rootfs) error {
	exclude := map[string]bool{}
	for _, e := range base.Exclude {
		exclude[filepath.Clean(e)] = true
	}
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	// WalkDir visits entries in lexical order, so the tar is the same for
	// the same folder.
	return filepath.WalkDir(base.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base.Dir, p)
		if err != nil || rel == "." {
			return err
		}
		if exclude[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if mountPoints[filepath.Dir(rel)] && !mountPoints[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		if mode&(fs.ModeSocket|fs.ModeNamedPipe|fs.ModeDevice|fs.ModeCharDevice|fs.ModeIrregular) != 0 {
			return nil
		}
		target := ""
		if mode&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime = info.ModTime().Truncate(1e9)
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(sys.Uid), int(sys.Gid)
			if mode.IsRegular() && sys.Nlink > 1 {
				key := inode{uint64(sys.Dev), sys.Ino}
				if first, seen := links[key]; seen {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				} else {
					links[key] = hdr.Name
				}
			}
		}
		if strings.HasPrefix(hdr.Name, "/") || strings.HasPrefix(hdr.Name, "../") {
			return fmt.Errorf("entry %q is outside the rootfs", hdr.Name)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := io.CopyN(tw, src, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
}
