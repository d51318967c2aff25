package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesWholeAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "chart.svg")
	for _, data := range []string{"first", "second, longer"} {
		if err := Write(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("read %q, %v; want %q", got, err, data)
		}
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d entries in the folder, want the file alone", len(ents))
	}
	if err := Write(filepath.Join(dir, "missing", "x.svg"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "x.svg") {
		t.Fatalf("write into a missing folder: %v, want an error naming the file", err)
	}
}
