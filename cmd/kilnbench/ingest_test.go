package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ingest.burst_missed must be able to be non-zero: a file ingested twice (the same file
// dropped again after its content was committed, which content dedup records as a
// dataset.duplicate event, not a second version) and a file never ingested are both counted.
func TestIngestCountSeesDoubles(t *testing.T) {
	spec, err := inSpec("burst", "{format: csv, label: label, settle: 0s}")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r, err := newInRig(context.Background(), dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	drop := func(n int) {
		t.Helper()
		tmp := filepath.Join(dir, "b.tmp")
		if err := os.WriteFile(tmp, []byte("x,label\n1,a\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, r.drop("burst")+"/b000000.csv"); err != nil {
			t.Fatal(err)
		}
		if err := r.waitCommitted(n, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// waitCommitted counts by path: wait for the drop folder to be emptied too.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if ents, _ := os.ReadDir(r.drop("burst")); len(ents) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("drop folder not emptied")
			}
		}
	}
	count := func(n int) ingestCount {
		t.Helper()
		c, err := countIngested(r.store, "burst", n)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	drop(1)
	if c := count(1); c.missed != 0 || c.twice() != 0 || c.versions != 1 {
		t.Fatalf("one file ingested once: %+v, want 1 version, none missed or twice", c)
	}
	if c := count(2); c.missed != 1 {
		t.Fatalf("two files expected, one ingested: %+v, want 1 missed", c)
	}
	drop(1) // the same file again: same path, so the committed map already holds it
	for deadline := time.Now().Add(30 * time.Second); count(1).duplicates == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no dataset.duplicate event for the file dropped twice")
		}
	}
	if c := count(1); c.missed != 0 || c.twice() != 1 || c.versions != 1 {
		t.Fatalf("one file ingested twice: %+v, want 1 version and 1 twice", c)
	}
}
