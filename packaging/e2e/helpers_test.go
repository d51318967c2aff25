package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// requireReal skips t with reason, or fails it under KILN_REQUIRE_REAL=1
// (CI), so a missing prerequisite can never pass silently there.
func requireReal(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("KILN_REQUIRE_REAL") == "1" {
		t.Fatalf("KILN_REQUIRE_REAL=1 but: %s", reason)
	}
	t.Skip(reason)
}

// repoRoot is the repository root (tests run in packaging/e2e).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// run runs a host command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// newest returns the most recently modified file matching pattern, or "".
func newest(pattern string) string {
	files, _ := filepath.Glob(pattern)
	sort.Slice(files, func(i, j int) bool {
		a, _ := os.Stat(files[i])
		b, _ := os.Stat(files[j])
		return a.ModTime().After(b.ModTime())
	})
	if len(files) == 0 {
		return ""
	}
	return files[0]
}

// lastLines keeps the end of a long output for a failure message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually polls f every interval until it returns nil or timeout passes,
// and returns f's last error.
func eventually(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}
