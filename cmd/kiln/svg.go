package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
)

// accuracySVG is the accuracy chart as a file: the drawing lives in
// daemon/ui/chart, which kilnd's dashboard inlines in its pages too.
func accuracySVG(a api.Accuracy) []byte { return chart.Accuracy(a, chart.Options{XMLHeader: true}) }

// writeFileAtomic replaces path with data crash-safely: a temp file beside
// it, fsync, rename, fsync the folder. A reader sees the old file or the new
// one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // best effort; a no-op (ENOENT) after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644) // a chart is for sharing
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
