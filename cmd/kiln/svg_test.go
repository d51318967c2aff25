package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestWriteFileAtomic: the chart replaces an old file whole, readable by
// others, and leaves no temp file.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chart.svg")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := accuracySVG(api.Accuracy{Pipeline: "iris", Metric: "accuracy"})
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v (%v), want 0644", fi.Mode(), err)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Errorf("folder holds %d entries, want only chart.svg", len(des))
	}
	if err := writeFileAtomic(filepath.Join(dir, "no", "such", "dir.svg"), data); err == nil || !strings.Contains(err.Error(), "dir.svg") {
		t.Errorf("write into a missing folder: %v, want an error naming the file", err)
	}
}
