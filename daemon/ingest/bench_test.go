package ingest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// benchCSV is about size bytes of a realistic wide numeric CSV: 32 float features and a label.
func benchCSV(size int) []byte {
	var b bytes.Buffer
	for i := range 32 {
		fmt.Fprintf(&b, "f%d,", i)
	}
	b.WriteString("label\n")
	x := uint64(0x9e3779b97f4a7c15)
	out := b.Bytes()
	for len(out) < size {
		for range 32 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			out = strconv.AppendFloat(out, float64(int64(x%200_000_000)-100_000_000)/1e6, 'f', 6, 64)
			out = append(out, ',')
		}
		out = append(out, 'a'+byte(x%3), '\n')
	}
	return out
}

// BenchmarkTabularCSV times the parser alone (split, checks, profile, parts written to
// io.Discard) on a wide numeric CSV, with the rules a real pipeline sets; it is the part of
// the CSV ingest path that the blob store's copy and hash do not already cover.
func BenchmarkTabularCSV(b *testing.B) {
	data := benchCSV(64 << 20)
	p := spec(b, "p", "format: csv\nlabel: label\nvalidate: {max_null_fraction: 0.1, max_duplicate_fraction: 0.5, labels: [a, b, c]}\n")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		tab := newTabular(p, "data", nil, io.Discard, io.Discard)
		if err := tab.parse("w.csv", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		if len(tab.violations) > 0 {
			b.Fatalf("violations: %v", tab.violations[0])
		}
	}
}

// BenchmarkIngestCSV times the whole path of a dropped CSV file: read once, hashed into the
// blob store, parsed, checked and split into train and holdout blobs, all fsynced, and the
// version committed.
func BenchmarkIngestCSV(b *testing.B) {
	data := benchCSV(64 << 20)
	p := spec(b, "p", "format: csv\nlabel: label\nsettle: 0s\nvalidate: {max_null_fraction: 0.1, max_duplicate_fraction: 0.5, labels: [a, b, c]}\n")
	e := newEnv(b, p)
	stage := b.TempDir()
	b.SetBytes(int64(len(data)))
	n := 0
	for b.Loop() {
		b.StopTimer()
		n++
		name := fmt.Sprintf("d%d.csv", n)
		row := fmt.Sprintf("%d%s,a\n", n, strings.Repeat(",0", 31)) // new content: no duplicate
		if err := os.WriteFile(filepath.Join(stage, name), append(data[:len(data):len(data)], row...), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(e.drop("p"), name)); err != nil {
			b.Fatal(err)
		}
		ds := e.waitDatasets("p", n, time.Minute)
		if d := ds[len(ds)-1]; d.State != storage.DatasetAccepted {
			b.Fatalf("%s: %s", d.ID, d.Reason)
		}
	}
}
