package ingest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// stage writes n small unique CSVs into a folder beside the drop folder (same filesystem),
// so they can be renamed in as one burst.
func stage(t testing.TB, dir string, n, offset int) []string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("f%06d.csv", i+offset)
		if err := os.WriteFile(filepath.Join(dir, names[i]), fmt.Appendf(nil, "x,label\n%d,a\n", i+offset), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// checkExactlyOnce: every staged file is one dataset, none twice, and the folder is empty.
func checkExactlyOnce(t *testing.T, e *env, p string, n int) {
	t.Helper()
	ds := e.datasets(p)
	seen := map[string]string{}
	for _, d := range ds {
		if d.State != storage.DatasetAccepted {
			t.Fatalf("%s is %s: %s", d.ID, d.State, d.Reason)
		}
		for _, f := range DataFiles(d) {
			if prev, ok := seen[f.Blob.Digest]; ok {
				t.Fatalf("%s ingested twice: %s and %s", f.Path, prev, d.ID)
			}
			seen[f.Blob.Digest] = d.ID
		}
	}
	if len(ds) != n || len(seen) != n {
		t.Fatalf("%d datasets holding %d distinct files, want %d", len(ds), len(seen), n)
	}
	left := entries(t, e.drop(p))
	left = slices.DeleteFunc(left, func(n string) bool { return n == ".wake" })
	if len(left) != 0 {
		t.Fatalf("%d entries left in the drop folder, e.g. %v", len(left), left[0])
	}
}

func TestBurstPastInotifyQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("40,000 files")
	}
	n := 40000
	if s := os.Getenv("KILN_BURST_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
	staging := filepath.Join(e.root, "staging")
	names := stage(t, staging, n, 0)
	// Hold the coordinator while the burst lands, so the kernel queue (16384) overflows for
	// certain rather than by luck of scheduling.
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	hook := func() {
		select {
		case held <- struct{}{}:
			<-hold
		default:
		}
	}
	testHookLoop.Store(&hook)
	t.Cleanup(func() { testHookLoop.Store(nil) })
	// Wake the coordinator (an ignored name still makes an event) and wait until it parks.
	if err := os.WriteFile(filepath.Join(e.drop("p"), ".wake"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	<-held
	held <- struct{}{} // full: later loops pass
	start := time.Now()
	for _, name := range names {
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(e.drop("p"), name)); err != nil {
			t.Fatal(err)
		}
	}
	rescans := e.m.Status().Rescans
	close(hold)
	// Correctness, not speed (that is kilnbench's ingest.burst_missed): each version is a
	// durable commit, and a disk shared with other work can take minutes for 40,000 of them,
	// so the test fails on a stall (no version for a minute), not on a total time.
	e.waitProgress(fmt.Sprintf("%d datasets", n), time.Minute, func() (int64, bool) {
		st := e.m.Status()
		return st.Ingested, st.Ingested >= int64(n) && st.Pending == 0 && st.Busy == 0
	})
	t.Logf("%d files renamed in and ingested in %s", n, time.Since(start))
	if got := e.m.Status().Rescans; got <= rescans {
		t.Errorf("no overflow rescan happened (rescans %d -> %d); the burst did not pass the queue", rescans, got)
	}
	time.Sleep(100 * time.Millisecond)
	checkExactlyOnce(t, e, "p", n)
}

// TestRestartMidBurst stops the manager while a burst is being taken and starts a new one on
// the same store and folders: every file ends up ingested exactly once.
func TestRestartMidBurst(t *testing.T) {
	const n = 2000
	p := spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n")
	e := newEnv(t, p)
	staging := filepath.Join(e.root, "staging")
	for i, name := range stage(t, staging, n, 0) {
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(e.drop("p"), name)); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			e.waitFor("some ingested", 10*time.Second, func() bool { return e.m.Status().Ingested > 200 })
			e.stop() // mid-burst: workers are cut off wherever they are
		}
	}
	before := len(e.datasets("p"))
	if before == 0 || before >= n {
		t.Fatalf("%d datasets at the restart; want a partial burst", before)
	}
	e.start(p)
	e.waitFor("all ingested", 60*time.Second, func() bool {
		return len(e.datasets("p")) >= n && e.m.Status().Pending == 0 && e.m.Status().Busy == 0
	})
	time.Sleep(100 * time.Millisecond)
	checkExactlyOnce(t, e, "p", n)
}

// TestCrashAfterCommitIsDuplicate: a file whose dataset is committed but which is still in
// the drop folder (kilnd died before removing it) is a duplicate at the next start.
func TestCrashAfterCommitIsDuplicate(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n")
	e := newEnv(t, p)
	content := csvRows(10, 0)
	renameIn(t, e.drop("p"), "a.csv", content)
	e.waitDatasets("p", 1, 5*time.Second)
	e.stop()
	if err := os.WriteFile(filepath.Join(e.drop("p"), "a.csv"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start(p)
	e.waitFor("duplicate event", 5*time.Second, func() bool { return len(e.events("dataset.duplicate")) == 1 })
	if ev := e.events("dataset.duplicate")[0]; ev.Refs[0] != "p/d1" {
		t.Errorf("duplicate of %v, want p/d1", ev.Refs)
	}
	e.waitFor("drop folder emptied", 2*time.Second, func() bool { return len(entries(t, e.drop("p"))) == 0 })
	if n := len(e.datasets("p")); n != 1 {
		t.Errorf("%d datasets, want 1", n)
	}
}
