package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDigitsSkip: without torch-digits.tar in the images folder, step 7
// says in one line that it is skipped and why, and the demo goes on: it
// asks kilnd nothing (this box has no kiln to ask, so a call would fail).
func TestDigitsSkip(t *testing.T) {
	images := t.TempDir()
	var out strings.Builder
	d := &demo{b: &box{opt: options{bin: t.TempDir(), images: images, out: t.TempDir()}, t0: time.Now()}, out: &out}
	if err := d.digits(context.Background()); err != nil {
		t.Fatalf("step 7 without the archive: %v; want it skipped", err)
	}
	want := "skipped: " + filepath.Join(images, "torch-digits.tar") + " is not built (make images-torch, ~5 min once)"
	if d.rep.DigitsSkipped != want || !strings.Contains(out.String(), "[7/7") || !strings.Contains(out.String(), "  "+want+"\n") {
		t.Errorf("narration %q, report %q; want step 7's header and %q", out.String(), d.rep.DigitsSkipped, want)
	}
	if n := strings.Count(strings.TrimSpace(out.String()), "\n"); n != 1 {
		t.Errorf("narration %q: %d lines after the header; want the one skip line", out.String(), n)
	}
}

// TestDigitsArchive: a present archive runs the step; a folder that cannot
// be read is an error, not a skip.
func TestDigitsArchive(t *testing.T) {
	images := t.TempDir()
	if err := os.WriteFile(filepath.Join(images, "torch-digits.tar"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if path, skip, err := digitsArchive(images); err != nil || skip != "" || path != filepath.Join(images, "torch-digits.tar") {
		t.Errorf("digitsArchive with the archive = %q, %q, %v; want its path, no skip", path, skip, err)
	}
	notDir := filepath.Join(images, "torch-digits.tar")
	if _, skip, err := digitsArchive(notDir); err == nil || skip != "" {
		t.Errorf("digitsArchive(%s), a file = skip %q, err %v; want an error", notDir, skip, err)
	}
}

// checkDigits asserts step 7's report when it ran.
func checkDigits(t *testing.T, rep report) {
	t.Helper()
	if rep.DigitsLive == "" || rep.DigitsAccuracy < 0.9 || rep.DigitsHoldout < 100 {
		t.Errorf("digits model %q: accuracy %v on %d holdout images; want live, >= 0.9 on >= 100", rep.DigitsLive, rep.DigitsAccuracy, rep.DigitsHoldout)
	}
	if len(rep.DigitsPredicted) != digitsHeld || agreeing(rep.DigitsPredicted, rep.DigitsTruth) < digitsHeld*3/4 {
		t.Errorf("kiln predict digits: %v for %v; want %d answers, most right", rep.DigitsPredicted, rep.DigitsTruth, digitsHeld)
	}
	if rep.DigitsQuarantined != "quarantined" || !strings.Contains(rep.DigitsReason, "3/"+corruptDigit) {
		t.Errorf("corrupt digits batch %s: %q; want quarantined naming 3/%s", rep.DigitsQuarantined, rep.DigitsReason, corruptDigit)
	}
}
