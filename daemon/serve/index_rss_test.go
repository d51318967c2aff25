package serve

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIndexNotResident: a reader checks each index whole when it maps it,
// then leaves its pages out of the process's resident memory (an idle
// kilnd holding a 1M-record log carried 16 MB of them); lookups still
// find their records.
func TestIndexNotResident(t *testing.T) {
	dir := shortDir(t)
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 64 << 20})
	now := time.Now()
	for i := range 20_000 {
		rec(pl, fmt.Sprintf("r%d", i), now, "1\n")
	}
	if err := pl.flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, dir+"/p", 1)
	r := openReader(t, dir, "p")
	idx := idxPath(dir+"/p", 1)
	if kb, ok := residentKB(t, idx); !ok || kb != 0 {
		t.Errorf("index %s: mapped %v, %d kB resident after opening; want 0", idx, ok, kb)
	}
	if got := lookup(t, r, "r12345"); got.ID != "r12345" {
		t.Errorf("lookup through the index: %+v", got)
	}
}

// residentKB is the Rss of this process's mapping of path.
func residentKB(t *testing.T, path string) (int, bool) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 6 && strings.Contains(fields[0], "-") {
			in = fields[len(fields)-1] == path
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return kb, true
		}
	}
	return 0, false
}
