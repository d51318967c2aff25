package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

const fixtureV1 = "testdata/v1.db"

// TestGenerateFixture writes testdata/v1.db, a schema-1 database, when
// KILN_GEN_FIXTURE=1. It spells out the version-1 layout by hand (not with
// today's code) so the fixture stays what version 1 wrote:
//
//	meta/{schema=1, head}, events/, seqs/, datasets/, runs/, models/, lineage/up/
//
// and no lineage/down, deploys, leases or blobrefs.
func TestGenerateFixture(t *testing.T) {
	if os.Getenv("KILN_GEN_FIXTURE") != "1" {
		t.Skip("set KILN_GEN_FIXTURE=1 to regenerate " + fixtureV1)
	}
	os.Remove(fixtureV1)
	db, err := bolt.Open(fixtureV1, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	be := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	rk := func(p string, n uint64) []byte { return append([]byte(p+"/"), be(n)...) }
	digest := func(s string) string { h := sha256.Sum256([]byte(s)); return "sha256:" + hex.EncodeToString(h[:]) }
	const ts = `"2025-06-01T10:00:00Z"`
	err = db.Update(func(tx *bolt.Tx) error {
		b := map[string]*bolt.Bucket{}
		for _, name := range []string{"meta", "events", "seqs", "datasets", "runs", "models", "lineage"} {
			var err error
			if b[name], err = tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		up, err := b["lineage"].CreateBucket([]byte("up"))
		if err != nil {
			return err
		}
		put := func(bk *bolt.Bucket, k []byte, v string) {
			if err == nil {
				err = bk.Put(k, []byte(v))
			}
		}
		put(b["meta"], []byte("schema"), string(be(1)))
		put(b["seqs"], []byte("iris/d"), string(be(2)))
		put(b["seqs"], []byte("iris/r"), string(be(1)))
		put(b["seqs"], []byte("iris/m"), string(be(1)))
		put(b["datasets"], rk("iris", 1), `{"v":1,"id":"iris/d1","pipeline":"iris","kind":"data","state":"accepted","rows":150,"train":{"digest":"`+digest("train1")+`","size":6},"created":`+ts+`,"updated":`+ts+`}`)
		put(b["datasets"], rk("iris", 2), `{"v":1,"id":"iris/d2","pipeline":"iris","kind":"data","state":"accepted","rows":30,"train":{"digest":"`+digest("train2")+`","size":6},"created":`+ts+`,"updated":`+ts+`}`)
		put(b["runs"], rk("iris", 1), `{"v":1,"id":"iris/r1","pipeline":"iris","state":"succeeded","datasets":["iris/d1","iris/d2"],"created":`+ts+`,"updated":`+ts+`}`)
		put(b["models"], rk("iris", 1), `{"v":1,"id":"iris/m1","pipeline":"iris","run":"iris/r1","state":"live","files":[{"path":"model.json","blob":{"digest":"`+digest("model1")+`","size":6}}],"metrics":{"accuracy":0.95},"created":`+ts+`,"updated":`+ts+`}`)
		put(up, []byte("iris/r1\x00iris/d1"), "trained_on")
		put(up, []byte("iris/r1\x00iris/d2"), "trained_on")
		put(up, []byte("iris/m1\x00iris/r1"), "produced")
		prev := ""
		var sum [32]byte
		for i, kind := range []string{"dataset.accepted", "dataset.accepted", "run.succeeded", "model.promoted"} {
			seq := uint64(i + 1)
			body := fmt.Sprintf(`{"v":1,"seq":%d,"time":%s,"actor":"kilnd","kind":%q,"pipeline":"iris","prev":%q}`, seq, ts, kind, prev)
			sum = sha256.Sum256([]byte(body))
			put(b["events"], be(seq), string(sum[:])+body)
			prev = hex.EncodeToString(sum[:])
		}
		put(b["meta"], []byte("head"), string(be(4))+string(sum[:]))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrateFromV1Fixture(t *testing.T) {
	src, err := os.ReadFile(fixtureV1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kiln.db"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	s := storagetest.OpenAt(t, dir, storage.Options{})
	ctx := context.Background()
	if err := s.Verify(ctx); err != nil {
		t.Errorf("Verify after upgrade: %v", err)
	}
	if seq, _ := s.Head(); seq != 4 {
		t.Errorf("Head seq = %d, want 4", seq)
	}
	m, err := s.Model("iris/m1")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != storage.ModelLive || m.Metrics["accuracy"] != 0.95 {
		t.Errorf("model after upgrade = %+v", m)
	}
	// lineage/down was built by migration 2.
	got, err := s.Descendants("iris/d2", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"iris/m1@2", "iris/r1@1"}, ids(got)); d != "" {
		t.Errorf("Descendants after upgrade (-want +got):\n%s", d)
	}
	// blobrefs was built by migration 3: the fixture's blobs do not exist.
	rep, err := s.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.MissingBlobs) != 3 {
		t.Errorf("MissingBlobs = %v, want the fixture's 3 blobs", rep.MissingBlobs)
	}
	// New writes continue the chain and the ID sequences.
	mustUpdate(t, s, func(tx *storage.Tx) error {
		d, err := tx.CreateDataset(storage.Dataset{Pipeline: "iris", Kind: storage.KindData, State: storage.DatasetAccepted})
		if err != nil {
			return err
		}
		if d.ID != "iris/d3" {
			return fmt.Errorf("new dataset ID %s, want iris/d3", d.ID)
		}
		_, err = tx.CreateDeployment(storage.Deployment{Pipeline: "iris", Model: "iris/m1"})
		return err
	})
	if _, err := s.Append(ctx, storage.Event{Kind: "after.upgrade"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx); err != nil {
		t.Errorf("Verify after new writes: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "kiln.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket([]byte("meta")).Get([]byte("schema"))); v != storage.SchemaVersion {
			t.Errorf("schema after upgrade = %d, want %d", v, storage.SchemaVersion)
		}
		return nil
	})
	if after, _ := os.ReadFile(fixtureV1); string(after) != string(src) {
		t.Errorf("the test changed the committed fixture")
	}
}

// TestMigrateDatasetFormats: migration 8 gives every dataset of a schema-7 database its
// format: csv or jsonl by a part's first byte (by the files' extensions when the part's blob
// is gone), files for a version holding files and no part, the late labels' by their files;
// a version rejected unread keeps none, and one that has a format keeps it.
func TestMigrateDatasetFormats(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blob := func(content string) *storage.BlobRef {
		ref, err := s.PutBlob(ctx, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		return &ref
	}
	meta := storage.FileRef{Path: ".kiln-dataset.json", Blob: *blob(`{"v":1}`)}
	file := func(name string) storage.FileRef {
		return storage.FileRef{Path: name, Blob: *blob("content of " + name)}
	}
	gone := storage.BlobRef{Digest: "sha256:" + strings.Repeat("ab", 32), Size: 5}
	cases := []struct {
		d    storage.Dataset
		want string
	}{
		{storage.Dataset{Train: blob("x,label\n1,a\n"), Files: []storage.FileRef{file("a.txt"), meta}}, "csv"},
		{storage.Dataset{Train: blob("\uFEFF \n{\"x\": 1, \"label\": \"a\"}\n"), Files: []storage.FileRef{file("a.data"), meta}}, "jsonl"},
		{storage.Dataset{Holdout: blob("{\"x\": 1}\n"), Files: []storage.FileRef{file("h.csv"), meta}}, "jsonl"},
		{storage.Dataset{Train: &gone, Files: []storage.FileRef{file("b.NDJSON"), meta}}, "jsonl"},
		{storage.Dataset{Train: &gone, Files: []storage.FileRef{file("b.csv"), meta}}, "csv"},
		{storage.Dataset{Files: []storage.FileRef{file("cam/1.jpg"), file("cam/2.jpg"), meta}}, "files"},
		{storage.Dataset{Kind: storage.KindFeedback, Feedback: storage.FeedbackLabels,
			Files: []storage.FileRef{file("late.jsonl"), file(".kiln-labels.csv"), meta}}, "jsonl"},
		{storage.Dataset{Kind: storage.KindFeedback, Feedback: storage.FeedbackLabels,
			Files: []storage.FileRef{file("late.csv"), file(".kiln-labels.csv"), meta}}, "csv"},
		{storage.Dataset{State: storage.DatasetQuarantined, Files: []storage.FileRef{meta}}, ""},
		{storage.Dataset{Format: "images", Files: []storage.FileRef{file("cat/1.png"), meta}}, "images"},
	}
	mustUpdate(t, s, func(tx *storage.Tx) error {
		for i := range cases {
			d := cases[i].d
			d.Pipeline = "p"
			if d.Kind == "" {
				d.Kind = storage.KindData
			}
			if d.State == "" {
				d.State = storage.DatasetAccepted
			}
			if _, err := tx.CreateDataset(d); err != nil {
				return err
			}
		}
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a schema-7 database: the records as schema 7 wrote them (no format, except the
	// one case that checks a format is kept), and its schema number.
	db, err := bolt.Open(filepath.Join(dir, "kiln.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 7))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s = storagetest.OpenAt(t, dir, storage.Options{})
	err = s.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets("p")
		if err != nil {
			return err
		}
		if len(ds) != len(cases) {
			return fmt.Errorf("%d datasets after the upgrade, want %d", len(ds), len(cases))
		}
		for i, d := range ds {
			if d.Format != cases[i].want {
				t.Errorf("%s (train %v, files %v): format %q, want %q", d.ID, d.Train, d.Files, d.Format, cases[i].want)
			}
			if d.Created.IsZero() || len(d.Files) != len(cases[i].d.Files) {
				t.Errorf("%s changed beyond its format: %+v", d.ID, d)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Reconcile(ctx); err != nil || len(rep.MissingBlobs) != 1 {
		t.Errorf("Reconcile after the upgrade: %+v, %v; want only the gone part missing (blob references kept)", rep, err)
	}
}
