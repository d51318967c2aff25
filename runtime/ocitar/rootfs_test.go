package ocitar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A rootfs folder becomes the base layer: regular files, folders, symlinks
// and hard links with their modes and mtimes; no fifos, device nodes,
// /proc contents or excluded paths. The archive's blobs match their
// digests and the config's diff IDs, and the same folder gives the same
// image digest.
func TestBuildOnRootfs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "rootfs")
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	write := func(rel, data string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/tool", "#!/bin/sh\n", 0o755)
	write("usr/lib/python3/mod.py", "x = 1\n", 0o644)
	write(".kiln-complete", "done\n", 0o644)
	write("proc/1/status", "not a real proc\n", 0o644)
	must(t, os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2")))
	must(t, os.Symlink("tool", filepath.Join(root, "usr/bin/alias")))
	must(t, syscall.Mkfifo(filepath.Join(root, "usr/fifo"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	if os.Geteuid() == 0 {
		must(t, syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3))
	}

	spec := Spec{Files: []File{{Path: "/usr/local/bin/app", Mode: 0o755, Data: []byte("app")}},
		Dirs: []string{"/opt/ml/model"}, Entrypoint: []string{"/usr/local/bin/app"}, User: "1000:1000"}
	base := Rootfs{Dir: root, Exclude: []string{".kiln-complete"}, Scratch: t.TempDir()}
	img, cleanup, err := BuildOnRootfs(base, spec)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteOCI(out, "kiln.local/rootfs:1", img); err != nil {
		t.Fatal(err)
	}
	d1, _ := Digest(img)
	cleanup()
	if left, _ := filepath.Glob(filepath.Join(base.Scratch, "*")); len(left) != 0 {
		t.Errorf("cleanup left %v", left)
	}
	again, cleanup2, err := BuildOnRootfs(base, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup2()
	if d2, _ := Digest(again); d1 != d2 {
		t.Errorf("digests %s and %s for the same folder and spec", d1, d2)
	}

	var manifest struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	must(t, json.Unmarshal(tarFile(t, out, "blobs/sha256/"+d1[len("sha256:"):]), &manifest))
	if len(manifest.Layers) != 2 {
		t.Fatalf("manifest has %d layers; want the rootfs and the app's", len(manifest.Layers))
	}
	var config struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		Config struct{ User string } `json:"config"`
	}
	must(t, json.Unmarshal(tarFile(t, out, "blobs/sha256/"+manifest.Config.Digest[len("sha256:"):]), &config))
	if config.Config.User != "1000:1000" {
		t.Errorf("config user = %q; want spec's", config.Config.User)
	}
	blob := tarFile(t, out, "blobs/sha256/"+manifest.Layers[0].Digest[len("sha256:"):])
	if got := sha("sha256:", blob); got != manifest.Layers[0].Digest {
		t.Errorf("rootfs layer blob hashes to %s; manifest says %s", got, manifest.Layers[0].Digest)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	must(t, err)
	raw, err := io.ReadAll(zr)
	must(t, err)
	if got := sha("sha256:", raw); got != config.RootFS.DiffIDs[0] {
		t.Errorf("rootfs layer tar hashes to %s; config diff_ids[0] says %s", got, config.RootFS.DiffIDs[0])
	}

	entries := map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		entries[h.Name] = h
		names = append(names, h.Name)
	}
	for _, want := range []string{"usr/", "usr/bin/", "usr/bin/tool", "usr/bin/tool2", "usr/bin/alias",
		"usr/lib/python3/mod.py", "proc/", "dev/"} {
		if entries[want] == nil {
			t.Errorf("rootfs layer lacks %s: %v", want, names)
		}
	}
	for _, not := range []string{".kiln-complete", "proc/1/", "proc/1/status", "usr/fifo", "dev/null"} {
		if entries[not] != nil {
			t.Errorf("rootfs layer holds %s; it must be left out", not)
		}
	}
	if h := entries["usr/bin/tool"]; h != nil && (h.Mode&0o777 != 0o755 || !h.ModTime.Equal(mtime)) {
		t.Errorf("usr/bin/tool: mode %o mtime %v; want 755 and %v kept", h.Mode, h.ModTime, mtime)
	}
	// Either name may come first; the later one links to the earlier.
	tool, tool2 := entries["usr/bin/tool"], entries["usr/bin/tool2"]
	if tool != nil && tool2 != nil && (tool.Typeflag != tar.TypeReg || tool2.Typeflag != tar.TypeLink || tool2.Linkname != "usr/bin/tool") {
		t.Errorf("hard link: tool %c, tool2 %c -> %q; want tool2 a hard link to usr/bin/tool", tool.Typeflag, tool2.Typeflag, tool2.Linkname)
	}
	if h := entries["usr/bin/alias"]; h != nil && (h.Typeflag != tar.TypeSymlink || h.Linkname != "tool") {
		t.Errorf("usr/bin/alias = %c -> %q; want a symlink to tool", h.Typeflag, h.Linkname)
	}
}

func TestBuildOnRootfsNotAFolder(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(f, nil, 0o644))
	if _, cleanup, err := BuildOnRootfs(Rootfs{Dir: f}, Spec{}); err == nil {
		cleanup()
		t.Error("BuildOnRootfs on a file: no error")
	}
}

func sha(prefix string, b []byte) string {
	s := sha256.Sum256(b)
	return prefix + hex.EncodeToString(s[:])
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
