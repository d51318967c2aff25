package serve

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestScanFromReadsEachRecordOnce: calls from the returned cursor read only
// what was appended since, across rotations and out-of-Time-order records,
// and together they read exactly what one Scan reads; a cursor into a
// segment a purge rewrote is refused as stale.
func TestScanFromReadsEachRecordOnce(t *testing.T) {
	dir := shortDir(t)
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 4 << 10})
	since := time.Now().Add(-time.Hour)
	n := 0
	appendRecs := func(k int) {
		for range k {
			// Times go back and forth (a slow request is appended after
			// later ones); every fifth is from before since.
			at := since.Add(time.Duration(n%7) * time.Second)
			if n%5 == 4 {
				at = since.Add(-time.Second)
			}
			rec(pl, fmt.Sprintf("r%d", n), at, "1,2\n")
			n++
		}
	}
	r := openReader(t, dir, "p")
	var got []string
	var cur LogCursor
	read := func(rotate bool) int {
		t.Helper()
		if err := pl.flush(context.Background(), rotate); err != nil {
			t.Fatal(err)
		}
		before := len(got)
		next, err := r.ScanFrom(cur, since, func(rec Record) error {
			got = append(got, strings.Clone(rec.ID)) // borrowed
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		cur = next
		return len(got) - before
	}
	appendRecs(100)
	if k := read(false); k != 80 {
		t.Errorf("first read: %d records, want 80", k)
	}
	if k := read(false); k != 0 {
		t.Errorf("nothing appended: read %d records again", k)
	}
	appendRecs(150) // crosses segments (4 KiB each)
	if k := read(true); k != 120 {
		t.Errorf("after 150 more and a rotation: %d records, want 120", k)
	}
	appendRecs(10)
	if k := read(false); k != 8 {
		t.Errorf("after 10 more: %d records, want 8", k)
	}
	if segs, _ := listSegments(filepath.Join(dir, "p")); len(segs) < 3 {
		t.Errorf("%d segments; the test needs rotations", len(segs))
	}
	var all []string
	if err := r.Scan(since, func(rec Record) error { all = append(all, rec.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, all) {
		t.Errorf("incremental reads %d records, one Scan %d; they differ", len(got), len(all))
	}

	// A cursor at the end of a closed segment, which a purge then rewrites.
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ScanFrom(cur, since, func(Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := Purge(dir, "p", PurgeFilter{ID: fmt.Sprintf("r%d", n-1)}, -1); err != nil {
		t.Fatal(err)
	}
	_, err := r.ScanFrom(cur, since, func(Record) error { return nil })
	if !errors.Is(err, ErrCursorStale) {
		t.Errorf("cursor into a rewritten segment: %v, want ErrCursorStale", err)
	}
}

// TestScanFromSkipsOldSegments: a first read from since skips closed
// segments wholly before it by their index, and its cursor still lands
// after them, so the next read starts at what is new.
func TestScanFromSkipsOldSegments(t *testing.T) {
	dir := shortDir(t)
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 4 << 10})
	defer pl.close()
	old := time.Now().Add(-2 * time.Hour)
	for i := range 200 {
		rec(pl, fmt.Sprintf("o%d", i), old, "1,2\n")
	}
	if err := pl.flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(filepath.Join(dir, "p"))
	for _, s := range segs[:len(segs)-1] {
		waitIndex(t, filepath.Join(dir, "p"), s)
	}
	r := openReader(t, dir, "p")
	since := time.Now().Add(-time.Hour)
	cur, err := r.ScanFrom(LogCursor{}, since, func(rec Record) error {
		t.Errorf("read %s, from before since", rec.ID)
		return nil
	})
	if err != nil || cur.Segment != segs[len(segs)-1] {
		t.Fatalf("cursor %+v (%v), want in the newest segment %d", cur, err, segs[len(segs)-1])
	}
	rec(pl, "new", time.Now(), "1,2\n")
	if err := pl.flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	var got []string
	if _, err := r.ScanFrom(cur, since, func(rec Record) error { got = append(got, strings.Clone(rec.ID)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"new"}) {
		t.Errorf("second read: %v, want [new]", got)
	}
}
