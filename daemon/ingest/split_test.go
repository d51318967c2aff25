package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func partRows(s string) map[string]bool {
	out := map[string]bool{}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for _, l := range lines[1:] {
		out[l] = true
	}
	return out
}

// TestSplitStableAcrossReingestion: a row lands in the same part whichever file or batch it
// comes in, whatever the line endings or BOM, so a holdout row never leaks into training.
func TestSplitStableAcrossReingestion(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n", "evaluate: {holdout: {fraction: 0.3, seed: 7}}"))
	a := csvRows(300, 0)
	renameIn(t, e.drop("p"), "a.csv", a)
	da := e.waitDatasets("p", 1, 5*time.Second)[0]
	// The same rows with CRLF and a BOM: different bytes, same parts.
	renameIn(t, e.drop("p"), "b.csv", "\uFEFF"+strings.ReplaceAll(a, "\n", "\r\n"))
	db := e.waitDatasets("p", 2, 5*time.Second)[1]
	if db.Files[0].Blob.Digest == da.Files[0].Blob.Digest {
		t.Fatal("b.csv has a's bytes")
	}
	if *db.Train != *da.Train || *db.Holdout != *da.Holdout {
		t.Errorf("parts differ for the same rows: train %v vs %v, holdout %v vs %v", db.Train, da.Train, db.Holdout, da.Holdout)
	}
	// Reversed, mixed with new rows, in a batch.
	lines := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	var c strings.Builder
	c.WriteString(lines[0] + "\n")
	for i := len(lines) - 1; i >= 1; i-- {
		c.WriteString(lines[i] + "\n")
		fmt.Fprintf(&c, "%d,0.5,a\n", 100000+i)
	}
	renameIn(t, e.drop("p"), "c.csv", c.String())
	dc := e.waitDatasets("p", 3, 5*time.Second)[2]
	trainA, holdA := partRows(e.blob(da.Train)), partRows(e.blob(da.Holdout))
	trainC, holdC := partRows(e.blob(dc.Train)), partRows(e.blob(dc.Holdout))
	for r := range trainA {
		if !trainC[r] {
			t.Fatalf("row %q was train, now holdout", r)
		}
	}
	for r := range holdA {
		if !holdC[r] {
			t.Fatalf("row %q was holdout, now train", r)
		}
	}
	if f := float64(len(holdA)) / 300; f < 0.2 || f > 0.4 {
		t.Errorf("holdout fraction %.2f, want about 0.3", f)
	}
	m := e.meta(dc)
	if m.Manifest.Split == nil || m.Manifest.Split.Seed != 7 || m.Manifest.Split.Fraction != 0.3 {
		t.Errorf("manifest split = %+v", m.Manifest.Split)
	}
}
