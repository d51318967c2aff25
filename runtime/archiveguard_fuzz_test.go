package runtime

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/runtime/ocitar"
)

// fuzzLimits are small, so the fuzzer reaches them.
var fuzzLimits = archiveLimits{Entries: 32, Bytes: 1 << 20, MetaBytes: 4 << 10}

// tarOf writes entries (header, content) as a tar archive; a header's Size is taken from its
// content unless set.
func tarOf(t testing.TB, entries ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i < len(entries); i += 2 {
		h, data := entries[i].(*tar.Header), entries[i+1].(string)
		if h.Size == 0 {
			h.Size = int64(len(data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, data); err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
			t.Fatal(err)
		}
	}
	_ = tw.Close() // a header that claims more than it holds leaves the archive short: wanted
	return b.Bytes()
}

// retype changes the type of an archive's first entry to one tar.Writer will not write by
// hand (a PAX header), fixing the header's checksum.
func retype(b []byte, typ byte) []byte {
	b[156] = typ
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// sparsePAX is a PAX 1.0 sparse entry (what GNU tar --sparse writes): a 1 TiB file of holes
// in a few blocks. tar.Writer refuses to write the GNU.sparse records, so they are written
// as a plain PAX header's content and retyped.
func sparsePAX(t testing.TB) []byte {
	rec := func(kv string) string {
		n := len(kv) + 2
		for len(fmt.Sprintf("%d %s\n", n, kv)) != n {
			n++
		}
		return fmt.Sprintf("%d %s\n", n, kv)
	}
	pax := rec("GNU.sparse.major=1") + rec("GNU.sparse.minor=0") + rec("GNU.sparse.name=blobs/sha256/bomb") + rec("GNU.sparse.realsize=1099511627776")
	head := retype(tarOf(t, &tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/bomb"}, pax), tar.TypeXHeader)
	head = head[:512+(len(pax)+511)/512*512]
	// The sparse map (no data segments), then the file's (empty) stored content.
	body := tarOf(t, &tar.Header{Typeflag: tar.TypeReg, Name: "GNUSparseFile.0/bomb", Size: 512}, "0\n"+strings.Repeat("\x00", 510))
	return append(head, body...)
}

// exampleArchive is a real OCI image archive, as `kiln images import` gets one.
func exampleArchive(t testing.TB) []byte {
	img, err := ocitar.Build(ocitar.Spec{Files: []ocitar.File{{Path: "/bin/x", Mode: 0o755, Data: []byte("x")}}, Cmd: []string{"/bin/x"}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := ocitar.WriteOCI(file, "kiln.local/x:1", img); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostileArchives are the crafted seeds: each must be refused, naming why.
func hostileArchives(t testing.TB) map[string][]byte {
	reg := func(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeReg, Name: name} }
	many := []any{}
	for i := range fuzzLimits.Entries + 1 {
		many = append(many, reg("blobs/sha256/"+strings.Repeat("a", i+1)), "")
	}
	return map[string][]byte{
		`a ".." in the name`:            tarOf(t, reg("../../etc/cron.d/x"), "* * * * * root sh\n"),
		`a ".." in the name (inside)`:   tarOf(t, reg("blobs/../../x"), "x"),
		"an absolute name":              tarOf(t, reg("/etc/passwd"), "root::0:0::/:/bin/sh\n"),
		"link target outside":           tarOf(t, &tar.Header{Typeflag: tar.TypeSymlink, Name: "blobs/x", Linkname: "../../../etc/shadow"}, ""),
		"link target an absolute name":  tarOf(t, &tar.Header{Typeflag: tar.TypeSymlink, Name: "index.json", Linkname: "/etc/shadow"}, ""),
		"entry type":                    tarOf(t, &tar.Header{Typeflag: tar.TypeChar, Name: "dev", Devmajor: 1, Devminor: 3}, ""),
		"byte limit":                    tarOf(t, reg("blobs/sha256/big"), "x", &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/bomb", Size: 1 << 40}, "y"),
		"metadata":                      tarOf(t, reg("index.json"), strings.Repeat(" ", int(fuzzLimits.MetaBytes)+1)),
		"more than 32 entries":          tarOf(t, many...),
		"a control character":           tarOf(t, reg("blobs/a\nb"), "x"),
		"not a tar archive":             []byte(strings.Repeat("garbage!", 200)),
		"not a tar archive (huge pax)":  retype(tarOf(t, reg("x"), "2097160 comment="+strings.Repeat("p", 2<<20)+"\n"), tar.TypeXHeader),
		"unexpected EOF (cut off)":      exampleArchive(t)[:3100], // inside a blob (a cut in the padding reads as a shorter archive, as tar has it)
		"a name that is not UTF-8":      tarOf(t, reg("blobs/\xff"), "x"),
		"link target a \"..\" (hard)":   tarOf(t, &tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "../x"}, ""),
		"an empty name (after a good)":  tarOf(t, reg("oci-layout"), "{}", reg(""), "x"),
		"a sparse file (PAX 1.0)":       sparsePAX(t),
		"entry type (fifo)":             tarOf(t, &tar.Header{Typeflag: tar.TypeFifo, Name: "f"}, ""),
		"byte limit (one entry at cap)": tarOf(t, &tar.Header{Typeflag: tar.TypeReg, Name: "b", Size: fuzzLimits.Bytes + 1}, ""),
	}
}

// guardAll reads an archive through the guard; it returns what came through and the error.
func guardAll(data []byte, lim archiveLimits) ([]byte, error) {
	g := newArchiveGuard(bytes.NewReader(data), lim)
	var out bytes.Buffer
	p := make([]byte, 777) // an odd size, so reads straddle headers
	for {
		n, err := g.Read(p)
		out.Write(p[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func TestArchiveGuard(t *testing.T) {
	good := exampleArchive(t)
	out, err := guardAll(good, defaultArchiveLimits)
	if err != nil || !bytes.Equal(out, good[:len(out)]) || len(out) < len(good)-10240 {
		t.Fatalf("real OCI archive: %d of %d bytes through, %v", len(out), len(good), err)
	}
	for name, data := range hostileArchives(t) {
		_, err := guardAll(data, fuzzLimits)
		if !errors.Is(err, errArchive) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line refusing the archive", name, err)
		}
	}
}

// FuzzArchiveGuard: whatever archive a client streams, the guard passes a prefix of it
// unchanged, and that prefix holds only entries an image archive may hold, within the
// limits: containerd's importer, which reads it, never sees a bad header. A refusal is one
// line saying which entry and why.
func FuzzArchiveGuard(f *testing.F) {
	f.Add(exampleArchive(f))
	for _, data := range hostileArchives(f) {
		if len(data) <= 64<<10 { // the fuzzer slows to a crawl on megabyte inputs
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := guardAll(data, fuzzLimits)
		if !bytes.HasPrefix(data, out) {
			t.Fatalf("the guard changed the bytes")
		}
		if err != nil && (!errors.Is(err, errArchive) || strings.ContainsAny(err.Error(), "\r\n")) {
			t.Fatalf("error %q: want one line wrapping errArchive", err)
		}
		tr := tar.NewReader(bytes.NewReader(out))
		var entries int
		var total int64
		for {
			h, rerr := tr.Next()
			if rerr != nil {
				if err == nil && rerr != io.EOF {
					t.Fatalf("accepted an archive tar cannot read: %v", rerr)
				}
				return
			}
			entries++
			total += h.Size
			if why := unsafeName(h.Name); why != "" {
				t.Fatalf("passed entry %q: %s", h.Name, why)
			}
			if entries > fuzzLimits.Entries || total > fuzzLimits.Bytes {
				t.Fatalf("passed %d entries, %d bytes: over the limits", entries, total)
			}
			switch h.Typeflag {
			case tar.TypeReg, tar.TypeDir, tar.TypeXGlobalHeader:
			case tar.TypeSymlink, tar.TypeLink:
				if l := filepath.Join("/a/b", filepath.Dir(h.Name), h.Linkname); !strings.HasPrefix(l, "/a/b") || strings.HasPrefix(h.Linkname, "/") {
					t.Fatalf("passed a link %q -> %q leaving the archive", h.Name, h.Linkname)
				}
			default:
				t.Fatalf("passed entry %q of type %q", h.Name, h.Typeflag)
			}
			if _, rerr := io.Copy(io.Discard, tr); rerr != nil && err == nil {
				t.Fatalf("accepted an archive whose entry %q is cut short: %v", h.Name, rerr)
			}
		}
	})
}

// TestImportRefusesHostileArchives: the guard stands in front of the real importer. Each
// crafted archive fails Import with the guard's reason, on a real containerd.
func TestImportRefusesHostileArchives(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, time.Minute)
	for name, data := range hostileArchives(t) {
		if strings.HasPrefix(name, "more than") || strings.HasPrefix(name, "metadata") || strings.HasPrefix(name, "byte limit") {
			continue // limits scaled down for the fuzzer; the defaults are far above these
		}
		_, err := r.Import(ctx, bytes.NewReader(data), nil)
		if err == nil || !strings.Contains(err.Error(), errArchive.Error()) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Import() = %v; want the guard's one-line refusal", name, err)
		}
	}
}
