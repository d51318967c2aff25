package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/storage"
)

// These tests put kilnd's state dir on a filesystem of its own, a few MiB
// big, and take the disk away under it: full (tmpfs, grown back with
// remount,size=) and read-only (ext4 on a loop device remounted read-only by
// a filesystem error, as a failing disk does). Ingest must pause and say
// why, nothing half-written may become visible, the database must stay
// consistent, and the batch must be ingested once the disk is back.

// ingestOnlySpec never trains: these tests are about the data path alone.
const ingestOnlySpec = `name: cancer
data: {format: csv, label: diagnosis, settle: SETTLE}
train: {image: kiln.local/tabular-trainer:1}
serve: {image: kiln.local/tabular-server:1}
triggers: {new_data: {min_rows: 100000000}}
`

func mountFS(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v: %s", args, err, out)
	}
}

func unmountLater(t *testing.T, dir string) {
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fill writes zeros to path until the filesystem refuses (ENOSPC).
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("fill %s: %v; want ENOSPC", path, err)
			}
			return
		}
	}
}

// noPartialBlobs fails when the blob store holds a leftover temp file or
// another count of whole blobs than want (those of the committed datasets).
func noPartialBlobs(t *testing.T, state string, want int) {
	t.Helper()
	tmp, _ := os.ReadDir(filepath.Join(state, "blobs/tmp"))
	if len(tmp) != 0 {
		t.Errorf("blobs/tmp holds %d half-written files after the failure; want none", len(tmp))
	}
	if n := countBlobs(state); n != want {
		t.Errorf("blob store holds %d blobs; want %d", n, want)
	}
}

func countBlobs(state string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(state, "blobs/sha256"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// checkDB opens kiln.db as bbolt's own checker does (every page reachable
// once, free list sound) and verifies kiln's event chain; kilnd must be
// stopped.
func checkDB(t *testing.T, state string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(state, "kiln.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("open kiln.db: %v", err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("bbolt check of kiln.db: %v", err)
	}
	db.Close()
	s, err := storage.Open(state, storage.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	defer s.Close()
	if err := s.Verify(context.Background()); err != nil {
		t.Errorf("event chain: %v", err)
	}
}

func hasEvent(t *testing.T, k *kilnd, kind, detail string) bool {
	for _, e := range eventsOf(t, k) {
		if e.Kind == kind && strings.Contains(strings.Join(mapValues(e.Details), " "), detail) {
			return true
		}
	}
	return false
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ingestOnTmpfs is a kilnd root with no containerd, disk.min_free minFree,
// its state folder on a tmpfs of size, and the ingest-only cancer pipeline.
func ingestOnTmpfs(t *testing.T, minFree, size string) (root, state string) {
	t.Helper()
	root = newRoot(t, "containerd: {address: /nonexistent.sock}\ndisk: {min_free: "+minFree+"}\n")
	state = filepath.Join(root, "var/lib/kiln")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	mountFS(t, "-t", "tmpfs", "-o", "size="+size, "tmpfs", state)
	unmountLater(t, state)
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), strings.Replace(ingestOnlySpec, "SETTLE", "0s", 1))
	return root, state
}

func TestDiskFullPausesIngest(t *testing.T) {
	needRoot(t)
	// min_free 0: no early pause, so the write itself hits ENOSPC.
	root, state := ingestOnTmpfs(t, "0", "8m")
	k := startKilnd(t, root)
	k.expect("READY=1")

	data := cancerCSV(t)
	drop := filepath.Join(state, "drop/cancer")
	writeFile(t, filepath.Join(drop, ".d.part"), string(data))
	fill(t, filepath.Join(state, "filler"))
	if err := os.Rename(filepath.Join(drop, ".d.part"), filepath.Join(drop, "d.csv")); err != nil {
		t.Fatal(err)
	}

	var st api.Status
	waitFor(t, "ingest to pause", func() bool {
		var err error
		st, err = k.client().Status(context.Background())
		return err == nil && st.Ingest.Paused != ""
	})
	if !strings.Contains(st.Ingest.Paused, "full") || st.Ingest.State != "paused" || !strings.Contains(st.Message, "ingest paused") {
		t.Errorf("status while full: ingest %+v, message %q; want state paused and the full disk named", st.Ingest, st.Message)
	}
	out, _, _ := k.kiln(nil, "status")
	if !strings.Contains(out, "paused: the state disk is full") || !strings.Contains(out, "resumes by itself") {
		t.Errorf("kiln status while full:\n%s\nwant the ingest line saying the disk is full and what to do", out)
	}
	if ds := datasetsOf(t, k); len(ds) != 0 {
		t.Errorf("datasets while full = %+v; want none", ds)
	}
	if _, err := os.Stat(filepath.Join(drop, "d.csv")); err != nil {
		t.Errorf("the dropped file left the drop folder while the disk was full: %v", err)
	}
	noPartialBlobs(t, state, 0)

	// Room again: grow the filesystem under kilnd.
	t0 := time.Now()
	mountFS(t, "-o", "remount,size=64m", state)
	waitLong(t, 20*time.Second, "the batch ingested after the disk grew", func() bool {
		ds := datasetsOf(t, k)
		return len(ds) == 1 && ds[0].State == "accepted"
	})
	t.Logf("ingest resumed %s after the disk grew", time.Since(t0).Round(time.Millisecond))
	if st, _ := k.client().Status(context.Background()); st.Ingest.Paused != "" || st.Ingest.State != "running" {
		t.Errorf("status after recovery: ingest %+v; want running", st.Ingest)
	}
	if _, err := os.Stat(filepath.Join(drop, "d.csv")); !os.IsNotExist(err) {
		t.Errorf("drop folder after ingest: stat d.csv = %v; want it gone", err)
	}
	// The pause event may be lost: a full disk takes no event either.
	if !hasEvent(t, k, "ingest.resumed", "") {
		t.Errorf("events lack ingest.resumed")
	}
	t.Logf("ingest.paused recorded while full: %v", hasEvent(t, k, "ingest.paused", "full"))
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	if err := k.wait(); err != nil {
		t.Errorf("kilnd stop: %v", err)
	}
	checkDB(t, state)
}

// TestStateDiskGoesReadOnly: the state filesystem turns read-only under a
// running kilnd (ext4 errors=remount-ro, the error injected through
// /sys/fs/ext4/DEV/trigger_fs_error, the path a failing disk takes). A
// plain `mount -o remount,ro` is refused while kilnd holds kiln.db open for
// writing; an emergency read-only remount is not, and it cannot be undone
// without an unmount, so recovery here is what an operator does: stop
// kilnd, fsck, mount, start.
func TestStateDiskGoesReadOnly(t *testing.T) {
	needRoot(t)
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\ndisk: {min_free: 1Mi}\n")
	state := filepath.Join(root, "var/lib/kiln")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(root, "state.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 48<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mountFS(t, "-o", "loop,errors=remount-ro", img, state)
	unmountLater(t, state)
	src, err := exec.Command("findmnt", "-no", "SOURCE", state).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Base(strings.TrimSpace(string(src)))

	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), strings.Replace(ingestOnlySpec, "SETTLE", "1s", 1))
	k := startKilnd(t, root)
	k.expect("READY=1")
	data := cancerCSV(t)
	lines := strings.SplitAfter(string(data), "\n")
	first, second := strings.Join(lines[:300], ""), lines[0]+strings.Join(lines[300:], "")
	dropData(t, root, "a.csv", first)
	waitLong(t, 20*time.Second, "the first batch", func() bool { return len(datasetsOf(t, k)) == 1 })
	blobs := countBlobs(state)

	// The second batch lands, and within its settle time the disk fails.
	// Its writer synced it, as a careful producer does: what the failure
	// loses is what kilnd had not made durable, nothing else.
	dropData(t, root, "b.csv", second)
	syscall.Sync()
	if err := os.WriteFile("/sys/fs/ext4/"+dev+"/trigger_fs_error", []byte("kiln test: disk failing"), 0o200); err != nil {
		t.Fatalf("inject the ext4 error: %v", err)
	}
	var st api.Status
	waitLong(t, 20*time.Second, "ingest to pause on the read-only disk", func() bool {
		st, err = k.client().Status(context.Background())
		return err == nil && strings.Contains(st.Ingest.Paused, "read-only")
	})
	if ds := datasetsOf(t, k); len(ds) != 1 {
		t.Errorf("datasets on the read-only disk = %d; want the first only", len(ds))
	}
	if doc, err := k.client().Doctor(context.Background()); err != nil || findCheck(doc, "state-dir").Result != api.CheckFail {
		t.Errorf("doctor state-dir on a read-only disk = %+v, %v; want fail", findCheck(doc, "state-dir"), err)
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	_ = k.wait() // its last writes may fail; the state on disk is what counts

	// The operator's repair: unmount, fsck, mount, start kilnd again.
	if out, err := exec.Command("umount", state).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput(); err != nil {
		// Exit 1: errors corrected, which the injected error asks for.
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck: %v: %s", err, out)
		}
	}
	mountFS(t, "-o", "loop,errors=remount-ro", img, state)
	checkDB(t, state)
	noPartialBlobs(t, state, blobs)
	k2 := startKilnd(t, root)
	k2.expect("READY=1")
	waitLong(t, 20*time.Second, "the second batch after the repair", func() bool { return len(datasetsOf(t, k2)) == 2 })
	for _, d := range datasetsOf(t, k2) {
		if d.State != "accepted" {
			t.Errorf("dataset %s is %s after the repair; want accepted", d.ID, d.State)
		}
	}
}
