package main

import (
	"encoding/csv"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// checkPredictHeader sends the last 40 rows of data through
// `kiln predict cancer -o json` with the header kept, the columns reversed
// and the label among them: kiln matches the header by name against the
// live model's columns. Then with one feature column dropped: one line on
// stderr naming it, exit 1. Called with a live cancer model.
func checkPredictHeader(t *testing.T, k *kilnd, data []byte, label string) {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	li := slices.Index(recs[0], label)
	var labels []string
	for _, r := range recs[len(recs)-40:] {
		labels = append(labels, r[li])
	}
	encode := func(drop int) string {
		var b strings.Builder
		w := csv.NewWriter(&b)
		for _, r := range append(recs[:1:1], recs[len(recs)-40:]...) {
			rev := slices.Clone(r)
			slices.Reverse(rev)
			if drop >= 0 {
				rev = slices.Delete(rev, drop, drop+1)
			}
			_ = w.Write(rev)
		}
		w.Flush()
		return b.String()
	}
	predict := func(in string) (string, string, error) {
		cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer", "-o", "json")
		cmd.Stdin = strings.NewReader(in)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, stderr, err := predict(encode(-1))
	var got []string
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || agreement(got, labels) < 0.85 {
		t.Errorf("kiln predict -o json with a reversed header: %v, %s, %d predictions agreeing %.2f; want %d, >= 0.85",
			err, stderr, len(got), agreement(got, labels), len(labels))
	}
	// Reversed, index 0 is the last column; drop the first feature that is
	// not the label.
	drop := 0
	if recs[0][len(recs[0])-1] == label {
		drop = 1
	}
	missing := recs[0][len(recs[0])-1-drop]
	_, stderr, err = predict(encode(drop))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, "the header lacks column "+missing+" of pipeline cancer") {
		t.Errorf("kiln predict without column %s: %v, stderr %q; want exit 1 and one line naming it", missing, err, stderr)
	}
}

// checkImagesOnce: a table of images (kiln images import, kiln images)
// names each image once, by its tags: kilnd's digest pin beside each tag is
// not a row of its own.
func checkImagesOnce(t *testing.T, what, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	seen := map[string]bool{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "imported" {
			continue
		}
		if strings.HasPrefix(f[0], "sha256:") || f[0] == "(pinned)" || seen[f[1]] {
			t.Errorf("%s: image %s listed twice or by its pin:\n%s", what, f[1], out)
		}
		seen[f[1]] = true
	}
	if len(seen) == 0 {
		t.Errorf("%s: no image rows:\n%s", what, out)
	}
}
