package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

func mustUpdate(t *testing.T, s *storage.Store, fn func(tx *storage.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func putBlob(t *testing.T, s *storage.Store, content string) storage.BlobRef {
	t.Helper()
	ref, err := s.PutBlob(context.Background(), strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestRecordsAndIDs(t *testing.T) {
	s := storagetest.OpenAt(t, t.TempDir(), storage.Options{Now: fixedClock()})
	train := putBlob(t, s, "a,b\n1,2\n")
	var d1, d2 storage.Dataset
	var r storage.Run
	var m storage.Model
	var dep storage.Deployment
	mustUpdate(t, s, func(tx *storage.Tx) error {
		var err error
		if d1, err = tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted, Rows: 150, Train: &train}); err != nil {
			return err
		}
		if d2, err = tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindFeedback, State: storage.DatasetQuarantined, Reason: "nulls"}); err != nil {
			return err
		}
		if r, err = tx.CreateRun(storage.Run{Pipeline: "iris", Datasets: []string{d1.ID}, Image: "sha256:" + strings.Repeat("1", 64)}); err != nil {
			return err
		}
		if m, err = tx.CreateModel(storage.Model{Pipeline: "iris", Run: r.ID}); err != nil {
			return err
		}
		dep, err = tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: m.ID})
		if err != nil {
			return err
		}
		_, err = tx.Append(storage.Event{Kind: "model.created", Pipeline: "iris", Refs: []string{m.ID}})
		return err
	})
	gotIDs := []string{d1.ID, d2.ID, r.ID, m.ID, dep.ID}
	if d := cmp.Diff([]string{"iris/d1", "iris/d2", "iris/r1", "iris/m1", "iris/e1"}, gotIDs); d != "" {
		t.Errorf("IDs (-want +got):\n%s", d)
	}
	if r.State != storage.RunQueued || m.State != storage.ModelCandidate || dep.State != storage.DeployLive {
		t.Errorf("default states: run %s model %s deployment %s", r.State, m.State, dep.State)
	}
	got, err := s.Dataset("iris/d1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(d1, got); d != "" {
		t.Errorf("Dataset round trip (-want +got):\n%s", d)
	}
	// Update a state; list in numeric order past d9.
	mustUpdate(t, s, func(tx *storage.Tx) error {
		d2.State, d2.Released = storage.DatasetReleased, "uid:1000"
		if err := tx.PutDataset(d2); err != nil {
			return err
		}
		for range 10 {
			if _, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted}); err != nil {
				return err
			}
		}
		_, err := tx.CreateDataset(storage.Dataset{Pipeline: "pumps", Kind: storage.KindData, State: storage.DatasetAccepted})
		return err
	})
	err = s.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets("iris")
		if err != nil {
			return err
		}
		var ids []string
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		want := []string{"iris/d1", "iris/d2", "iris/d3", "iris/d4", "iris/d5", "iris/d6", "iris/d7", "iris/d8", "iris/d9", "iris/d10", "iris/d11", "iris/d12"}
		if d := cmp.Diff(want, ids); d != "" {
			t.Errorf("Datasets(iris) (-want +got):\n%s", d)
		}
		if ds[1].State != storage.DatasetReleased || ds[1].Released != "uid:1000" {
			t.Errorf("released dataset = %+v", ds[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	errCases := []struct {
		name string
		fn   func(tx *storage.Tx) error
		want error
	}{
		{"bad pipeline", func(tx *storage.Tx) error {
			_, err := tx.CreateDataset(storage.Dataset{Pipeline: "Iris!", Kind: storage.KindData, State: storage.DatasetAccepted})
			return err
		}, storage.ErrInvalid},
		{"bad kind", func(tx *storage.Tx) error {
			_, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: "x", State: storage.DatasetAccepted})
			return err
		}, storage.ErrInvalid},
		{"model of missing run", func(tx *storage.Tx) error {
			_, err := tx.CreateModel(storage.Model{Pipeline: "iris", Run: "iris/r99"})
			return err
		}, storage.ErrNotFound},
		{"put missing", func(tx *storage.Tx) error {
			return tx.PutRun(storage.Run{ID: "iris/r42", State: storage.RunFailed})
		}, storage.ErrNotFound},
		{"bad state", func(tx *storage.Tx) error {
			m.State = "happy"
			return tx.PutModel(m)
		}, storage.ErrInvalid},
		{"lease held", func(tx *storage.Tx) error {
			if err := tx.PutLease(storage.Lease{GPU: "GPU-1", Run: "iris/r1"}); err != nil {
				return err
			}
			return tx.PutLease(storage.Lease{GPU: "GPU-1", Run: "iris/r2"})
		}, storage.ErrExists},
	}
	for _, tc := range errCases {
		if err := s.Update(context.Background(), tc.fn); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := s.Model("iris/d1"); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Model(dataset id) = %v, want ErrInvalid", err)
	}
	mustUpdate(t, s, func(tx *storage.Tx) error {
		if err := tx.PutLease(storage.Lease{GPU: "GPU-1", Run: "iris/r1", Pipeline: "iris"}); err != nil {
			return err
		}
		ls, err := tx.Leases()
		if err != nil || len(ls) != 1 || ls[0].Run != "iris/r1" {
			return fmt.Errorf("Leases() = %v, %v", ls, err)
		}
		return tx.ReleaseLease("GPU-1")
	})
}

// graph builds: d1..d6 -> r1 (window d1..d3), r2 (window d2..d6); r1 -> m1, r2 -> m2;
// m1 -> e1, m2 -> e2; e1 -> e2 (replaced); e2 -> e3 (rollback, serving m1).
func graph(t *testing.T, s *storage.Store) {
	t.Helper()
	mustUpdate(t, s, func(tx *storage.Tx) error {
		for range 6 {
			if _, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted}); err != nil {
				return err
			}
		}
		steps := []func() error{
			func() error {
				_, err := tx.CreateRun(storage.Run{Pipeline: "iris", Datasets: []string{"iris/d1", "iris/d2", "iris/d3"}})
				return err
			},
			func() error {
				_, err := tx.CreateRun(storage.Run{Pipeline: "iris", Datasets: []string{"iris/d2", "iris/d3", "iris/d4", "iris/d5", "iris/d6"}, GPU: "GPU-abc"})
				return err
			},
			func() error { _, err := tx.CreateModel(storage.Model{Pipeline: "iris", Run: "iris/r1"}); return err },
			func() error { _, err := tx.CreateModel(storage.Model{Pipeline: "iris", Run: "iris/r2"}); return err },
			func() error {
				_, err := tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: "iris/m1"})
				return err
			},
			func() error {
				_, err := tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: "iris/m2", Previous: "iris/e1"})
				return err
			},
			func() error {
				_, err := tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: "iris/m1", Previous: "iris/e2", Rollback: true})
				return err
			},
			func() error { return tx.Link("uid:1000", "iris/d4", storage.EdgeReleased) },
		}
		for _, st := range steps {
			if err := st(); err != nil {
				return err
			}
		}
		return nil
	})
}

func ids(ns []storage.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, fmt.Sprintf("%s@%d", n.ID, n.Depth))
	}
	slices.Sort(out)
	return out
}

func TestLineage(t *testing.T) {
	s := storagetest.Open(t)
	graph(t, s)
	tests := []struct {
		name  string
		query func() ([]storage.Node, error)
		want  []string
	}{
		{"ancestors of m2, depth 1", func() ([]storage.Node, error) { return s.Ancestors("iris/m2", 1) }, []string{"iris/r2@1"}},
		{"ancestors of m2, depth 2", func() ([]storage.Node, error) { return s.Ancestors("iris/m2", 2) },
			[]string{"gpu:GPU-abc@2", "iris/d2@2", "iris/d3@2", "iris/d4@2", "iris/d5@2", "iris/d6@2", "iris/r2@1"}},
		{"ancestors of m2, unlimited", func() ([]storage.Node, error) { return s.Ancestors("iris/m2", 0) },
			[]string{"gpu:GPU-abc@2", "iris/d2@2", "iris/d3@2", "iris/d4@2", "iris/d5@2", "iris/d6@2", "iris/r2@1", "uid:1000@3"}},
		{"ancestors of d1", func() ([]storage.Node, error) { return s.Ancestors("iris/d1", 0) }, nil},
		{"descendants of d1, depth 2", func() ([]storage.Node, error) { return s.Descendants("iris/d1", 2) },
			[]string{"iris/m1@2", "iris/r1@1"}},
		{"descendants of d1, unlimited", func() ([]storage.Node, error) { return s.Descendants("iris/d1", 0) },
			[]string{"iris/e1@3", "iris/e2@4", "iris/e3@3", "iris/m1@2", "iris/r1@1"}},
		{"impact of d5", func() ([]storage.Node, error) { return s.Impact("iris/d5") },
			[]string{"iris/e2@3", "iris/e3@4", "iris/m2@2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.query()
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, ids(got)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestBlobs(t *testing.T) {
	s := storagetest.Open(t)
	content := strings.Repeat("kiln", 100000)
	ref := putBlob(t, s, content)
	if ref.Size != int64(len(content)) || !strings.HasPrefix(ref.Digest, "sha256:") {
		t.Fatalf("ref = %+v", ref)
	}
	if again := putBlob(t, s, content); again != ref {
		t.Errorf("second Put = %+v, want %+v", again, ref)
	}
	f, err := s.OpenBlob(ref)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := s.OpenBlob(storage.BlobRef{Digest: ref.Digest, Size: 3}); !errors.Is(err, storage.ErrBlobMismatch) {
		t.Errorf("OpenBlob(wrong size) = %v, want ErrBlobMismatch", err)
	}
	if _, err := s.OpenBlob(storage.BlobRef{Digest: "sha256:" + strings.Repeat("0", 64)}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("OpenBlob(missing) = %v, want ErrNotFound", err)
	}
	if err := s.VerifyBlob(ref); err != nil {
		t.Errorf("VerifyBlob: %v", err)
	}
	for _, dstDir := range []string{t.TempDir(), "/dev/shm"} { // same fs (link) and, where tmpfs, another (copy)
		if _, err := os.Stat(dstDir); err != nil {
			continue
		}
		dst := filepath.Join(dstDir, fmt.Sprintf("kiln-link-%d", time.Now().UnixNano()))
		if err := s.LinkBlob(ref, dst); err != nil {
			t.Fatalf("LinkBlob to %s: %v", dst, err)
		}
		got, _ := os.ReadFile(dst)
		st, _ := os.Stat(dst)
		os.Remove(dst)
		if string(got) != content || st.Mode().Perm()&0o222 != 0 {
			t.Errorf("linked %s: %d bytes, mode %v; want the content, read-only", dst, len(got), st.Mode())
		}
	}
	p, _ := s.BlobPath(ref.Digest)
	if !strings.HasSuffix(p, filepath.Join("sha256", ref.Digest[7:9], ref.Digest[7:])) {
		t.Errorf("BlobPath = %s", p)
	}
	// A cancelled Put leaves nothing behind.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.PutBlob(ctx, strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Put = %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs", "tmp")); len(ents) != 0 {
		t.Errorf("cancelled Put left %d temp files", len(ents))
	}
}

func TestGCKeepsReferenced(t *testing.T) {
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	s := storagetest.OpenAt(t, t.TempDir(), storage.Options{Now: now})
	data := putBlob(t, s, "dataset bytes")
	orphan := putBlob(t, s, "nobody names me")
	var modelBlobs []storage.BlobRef
	mustUpdate(t, s, func(tx *storage.Tx) error {
		if _, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted, Train: &data}); err != nil {
			return err
		}
		_, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetQuarantined, Reason: "bad"})
		return err
	})
	for i := 1; i <= 4; i++ {
		b := putBlob(t, s, fmt.Sprint("model weights ", i))
		modelBlobs = append(modelBlobs, b)
		mustUpdate(t, s, func(tx *storage.Tx) error {
			r, err := tx.CreateRun(storage.Run{Pipeline: "iris", Datasets: []string{"iris/d1"}, State: storage.RunSucceeded,
				Image: fmt.Sprintf("sha256:%064d", i), LogPath: fmt.Sprintf("/var/lib/kiln/runs/iris-r%d/log", i), Finished: now()})
			if err != nil {
				return err
			}
			m, err := tx.CreateModel(storage.Model{Pipeline: "iris", Run: r.ID, State: storage.ModelRetired,
				Files: []storage.FileRef{{Path: "model.json", Blob: b}}, ServeImage: fmt.Sprintf("sha256:%064d", 100+i)})
			if err != nil {
				return err
			}
			if i == 1 { // the oldest model is live: kept despite retention 2
				m.State = storage.ModelLive
				if err := tx.PutModel(m); err != nil {
					return err
				}
				_, err = tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: m.ID})
			}
			return err
		})
	}
	advance(48 * time.Hour)
	policy := storage.GCPolicy{KeepModels: map[string]int{"iris": 2}, QuarantineAge: 24 * time.Hour, RunLogAge: 24 * time.Hour, BlobGrace: time.Nanosecond}
	dry := policy
	dry.DryRun = true
	time.Sleep(10 * time.Millisecond) // past the blob grace
	plan, err := s.GC(context.Background(), dry)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), policy)
	if err != nil {
		t.Fatal(err)
	}
	plan.DryRun, plan.Took, rep.Took = false, "", ""
	if d := cmp.Diff(plan, rep); d != "" {
		t.Errorf("dry run differs from the real one (-dry +real):\n%s", d)
	}
	want := storage.GCReport{
		KeptModels:        []string{"iris/m1", "iris/m3", "iris/m4"},
		PrunedModels:      []string{"iris/m2"},
		Protected:         rep.Protected,
		DeletedBlobs:      sortRefs([]storage.BlobRef{orphan, modelBlobs[1]}),
		FreedBytes:        orphan.Size + modelBlobs[1].Size,
		ExpiredQuarantine: []string{"iris/d2"},
		KeepImages: []string{fmt.Sprintf("sha256:%064d", 1), fmt.Sprintf("sha256:%064d", 3), fmt.Sprintf("sha256:%064d", 4),
			fmt.Sprintf("sha256:%064d", 101), fmt.Sprintf("sha256:%064d", 103), fmt.Sprintf("sha256:%064d", 104)},
	}
	for i := 1; i <= 4; i++ {
		want.ExpiredRunLogs = append(want.ExpiredRunLogs, storage.RunLog{Run: fmt.Sprint("iris/r", i), Path: fmt.Sprintf("/var/lib/kiln/runs/iris-r%d/log", i)})
	}
	rep.DeletedBlobs = sortRefs(rep.DeletedBlobs)
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("GC report (-want +got):\n%s", d)
	}
	for _, b := range []storage.BlobRef{data, modelBlobs[0], modelBlobs[2], modelBlobs[3]} {
		if err := s.VerifyBlob(b); err != nil {
			t.Errorf("referenced blob gone: %v", err)
		}
	}
	if m, _ := s.Model("iris/m2"); !m.Pruned {
		t.Errorf("iris/m2 not marked pruned: %+v", m)
	}
	if rep2, _ := s.GC(context.Background(), policy); len(rep2.DeletedBlobs)+len(rep2.PrunedModels)+len(rep2.ExpiredRunLogs) != 0 {
		t.Errorf("second GC still found work: %+v", rep2)
	}
	rec, err := s.Reconcile(context.Background())
	if err != nil || len(rec.MissingBlobs) != 0 {
		t.Errorf("Reconcile after GC: %+v, %v", rec, err)
	}
}

func sortRefs(r []storage.BlobRef) []storage.BlobRef {
	slices.SortFunc(r, func(a, b storage.BlobRef) int { return strings.Compare(a.Digest, b.Digest) })
	return r
}

func TestReconcileReportsMissingBlob(t *testing.T) {
	s := storagetest.Open(t)
	b := putBlob(t, s, "will vanish")
	mustUpdate(t, s, func(tx *storage.Tx) error {
		_, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted, Train: &b})
		return err
	})
	p, _ := s.BlobPath(b.Digest)
	os.Remove(p)
	rep, err := s.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("%s (size %d) needed by iris/d1", b.Digest, b.Size)}
	if d := cmp.Diff(want, rep.MissingBlobs); d != "" {
		t.Errorf("MissingBlobs (-want +got):\n%s", d)
	}
	if d := cmp.Diff(rep, s.LastReconcile()); d != "" {
		t.Errorf("LastReconcile differs:\n%s", d)
	}
	free, total, err := s.DiskFree()
	if err != nil || free == 0 || total < free {
		t.Errorf("DiskFree = %d, %d, %v", free, total, err)
	}
}

func TestBackupUnderLoad(t *testing.T) {
	s := storagetest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				s.Append(ctx, storage.Event{Kind: "load", Details: map[string]string{"w": fmt.Sprint(w), "i": fmt.Sprint(i)}})
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	var buf bytes.Buffer
	n, err := s.Backup(&buf, nil)
	cancel()
	wg.Wait()
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("Backup = %d, %v (buffer %d)", n, err, buf.Len())
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kiln.db"), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	b := storagetest.OpenAt(t, dir, storage.Options{})
	if err := b.Verify(context.Background()); err != nil {
		t.Fatalf("backup does not verify: %v", err)
	}
	seq, _ := b.Head()
	if seq == 0 {
		t.Errorf("backup holds no events")
	}
	t.Logf("backup %d bytes, %d events", n, seq)
}

func TestCordons(t *testing.T) {
	dir := t.TempDir()
	s := storagetest.OpenAt(t, dir, storage.Options{Now: fixedClock()})
	ctx := context.Background()
	err := s.Update(ctx, func(tx *storage.Tx) error {
		if err := tx.PutCordon(storage.Cordon{GPU: "GPU-a", Reason: "XID 79", Actor: "kilnd"}); err != nil {
			return err
		}
		return tx.PutCordon(storage.Cordon{GPU: "GPU-b", Reason: "maintenance", Actor: "uid:0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *storage.Tx) error { return tx.PutCordon(storage.Cordon{GPU: "GPU-c"}) }); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("cordon without a reason = %v; want ErrInvalid", err)
	}
	if err := s.Update(ctx, func(tx *storage.Tx) error { return tx.DeleteCordon("GPU-b") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *storage.Tx) error { return tx.DeleteCordon("GPU-b") }); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("lifting a cordon twice = %v; want ErrNotFound", err)
	}
	var got []storage.Cordon
	if err := s.View(func(tx *storage.Tx) (err error) { got, err = tx.Cordons(); return err }); err != nil {
		t.Fatal(err)
	}
	want := []storage.Cordon{{GPU: "GPU-a", Reason: "XID 79", Actor: "kilnd", Created: fixedClock()()}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cordons (-want +got):\n%s", diff)
	}
}

func TestPins(t *testing.T) {
	s := storagetest.Open(t)
	ctx := context.Background()
	if err := s.Update(ctx, func(tx *storage.Tx) error {
		return tx.PutPin(storage.Pin{Pipeline: "iris", Model: "iris/m3", Actor: "uid:0"})
	}); err != nil {
		t.Fatal(err)
	}
	err := s.View(func(tx *storage.Tx) error {
		p, ok, err := tx.Pin("iris")
		if err != nil || !ok || p.Model != "iris/m3" || p.Created.IsZero() {
			t.Errorf("Pin(iris) = %+v, %v, %v; want pinned to iris/m3", p, ok, err)
		}
		if _, ok, err := tx.Pin("pumps"); ok || err != nil {
			t.Errorf("Pin(pumps) = %v, %v; want not pinned", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *storage.Tx) error { return tx.DeletePin("iris") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *storage.Tx) error { return tx.DeletePin("iris") }); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("unpinning twice = %v; want ErrNotFound", err)
	}
}
