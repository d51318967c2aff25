package serve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPredictionLogLookup(t *testing.T) {
	dir := shortDir(t)
	te := startEndpoint(t, Options{PredLogDir: dir, OutputCap: 16})
	te.Flip(startBackend(t, "iris/m7"))
	in := "5.1,3.5,1.4,0.2\n"
	a := te.post(t, in, hdrRequestID, "req-1")
	long := te.post(t, strings.Repeat(in, 5)) // 5 rows: output over the cap
	if err := te.FlushLog(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := Lookup(dir, "iris", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(in))
	want := Prediction{RequestID: "req-1", Model: "iris/m7", Status: 200, InputSHA256: hex.EncodeToString(sum[:]), Output: a.body}
	if diff := cmp.Diff(want, got, cmpIgnoreTiming); diff != "" {
		t.Errorf("Lookup (-want +got):\n%s", diff)
	}
	if time.Since(got.Time) > time.Minute || got.Time.After(time.Now()) {
		t.Errorf("record time %v", got.Time)
	}
	got, err = Lookup(dir, "iris", long.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Output != long.body[:16] || !got.OutputTruncated {
		t.Errorf("capped output %q truncated=%v, want %q", got.Output, got.OutputTruncated, long.body[:16])
	}
	if _, err := Lookup(dir, "iris", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(nope) = %v, want ErrNotFound", err)
	}
	var ids []string
	if err := Scan(dir, "iris", func(p Prediction) error { ids = append(ids, p.RequestID); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"req-1", long.id}, ids); diff != "" {
		t.Errorf("Scan ids (-want +got):\n%s", diff)
	}
	if s := te.Stats(); s.LogWritten != 2 || s.LogDropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

var cmpIgnoreTiming = cmp.Transformer("timing", func(p Prediction) Prediction {
	p.Time, p.LatencyUS = time.Time{}, 0
	return p
})

func TestPredictionLogRotation(t *testing.T) {
	dir := shortDir(t)
	const segBytes, maxSegs = 2048, 3
	te := startEndpoint(t, Options{PredLogDir: dir, SegmentBytes: segBytes, MaxSegments: maxSegs, SyncInterval: time.Millisecond})
	te.Flip(startBackend(t, "iris/m1"))
	var ids []string
	for i := range 200 {
		ids = append(ids, te.post(t, fmt.Sprintf("%d\n", i)).id)
		if i%20 == 0 { // several batches, not one
			if err := te.FlushLog(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := te.FlushLog(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(filepath.Join(dir, "iris"))
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != maxSegs {
		t.Errorf("%d segments, want %d", len(segs), maxSegs)
	}
	var kept []string
	for _, n := range segs {
		fi, err := os.Stat(segName(filepath.Join(dir, "iris"), n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > segBytes {
			t.Errorf("segment %d is %d bytes, over %d", n, fi.Size(), segBytes)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("segment mode %v", fi.Mode().Perm())
		}
	}
	if err := Scan(dir, "iris", func(p Prediction) error { kept = append(kept, p.RequestID); return nil }); err != nil {
		t.Fatal(err)
	}
	// What is kept is the newest records, in order, with none missing.
	if len(kept) == 0 || len(kept) >= len(ids) {
		t.Fatalf("kept %d of %d records", len(kept), len(ids))
	}
	if diff := cmp.Diff(ids[len(ids)-len(kept):], kept); diff != "" {
		t.Errorf("kept records are not the newest (-want +got):\n%s", diff)
	}
	if _, err := Lookup(dir, "iris", ids[len(ids)-1]); err != nil {
		t.Errorf("newest: %v", err)
	}
	if _, err := Lookup(dir, "iris", ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest after rotation: %v, want ErrNotFound", err)
	}
}

// TestPredictionLogDropsWhenFull: a writer stuck between syncs (here: a
// sync interval of an hour) must make requests drop and count records, never
// wait; and close still writes what was buffered.
func TestPredictionLogDropsWhenFull(t *testing.T) {
	dir := shortDir(t)
	pl, err := openPredLog(Options{Pipeline: "p", PredLogDir: dir, SegmentBytes: 1 << 20, MaxSegments: 2,
		LogBuffer: 4096, SyncInterval: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := func(i int) {
		pl.append([]byte(fmt.Sprintf("r%d", i)), "p/m1", time.Now(), time.Millisecond, []byte("1\n"), 200, []byte("a\n"), false)
	}
	rec(0) // the first batch goes out at once
	for deadline := time.Now().Add(5 * time.Second); pl.written.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("first record never written")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	const n = 1000
	for i := 1; i < n; i++ {
		rec(i)
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
	var lines int
	if err := Scan(dir, "p", func(Prediction) error { lines++; return nil }); err != nil {
		t.Fatal(err)
	}
	if w, d := pl.written.Load(), pl.dropped.Load(); w+d != n || uint64(lines) != w {
		t.Errorf("written %d + dropped %d != %d, or %d lines on disk", w, d, n, lines)
	}
	rec(n) // after close: dropped, no panic
	if pl.dropped.Load()+pl.written.Load() != n+1 {
		t.Errorf("record after close not counted")
	}
}

// TestPredictionLogReopen: a torn last line (a crash) is skipped, and a
// restart starts a new segment after the old ones.
func TestPredictionLogReopen(t *testing.T) {
	dir := shortDir(t)
	pdir := filepath.Join(dir, "p")
	if err := os.MkdirAll(pdir, 0o750); err != nil {
		t.Fatal(err)
	}
	old := `{"id":"a","model":"p/m1","time":"2026-01-02T03:04:05Z","latency_us":7,"status":200,"input_sha256":"00","output":"x\n"}` + "\n" +
		`{"id":"b","model":"p/m1","ti`
	if err := os.WriteFile(segName(pdir, 41), []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	pl, err := openPredLog(Options{Pipeline: "p", PredLogDir: dir, SegmentBytes: 1 << 20, MaxSegments: 4,
		LogBuffer: 1 << 20, SyncInterval: time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pl.append([]byte("c"), "p/m2", time.Now(), 0, nil, 200, []byte("quote\" back\\slash \x01 \xff é"), false)
	if err := pl.close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(pdir)
	if diff := cmp.Diff([]uint64{41, 42}, segs); diff != "" {
		t.Errorf("segments (-want +got):\n%s", diff)
	}
	var got []Prediction
	if err := Scan(dir, "p", func(p Prediction) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RequestID != "a" || got[1].RequestID != "c" {
		t.Fatalf("scan: %+v", got)
	}
	if want := "quote\" back\\slash \x01 \ufffd é"; got[1].Output != want {
		t.Errorf("escaped output round trip: %q, want %q", got[1].Output, want)
	}
	// Every line is valid JSON on its own.
	b, _ := os.ReadFile(segName(pdir, 42))
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("invalid JSON line %q", line)
		}
	}
	if p, err := Lookup(dir, "p", "a"); err != nil || p.LatencyUS != 7 {
		t.Errorf("Lookup(a) = %+v, %v", p, err)
	}
}
