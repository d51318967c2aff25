package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestStatusShowsMinFreePause: with less free on the state disk than
// disk.min_free, a dropped batch waits and `kiln status` says ingest is
// paused, why (free vs disk.min_free), and what to do; -o json says
// state "paused" with min_free for scripts. The pipeline's line is there
// with no live model yet. When the disk grows, ingest resumes by itself
// and status says running.
func TestStatusShowsMinFreePause(t *testing.T) {
	needRoot(t) // a tmpfs state disk
	root, state := ingestOnTmpfs(t, "12Mi", "16m")
	k := startKilnd(t, root)
	k.expect("READY=1")
	fillTo := filepath.Join(state, "filler")
	if err := os.WriteFile(fillTo, make([]byte, 6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dropData(t, root, "d.csv", string(cancerCSV(t)))

	status := func() api.Status {
		out, stderr, err := k.kiln(nil, "status", "-o", "json")
		var st api.Status
		if err != nil || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("kiln status -o json: %v: %s", err, stderr)
		}
		return st
	}
	waitFor(t, "ingest to pause under disk.min_free", func() bool { return status().Ingest.State == "paused" })
	st := status()
	if !strings.Contains(st.Ingest.Paused, "disk.min_free 12.0Mi") || st.Ingest.MinFree != 12<<20 {
		t.Errorf("kiln status -o json while low: ingest %+v; want the reason naming disk.min_free and min_free 12 MiB", st.Ingest)
	}
	out, _, err := k.kiln(nil, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ingest pauses under 12.0 MiB", "paused: ", "needed to keep disk.min_free", "free space on the state disk (kiln gc", "resumes by itself",
		"pipeline cancer", "no live model"} {
		if !strings.Contains(out, want) {
			t.Errorf("kiln status while low:\n%s\nwant %q", out, want)
		}
	}

	mountFS(t, "-o", "remount,size=64m", state)
	waitLong(t, 20*time.Second, "ingest to resume", func() bool { return status().Ingest.State == "running" })
	waitLong(t, 20*time.Second, "the batch ingested", func() bool { return len(datasetsOf(t, k)) == 1 })
	if out, _, _ := k.kiln(nil, "status"); !strings.Contains(out, "running (1 version since start") {
		t.Errorf("kiln status after the disk grew:\n%s\nwant ingest running with the version counted", out)
	}
}
