package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

func TestRenameInCommitsWithoutSettleWait(t *testing.T) {
	e := newEnv(t, spec(t, "iris", "format: csv\nlabel: label\nsettle: 0s\n"))
	start := time.Now()
	renameIn(t, e.drop("iris"), "a.csv", csvRows(50, 0))
	ds := e.waitDatasets("iris", 1, 5*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("rename-in took %s to commit; want well under a second with settle 0", took)
	}
	d := ds[0]
	if d.ID != "iris/d1" || d.State != storage.DatasetAccepted || d.Kind != storage.KindData || d.Rows != 50 {
		t.Fatalf("dataset = %+v", d)
	}
	e.waitFor("drop folder emptied", 2*time.Second, func() bool { return len(entries(t, e.drop("iris"))) == 0 })
	m := e.meta(d)
	if len(m.Manifest.Files) != 1 || m.Manifest.Files[0].Path != "a.csv" || m.Manifest.Files[0].Size != int64(len(csvRows(50, 0))) {
		t.Errorf("manifest files = %+v", m.Manifest.Files)
	}
	var rows int64
	for _, p := range m.Manifest.Parts {
		rows += p.Rows
	}
	if rows != 50 || d.Train == nil || d.Holdout == nil {
		t.Errorf("parts = %+v (train %v, holdout %v), want 50 rows in two parts", m.Manifest.Parts, d.Train, d.Holdout)
	}
	train, holdout := e.blob(d.Train), e.blob(d.Holdout)
	if !strings.HasPrefix(train, "x,y,label\n") || !strings.HasPrefix(holdout, "x,y,label\n") {
		t.Errorf("parts lack the header:\n%s\n%s", train, holdout)
	}
	if n := strings.Count(train, "\n") + strings.Count(holdout, "\n") - 2; n != 50 {
		t.Errorf("parts hold %d rows, want 50", n)
	}
	if evs := e.events("dataset.accepted"); len(evs) != 1 || evs[0].Refs[0] != "iris/d1" {
		t.Errorf("accepted events = %+v", evs)
	}
	anc, err := e.store.Ancestors("iris/d1", 1)
	if err != nil || len(anc) != 1 || anc[0].Edge != EdgeDropped || !strings.HasPrefix(anc[0].ID, "uid:") {
		t.Errorf("lineage = %+v, %v", anc, err)
	}
}

func TestWriterHoldingFileOpenIsNotTaken(t *testing.T) {
	if os.Geteuid() != 0 {
		const why = "read leases on files of other owners need root (kilnd runs as root)"
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but: " + why)
		}
		t.Skip(why)
	}
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 100ms\n"))
	f, err := os.Create(filepath.Join(e.drop("p"), "slow.csv"))
	if err != nil {
		t.Fatal(err)
	}
	content := csvRows(40, 0)
	half := strings.Index(content[len(content)/2:], "\n") + len(content)/2 + 1
	if _, err := f.WriteString(content[:half]); err != nil {
		t.Fatal(err)
	}
	// Pause far longer than settle with the file still open for writing.
	time.Sleep(600 * time.Millisecond)
	if ds := e.datasets("p"); len(ds) != 0 {
		t.Fatalf("a file still open for writing was taken: %+v", ds)
	}
	if _, err := f.WriteString(content[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ds := e.waitDatasets("p", 1, 5*time.Second)
	if ds[0].Rows != 40 {
		t.Errorf("rows = %d, want all 40 (a partial file was ingested)", ds[0].Rows)
	}
}

func TestRsyncTempNameThenRename(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
	dir := e.drop("p")
	// rsync writes .name.XXXXXX and renames; curl and browsers write .part; editors ~ and .tmp.
	for _, n := range []string{".data.csv.Ab12Cd", "data.csv.part", "data.csv~", "data.csv.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(csvRows(5, 0)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if ds := e.datasets("p"); len(ds) != 0 {
		t.Fatalf("temp names were ingested: %+v", ds)
	}
	if err := os.Rename(filepath.Join(dir, ".data.csv.Ab12Cd"), filepath.Join(dir, "data.csv")); err != nil {
		t.Fatal(err)
	}
	ds := e.waitDatasets("p", 1, 5*time.Second)
	if ds[0].Rows != 5 {
		t.Errorf("rows = %d", ds[0].Rows)
	}
	e.waitFor("data.csv gone", 2*time.Second, func() bool {
		_, err := os.Lstat(filepath.Join(dir, "data.csv"))
		return os.IsNotExist(err)
	})
	if got := entries(t, dir); len(got) != 3 {
		t.Errorf("folder = %v, want the three temp names left alone", got)
	}
}

func TestSuccessClosesBatchInNewSubfolder(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
	b := filepath.Join(e.drop("p"), "2026-11-26")
	if err := os.MkdirAll(filepath.Join(b, "more"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"a.csv", "b.csv", "more/c.csv"} {
		if err := os.WriteFile(filepath.Join(b, n), []byte(csvRows(10, 100*i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if ds := e.datasets("p"); len(ds) != 0 {
		t.Fatalf("a batch without _SUCCESS was taken: %+v", ds)
	}
	if err := os.WriteFile(filepath.Join(b, SuccessMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ds := e.waitDatasets("p", 1, 5*time.Second)
	if ds[0].Rows != 30 || len(DataFiles(ds[0])) != 3 {
		t.Fatalf("dataset = %+v, want one version of 3 files and 30 rows", ds[0])
	}
	var paths []string
	for _, f := range DataFiles(ds[0]) {
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, ",") != "a.csv,b.csv,more/c.csv" {
		t.Errorf("files = %v", paths)
	}
	e.waitFor("batch folder removed", 2*time.Second, func() bool { return len(entries(t, e.drop("p"))) == 0 })
	// A second batch in another new folder, closed as it is made: it is watched too.
	b2 := filepath.Join(e.drop("p"), "second")
	if err := os.Mkdir(b2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b2, "x.csv"), []byte(csvRows(3, 7)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b2, SuccessMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.waitDatasets("p", 2, 5*time.Second)
}

func TestRemovedPipelineStopsIngestKeepsFolders(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n")
	e := newEnv(t, p)
	renameIn(t, e.drop("p"), "a.csv", csvRows(5, 0))
	e.waitDatasets("p", 1, 5*time.Second)
	e.m.SetPipelines(nil)
	e.waitFor("pipeline unwatched", 2*time.Second, func() bool { return len(e.m.Status().Pipelines) == 0 })
	renameIn(t, e.drop("p"), "b.csv", csvRows(5, 50))
	time.Sleep(300 * time.Millisecond)
	if ds := e.datasets("p"); len(ds) != 1 {
		t.Fatalf("a removed pipeline still ingests: %d datasets", len(ds))
	}
	if got := entries(t, e.drop("p")); len(got) != 1 {
		t.Errorf("drop folder = %v, want b.csv kept", got)
	}
	// Loading it again picks up what waited.
	e.m.SetPipelines(map[string]*config.Pipeline{"p": p})
	e.waitDatasets("p", 2, 5*time.Second)
}

// TestBatchWaitsForTempNames: rsync may write _SUCCESS before the files sorting after it;
// a closed batch waits while temp names change, and goes without leftovers that stop.
func TestBatchWaitsForTempNames(t *testing.T) {
	old := partialWait
	partialWait = 400 * time.Millisecond
	t.Cleanup(func() { partialWait = old })
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
	b := filepath.Join(e.drop("p"), "batch")
	if err := os.Mkdir(b, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(b, ".b.csv.Xy12")
	// a.csv, a leftover, a slow upload under rsync's temp name, and _SUCCESS before the
	// upload is done (rsync sends _SUCCESS before b.csv: "_" sorts first).
	for _, n := range []string{"a.csv", ".DS_Store", ".b.csv.Xy12", SuccessMarker} {
		if err := os.WriteFile(filepath.Join(b, n), []byte(csvRows(4, 0)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		time.Sleep(200 * time.Millisecond)
		if err := os.WriteFile(tmp, []byte(csvRows(4+i, 10)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ds := e.datasets("p"); len(ds) != 0 {
		t.Fatalf("batch taken while a temp name was still changing: %+v", ds)
	}
	if err := os.Rename(tmp, filepath.Join(b, "b.csv")); err != nil {
		t.Fatal(err)
	}
	ds := e.waitDatasets("p", 1, 5*time.Second)
	if len(DataFiles(ds[0])) != 2 || ds[0].Rows != 4+6 {
		t.Errorf("dataset = %+v, want a.csv and b.csv without .DS_Store", ds[0])
	}
	e.waitFor("batch emptied but for the leftover", 2*time.Second, func() bool {
		got := entries(t, b)
		return len(got) == 1 && got[0] == ".DS_Store"
	})
}
