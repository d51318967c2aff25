package runtime

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"
)

// archiveLimits bound what an image archive may hold. containerd's importer stores every
// regular entry of the archive as a blob, whatever its name, before it knows whether the
// archive is an image at all: an entry whose header claims a terabyte would fill the disk
// before anything fails. So kilnd reads each header as the bytes stream past and refuses the
// archive at the first header that breaks a limit, before containerd writes its content.
type archiveLimits struct {
	Entries   int   // entries of every type
	Bytes     int64 // the sum of the entries' sizes
	MetaBytes int64 // oci-layout, index.json, manifest.json, repositories (decoded in memory)
}

// defaultArchiveLimits: the example images are a few MiB, CUDA training images ~20 GiB.
var defaultArchiveLimits = archiveLimits{Entries: 1 << 16, Bytes: 64 << 30, MetaBytes: 20 << 20}

// errArchive marks an archive refused by the guard.
var errArchive = errors.New("image archive refused")

// archiveGuard passes an archive's bytes through unchanged while parsing the same bytes as a
// tar stream, one header ahead of its reader: each Read first lets the parser consume enough
// of the stream to hold the bytes it returns. What the parser refuses fails the Read, so the
// importer never sees the bytes of a bad entry. It stops at the archive's end marker.
type archiveGuard struct {
	lim     archiveLimits
	tr      *tar.Reader
	buf     bytes.Buffer // bytes parsed, not yet read
	entries int
	total   int64
	err     error // sticky: the refusal, or io.EOF after the end marker
}

func newArchiveGuard(rd io.Reader, lim archiveLimits) *archiveGuard {
	g := &archiveGuard{lim: lim}
	g.tr = tar.NewReader(io.TeeReader(rd, &g.buf))
	return g
}

func (g *archiveGuard) Read(p []byte) (int, error) {
	for g.buf.Len() == 0 && g.err == nil {
		if g.err = g.step(); g.err != nil && g.err != io.EOF {
			g.buf.Reset() // the refused header (or a cut-off entry) is not passed on
		}
	}
	if g.buf.Len() > 0 {
		return g.buf.Read(p)
	}
	return 0, g.err
}

// step parses the next header, or up to 64 KiB of the current entry's content.
func (g *archiveGuard) step() error {
	n, err := io.CopyN(io.Discard, g.tr, 64<<10)
	if n > 0 {
		return nil
	}
	if err != nil && err != io.EOF {
		return g.refuse("", err.Error())
	}
	h, err := g.tr.Next()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return g.refuse("", "not a tar archive ("+err.Error()+")")
	}
	return g.check(h)
}

func (g *archiveGuard) check(h *tar.Header) error {
	g.entries++
	if g.entries > g.lim.Entries {
		return g.refuse(h.Name, fmt.Sprintf("more than %d entries", g.lim.Entries))
	}
	if why := unsafeName(h.Name); why != "" {
		return g.refuse(h.Name, why)
	}
	// A sparse entry's holes cost nothing to send and expand to real bytes in the blob
	// containerd writes: a few hundred bytes would fill the disk.
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return g.refuse(h.Name, "a sparse file")
		}
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeXGlobalHeader:
	case tar.TypeSymlink, tar.TypeLink:
		// `docker save` (Docker 25 and later) links its legacy layout to the OCI blobs.
		if why := unsafeName(h.Linkname); why != "" {
			return g.refuse(h.Name, "link target "+why)
		}
		if l := path.Join(path.Dir(h.Name), h.Linkname); h.Typeflag == tar.TypeSymlink && (l == ".." || strings.HasPrefix(l, "../")) {
			return g.refuse(h.Name, "link target outside the archive")
		}
	default:
		return g.refuse(h.Name, fmt.Sprintf("entry type %q (an image archive holds files, folders and links)", h.Typeflag))
	}
	if h.Size < 0 || h.Size > g.lim.Bytes-g.total {
		return g.refuse(h.Name, fmt.Sprintf("%d bytes would pass the %d-byte limit of an archive", h.Size, g.lim.Bytes))
	}
	g.total += h.Size
	switch path.Clean(h.Name) {
	case "oci-layout", "index.json", "manifest.json", "repositories":
		if h.Size > g.lim.MetaBytes {
			return g.refuse(h.Name, fmt.Sprintf("%d bytes of metadata, over %d", h.Size, g.lim.MetaBytes))
		}
	}
	return nil
}

// unsafeName says why an entry name is refused, or "": absolute names, ".." and names with
// control characters or invalid UTF-8 have no place in an image archive.
func unsafeName(name string) string {
	switch {
	case name == "":
		return "an empty name"
	case len(name) > 4096:
		return "a name over 4096 bytes"
	case !utf8.ValidString(name):
		return "a name that is not UTF-8"
	case strings.HasPrefix(name, "/"):
		return "an absolute name"
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "a control character in the name"
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return `a ".." in the name`
		}
	}
	return ""
}

func (g *archiveGuard) refuse(name, why string) error {
	if name == "" {
		return fmt.Errorf("%w: entry %d: %s", errArchive, g.entries, why)
	}
	return fmt.Errorf("%w: entry %d %q: %s", errArchive, g.entries, name, why)
}
