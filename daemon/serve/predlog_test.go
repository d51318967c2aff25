package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func flush(t *testing.T, e interface{ FlushLog(context.Context) error }) {
	t.Helper()
	if err := e.FlushLog(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func openReader(t *testing.T, dir, p string) *LogReader {
	t.Helper()
	r, err := OpenLogReader(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func lookup(t *testing.T, r *LogReader, id string) Record {
	t.Helper()
	rec, err := r.Lookup(id)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", id, err)
	}
	return rec
}

var ignoreTiming = cmpopts.IgnoreFields(Record{}, "Time", "LatencyUS")

// TestPredictionLogRoundTrip: records of the real endpoint read back whole,
// inputs inline and in a shared content-addressed file, outputs over 64 KiB
// whole, from the open segment and, after rotation, from a closed one
// through its index.
func TestPredictionLogRoundTrip(t *testing.T) {
	dir := shortDir(t)
	te := startEndpoint(t, Options{PredLogDir: dir, Protocol: "sagemaker"})
	te.Flip(startBackend(t, "iris/m7"))
	row := "5.1,3.5,1.4,0.2\n"
	small := row + row
	big := strings.Repeat(row, 13000) // 208 KiB in, 104 KiB out: an input file
	a := te.post(t, small, hdrRequestID, "req-1")
	b := te.post(t, big)
	c := te.post(t, big) // the same body: the same file
	flush(t, te)
	r := openReader(t, dir, "iris")

	check := func(stage string) {
		t.Helper()
		want := Record{ID: "req-1", Model: "iris/m7", Protocol: "sagemaker", ContentType: "text/csv",
			Status: 200, Rows: 2, Input: []byte(small), InputKept: true, Output: []byte(a.body)}
		if diff := cmp.Diff(want, lookup(t, r, "req-1"), ignoreTiming); diff != "" {
			t.Errorf("%s: inline record (-want +got):\n%s", stage, diff)
		}
		for _, x := range []answer{b, c} {
			got := lookup(t, r, x.id)
			if got.Rows != 13000 || !got.InputKept || string(got.Input) != big || string(got.Output) != x.body || got.OutputTruncated {
				t.Errorf("%s: file record %s: rows %d kept %v input %d bytes output %d bytes (want %d) cut %v",
					stage, x.id, got.Rows, got.InputKept, len(got.Input), len(got.Output), len(x.body), got.OutputTruncated)
			}
			if time.Since(got.Time) > time.Minute || got.LatencyUS <= 0 {
				t.Errorf("%s: time %v latency %d", stage, got.Time, got.LatencyUS)
			}
		}
		if _, err := r.Lookup("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Lookup(nope) = %v, want ErrNotFound", stage, err)
		}
	}
	check("open segment")
	if len(b.body) < 64<<10 {
		t.Fatalf("output only %d bytes", len(b.body))
	}
	sum := sha256.Sum256([]byte(big))
	name := hex.EncodeToString(sum[:])
	files := countFiles(t, filepath.Join(dir, "iris", inputsDir))
	if files != 1 {
		t.Errorf("%d input files, want 1 shared by the equal bodies", files)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "iris", inputsDir, name[:2], name)); err != nil || string(got) != big {
		t.Errorf("input file: %d bytes, %v", len(got), err)
	}

	// Rotate: the segment is closed and indexed; lookups go through the index.
	if err := te.RotateLog(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, filepath.Join(dir, "iris"), 1)
	check("closed segment")
	d := te.post(t, row, hdrRequestID, "req-2")
	flush(t, te)
	if got := lookup(t, r, "req-2"); string(got.Output) != d.body || got.Rows != 1 {
		t.Errorf("record in the new open segment: %+v", got)
	}
	var ids []string
	if err := r.Scan(time.Time{}, func(rec Record) error { ids = append(ids, rec.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"req-1", b.id, c.id, "req-2"}, ids); diff != "" {
		t.Errorf("Scan (-want +got):\n%s", diff)
	}
	ids = nil
	if err := r.Scan(time.Now().Add(time.Hour), func(rec Record) error { ids = append(ids, rec.ID); return nil }); err != nil || len(ids) != 0 {
		t.Errorf("Scan from the future: %v %v", ids, err)
	}
	if s := te.Stats(); s.LogWritten != 4 || s.LogDropped != 0 || s.LogErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func countFiles(t *testing.T, root string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// waitIndex waits for segment num's index (written off the writer's path).
func waitIndex(t *testing.T, dir string, num uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		fi, err := os.Stat(segPath(dir, num))
		if err == nil {
			if x, err := openIndex(idxPath(dir, num), fi.Size()); err == nil {
				x.close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("segment %d never indexed", num)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLog(t *testing.T, opt Options) *predLog {
	t.Helper()
	if opt.Pipeline == "" {
		opt.Pipeline = "p"
	}
	if opt.SegmentBytes == 0 {
		opt.SegmentBytes = 1 << 20
	}
	if opt.LogBuffer == 0 {
		opt.LogBuffer = 1 << 20
	}
	if opt.SyncInterval == 0 {
		opt.SyncInterval = time.Millisecond
	}
	pl, err := openPredLog(opt, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

func rec(pl *predLog, id string, t time.Time, in string) {
	pl.append([]byte(id), "p/m1", t, time.Millisecond, []byte("text/csv"), []byte(in), 200, []byte("a\n"), false)
}

// TestPredictionLogDropsWhenFull: a writer stuck between syncs (here: a
// sync interval of an hour) must make requests drop and count records, never
// wait; and close still writes what was buffered.
func TestPredictionLogDropsWhenFull(t *testing.T) {
	dir := shortDir(t)
	pl := testLog(t, Options{PredLogDir: dir, LogBuffer: 4096, SyncInterval: time.Hour})
	rec(pl, "r0", time.Now(), "1\n") // the first batch goes out at once
	for deadline := time.Now().Add(5 * time.Second); pl.written.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("first record never written")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	const n = 1000
	for i := 1; i < n; i++ {
		rec(pl, fmt.Sprintf("r%d", i), time.Now(), "1\n")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("appending %d records took %v: requests waited", n, d)
	}
	if pl.dropped.Load() == 0 {
		t.Fatalf("nothing dropped with a full buffer")
	}
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	var records int
	if err := openReader(t, dir, "p").Scan(time.Time{}, func(Record) error { records++; return nil }); err != nil {
		t.Fatal(err)
	}
	if w, d := pl.written.Load(), pl.dropped.Load(); w+d != n || uint64(records) != w {
		t.Errorf("written %d + dropped %d != %d, or %d records on disk", w, d, n, records)
	}
	rec(pl, "late", time.Now(), "1\n") // after close: dropped, no panic
	if pl.dropped.Load()+pl.written.Load() != n+1 {
		t.Errorf("record after close not counted")
	}
}

// TestPredictionLogTornTail: a frame torn by a crash ends its segment for
// readers, the rest reads back, the next start opens a new segment, and
// the rebuild indexes the torn one.
func TestPredictionLogTornTail(t *testing.T) {
	dir := shortDir(t)
	pdir := filepath.Join(dir, "p")
	pl := testLog(t, Options{PredLogDir: dir})
	now := time.Now()
	for i := range 5 {
		rec(pl, fmt.Sprintf("r%d", i), now, strconv.Itoa(i)+"\n")
	}
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, pdir, 1)
	// Tear the last frame: cut 3 bytes off, and drop the index (a crash
	// before the segment closed leaves none).
	seg := segPath(pdir, 1)
	fi, _ := os.Stat(seg)
	if err := os.Truncate(seg, fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	os.Remove(idxPath(pdir, 1))

	pl = testLog(t, Options{PredLogDir: dir})
	rec(pl, "after", now, "9\n")
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(pdir)
	if diff := cmp.Diff([]uint64{1, 2}, segs); diff != "" {
		t.Errorf("segments (-want +got):\n%s", diff)
	}
	r := openReader(t, dir, "p")
	var ids []string
	if err := r.Scan(time.Time{}, func(rec Record) error { ids = append(ids, rec.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"r0", "r1", "r2", "r3", "after"}, ids); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if _, err := r.Lookup("r4"); !errors.Is(err, ErrNotFound) {
		t.Errorf("torn record: %v, want ErrNotFound", err)
	}
	if got := lookup(t, r, "r3"); string(got.Input) != "3\n" { // through a scan: no index yet
		t.Errorf("r3 before the rebuild: %+v", got)
	}
	n, err := RebuildIndexes(dir, "p", -1)
	if err != nil || n != 1 {
		t.Fatalf("RebuildIndexes = %d, %v; want 1", n, err)
	}
	waitIndex(t, pdir, 1)
	if got := lookup(t, r, "r2"); string(got.Input) != "2\n" {
		t.Errorf("r2 through the rebuilt index: %+v", got)
	}
	if _, err := r.Lookup("r4"); !errors.Is(err, ErrNotFound) {
		t.Errorf("torn record after the rebuild: %v", err)
	}
}

// TestPredictionLogIndexRebuild: a deleted (or corrupted) index is noticed,
// lookups fall back to a scan, and the rebuild writes it again; the open
// segment is never indexed by the rebuild.
func TestPredictionLogIndexRebuild(t *testing.T) {
	dir := shortDir(t)
	pdir := filepath.Join(dir, "p")
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 4096})
	defer pl.close()
	now := time.Now()
	var ids []string
	for i := range 200 {
		id := fmt.Sprintf("req-%d", i)
		ids = append(ids, id)
		rec(pl, id, now, strings.Repeat("x", i%50)+"\n")
	}
	if err := pl.flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(pdir)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	for _, n := range segs[:len(segs)-1] {
		waitIndex(t, pdir, n)
	}
	r := openReader(t, dir, "p")
	for _, id := range ids {
		lookup(t, r, id)
	}
	os.Remove(idxPath(pdir, segs[0]))
	// Index files are only ever replaced by a rename: a torn one is a new file.
	os.WriteFile(idxPath(pdir, segs[1])+".new", []byte("KILNIX\x00\x02 torn"), 0o640)
	os.Rename(idxPath(pdir, segs[1])+".new", idxPath(pdir, segs[1]))
	for _, id := range ids { // through scans now
		if got := lookup(t, r, id); got.ID != id {
			t.Fatalf("Lookup(%s) = %s", id, got.ID)
		}
	}
	n, err := RebuildIndexes(dir, "p", -1)
	if err != nil || n != 2 {
		t.Fatalf("RebuildIndexes = %d, %v; want 2", n, err)
	}
	if _, err := os.Stat(idxPath(pdir, segs[len(segs)-1])); err == nil {
		t.Errorf("the open segment was indexed")
	}
	for _, n := range segs[:2] {
		waitIndex(t, pdir, n)
	}
	for _, id := range ids {
		lookup(t, r, id)
	}
}

// TestPredictionLogRetention: whole segments go by age and then by size,
// oldest first, never the open one, with the input files only they used;
// a max_size too small for keep is reported.
func TestPredictionLogRetention(t *testing.T) {
	dir := shortDir(t)
	pdir := filepath.Join(dir, "p")
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 200 << 10})
	defer pl.close()
	day := 24 * time.Hour
	now := time.Now()
	bigIn := func(i int) string { return strings.Repeat(fmt.Sprintf("%d,", i), 40000) + "\n" }
	// Four segments: 10, 8, 6 and 4 days old, each with an input file of
	// its own, then the open one.
	for s := range 4 {
		at := now.Add(-time.Duration(10-2*s) * day)
		rec(pl, fmt.Sprintf("s%d-big", s), at, bigIn(s))
		for i := range 3 {
			rec(pl, fmt.Sprintf("s%d-%d", s, i), at, "1\n")
		}
		if err := pl.flush(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		waitIndex(t, pdir, uint64(s+1))
	}
	rec(pl, "open", now, "1\n")
	pl.flush(context.Background(), false)
	if n := countFiles(t, filepath.Join(pdir, inputsDir)); n != 4 {
		t.Fatalf("%d input files, want 4", n)
	}
	later := now.Add(time.Hour) // past the input files' grace
	rep, err := applyRetention(pdir, Retention{Keep: 7 * day, GID: -1}, later)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RemovedSegments != 2 || rep.BySize != 0 || rep.RemovedInputs != 2 {
		t.Errorf("by age: %+v", rep)
	}
	segs, _ := listSegments(pdir)
	if diff := cmp.Diff([]uint64{3, 4, 5}, segs); diff != "" {
		t.Errorf("after age (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(idxPath(pdir, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("index of a removed segment kept: %v", err)
	}
	r := openReader(t, dir, "p")
	if _, err := r.Lookup("s0-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired record: %v", err)
	}
	if got := lookup(t, r, "s2-big"); got.Input == nil || string(got.Input) != bigIn(2) {
		t.Errorf("kept input file lost")
	}
	// By size: a bound that holds one segment and its file leaves the
	// newest closed one and the open one; at the rate seen (one segment in
	// four days) it holds less than keep.
	rep, err = applyRetention(pdir, Retention{Keep: 7 * day, MaxBytes: 120 << 10, GID: -1}, later)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RemovedSegments != 1 || rep.BySize != 1 || rep.RemovedInputs != 1 || !rep.ShortOfKeep || rep.HoldsFor >= 7*day {
		t.Errorf("by size: %+v", rep)
	}
	segs, _ = listSegments(pdir)
	if diff := cmp.Diff([]uint64{4, 5}, segs); diff != "" {
		t.Errorf("after size (-want +got):\n%s", diff)
	}
	// Nothing removes the open segment.
	if _, err := applyRetention(pdir, Retention{Keep: time.Nanosecond, MaxBytes: 1, GID: -1}, later.Add(365*day)); err != nil {
		t.Fatal(err)
	}
	segs, _ = listSegments(pdir)
	if diff := cmp.Diff([]uint64{5}, segs); diff != "" {
		t.Errorf("after everything expired (-want +got):\n%s", diff)
	}
	if got := lookup(t, r, "open"); got.ID != "open" {
		t.Errorf("open record: %+v", got)
	}
}

// TestPredictionLogPurge: by time bound and by id, through the endpoint's
// rotation; segments rewritten crash-safely and re-indexed; input files
// nothing refers to removed.
func TestPredictionLogPurge(t *testing.T) {
	dir := shortDir(t)
	pdir := filepath.Join(dir, "p")
	pl := testLog(t, Options{PredLogDir: dir, SegmentBytes: 64 << 10})
	defer pl.close()
	now := time.Now()
	big := strings.Repeat("7,", 40000) + "\n"
	for i := range 100 {
		at := now.Add(time.Duration(i-100) * time.Hour) // one an hour, oldest first
		in := "1\n"
		if i == 10 || i == 60 {
			in = big
		}
		rec(pl, fmt.Sprintf("r%d", i), at, in)
	}
	if err := pl.flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(pdir)
	for _, n := range segs {
		waitIndex(t, pdir, n)
	}
	// Age the input file past its grace.
	old := now.Add(-time.Hour)
	filepath.WalkDir(filepath.Join(pdir, inputsDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	r := openReader(t, dir, "p")
	lookup(t, r, "r50")

	rep, err := Purge(dir, "p", PurgeFilter{Before: now.Add(-50*time.Hour - time.Minute)}, -1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 50 || rep.RemovedInputs != 0 { // r60 still uses the file
		t.Errorf("purge by time: %+v", rep)
	}
	time.Sleep(checkEvery) // a reader sees a purge within checkEvery
	for i := range 100 {
		_, err := r.Lookup(fmt.Sprintf("r%d", i))
		if gone := errors.Is(err, ErrNotFound); gone != (i < 50) {
			t.Errorf("r%d after purge before r50: %v", i, err)
		}
	}
	rep, err = Purge(dir, "p", PurgeFilter{ID: "r60"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 1 || rep.Segments != 1 || rep.RemovedInputs != 1 {
		t.Errorf("purge by id: %+v", rep)
	}
	time.Sleep(checkEvery)
	if _, err := r.Lookup("r60"); !errors.Is(err, ErrNotFound) {
		t.Errorf("r60 after purge: %v", err)
	}
	for _, id := range []string{"r59", "r61", "r99"} {
		lookup(t, r, id)
	}
	if n := countFiles(t, filepath.Join(pdir, inputsDir)); n != 0 {
		t.Errorf("%d input files left", n)
	}
	// Every remaining segment has a valid index and no temp file is left.
	ents, _ := os.ReadDir(pdir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temp file %s left", e.Name())
		}
	}
	segs, _ = listSegments(pdir)
	for _, n := range segs {
		fi, _ := os.Stat(segPath(pdir, n))
		x, err := openIndex(idxPath(pdir, n), fi.Size())
		if err != nil {
			if !isOpenSegment(segPath(pdir, n)) {
				t.Errorf("segment %d: %v", n, err)
			}
			continue
		}
		x.close()
	}
	if _, err := Purge(dir, "p", PurgeFilter{}, -1); err == nil {
		t.Errorf("purge without a bound accepted")
	}
}

// TestInputSample: sample F keeps the inputs of about F of the requests,
// chosen by request id, the same way every time.
func TestInputSample(t *testing.T) {
	p := InputPolicy{Sample: 0.1}
	kept := 0
	for i := range 20000 {
		id := []byte("9f3a2c-" + strconv.FormatInt(int64(i), 36))
		k := p.keeps(id)
		if k != p.keeps(id) {
			t.Fatalf("%s: not deterministic", id)
		}
		if k {
			kept++
		}
	}
	if kept < 1800 || kept > 2200 {
		t.Errorf("sample 0.1 kept %d of 20000", kept)
	}
	if !(InputPolicy{}).keeps([]byte("x")) || (InputPolicy{None: true}).keeps([]byte("x")) {
		t.Errorf("all/none")
	}
	// Through the endpoint: the records say which were kept, matching keeps.
	dir := shortDir(t)
	te := startEndpoint(t, Options{PredLogDir: dir, LogPolicy: LogPolicy{Inputs: p}})
	te.Flip(startBackend(t, "iris/m1"))
	var ids []string
	for range 60 {
		ids = append(ids, te.post(t, "1,2\n3,4\n").id)
	}
	flush(t, te)
	r := openReader(t, dir, "iris")
	n := 0
	for _, id := range ids {
		got := lookup(t, r, id)
		if got.InputKept != p.keeps([]byte(id)) || (got.Input != nil) != got.InputKept || got.Rows != 2 {
			t.Errorf("%s: kept %v input %q rows %d", id, got.InputKept, got.Input, got.Rows)
		}
		if got.InputKept {
			n++
		}
	}
	t.Logf("kept %d of %d inputs", n, len(ids))
}

// TestPredictionLogPermissions: the folder and every file are for root and
// the admin group only (0750/0640, that group).
func TestPredictionLogPermissions(t *testing.T) {
	grp := ""
	for _, name := range []string{"daemon", "nogroup", "bin", "users"} {
		if _, err := user.LookupGroup(name); err == nil {
			grp = name
			break
		}
	}
	if grp == "" || os.Geteuid() != 0 {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("needs root and a spare group to chown to")
		}
		t.Skip("needs root and a spare group to chown to")
	}
	g, _ := user.LookupGroup(grp)
	gid, _ := strconv.Atoi(g.Gid)
	dir := shortDir(t)
	te := startEndpoint(t, Options{PredLogDir: dir, LogGroup: grp})
	te.Flip(startBackend(t, "iris/m1"))
	te.post(t, "1\n")
	te.post(t, strings.Repeat("1,2,3\n", 20000)) // an input file
	flush(t, te)
	if err := te.RotateLog(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, filepath.Join(dir, "iris"), 1)
	seen := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		st := fi.Sys().(*syscall.Stat_t)
		want := fs.FileMode(0o640)
		if d.IsDir() {
			want = 0o750
		}
		if fi.Mode().Perm() != want || int(st.Gid) != gid {
			t.Errorf("%s: mode %v group %d, want %v group %d", p, fi.Mode().Perm(), st.Gid, want, gid)
		}
		seen++
		return nil
	})
	if seen < 6 { // root, iris, segment, index, inputs/, inputs/xx/, file
		t.Errorf("only %d paths checked", seen)
	}
}

// TestPredictionLogBackup: the archive holds segments and indexes, no
// input files.
func TestPredictionLogBackup(t *testing.T) {
	dir := shortDir(t)
	pl := testLog(t, Options{PredLogDir: dir})
	rec(pl, "a", time.Now(), strings.Repeat("1,", 50000))
	rec(pl, "b", time.Now(), "1\n")
	pl.flush(context.Background(), true)
	waitIndex(t, filepath.Join(dir, "p"), 1)
	pl.close()
	var buf bytes.Buffer
	n, err := WriteBackup(dir, &buf)
	if err != nil || n != 2 {
		t.Fatalf("WriteBackup = %d files, %v", n, err)
	}
	if strings.Contains(buf.String(), strings.Repeat("1,", 1000)) {
		t.Errorf("the input file went into the backup")
	}
}

// TestAppendAllocatesNothing: the request path's share of the log (with
// inputs kept, and without, where rows are counted on the spot) allocates
// nothing once the buffer has grown.
func TestAppendAllocatesNothing(t *testing.T) {
	for _, pol := range []InputPolicy{{}, {None: true}} {
		pl := testLog(t, Options{PredLogDir: shortDir(t), SyncInterval: time.Hour, LogPolicy: LogPolicy{Inputs: pol}})
		id, ct, body, out := []byte("3f9a1c20b7d4-1f"), []byte("text/csv"), []byte(strings.Repeat("5.1,3.5\n", 100)), []byte("a\n")
		now := time.Now()
		pl.append(id, "p/m1", now, time.Millisecond, ct, body, 200, out, false)
		if n := testing.AllocsPerRun(50, func() {
			pl.append(id, "p/m1", now, time.Millisecond, ct, body, 200, out, false)
		}); n != 0 {
			t.Errorf("%+v: %v allocations per append", pol, n)
		}
		pl.close()
	}
}
