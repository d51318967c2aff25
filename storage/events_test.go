package storage_test

import (
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
	bolt "go.etcd.io/bbolt"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func TestAppendEventsHead(t *testing.T) {
	s := storagetest.OpenAt(t, t.TempDir(), storage.Options{Now: fixedClock()})
	ctx := context.Background()
	if seq, h := s.Head(); seq != 0 || h != "" {
		t.Fatalf("Head of empty store = %d %q, want 0 \"\"", seq, h)
	}
	in := []storage.Event{
		{Kind: "dataset.accepted", Pipeline: "iris", Refs: []string{"iris/d1"}, Details: map[string]string{"rows": "150"}},
		{Kind: "dataset.released", Pipeline: "iris", Actor: "uid:1000", Refs: []string{"iris/d2"}},
		{Kind: "kilnd.started"},
	}
	var want []storage.Event
	for _, e := range in {
		got, err := s.Append(ctx, e)
		if err != nil {
			t.Fatalf("Append(%+v): %v", e, err)
		}
		want = append(want, got)
	}
	if want[0].Seq != 1 || want[0].Prev != "" || want[1].Prev != want[0].Hash || want[2].Actor != "kilnd" {
		t.Errorf("chain fields wrong: %+v", want)
	}
	if seq, h := s.Head(); seq != 3 || h != want[2].Hash {
		t.Errorf("Head() = %d %s, want 3 %s", seq, h, want[2].Hash)
	}
	got, err := s.Events(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Events(1, 0) mismatch (-want +got):\n%s", d)
	}
	got, _ = s.Events(2, 1)
	if d := cmp.Diff(want[1:2], got); d != "" {
		t.Errorf("Events(2, 1) mismatch (-want +got):\n%s", d)
	}
	if err := s.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if _, err := s.Append(ctx, storage.Event{}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Append(empty kind) = %v, want ErrInvalid", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	s := storagetest.Open(t)
	ctx := context.Background()
	const writers, each = 8, 150
	var wg sync.WaitGroup
	seqs := make(chan uint64, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, err := s.Append(ctx, storage.Event{Kind: "test", Details: map[string]string{"w": fmt.Sprint(w), "i": fmt.Sprint(i)}})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				seqs <- e.Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for q := range seqs {
		if seen[q] {
			t.Fatalf("seq %d acknowledged twice", q)
		}
		seen[q] = true
	}
	for q := uint64(1); q <= writers*each; q++ {
		if !seen[q] {
			t.Fatalf("seq %d never acknowledged (gap)", q)
		}
	}
	if err := s.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestGroupFailureIsolated(t *testing.T) {
	s := storagetest.Open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(ctx, func(tx *storage.Tx) error {
				if _, err := tx.Append(storage.Event{Kind: fmt.Sprint("k", i)}); err != nil {
					return err
				}
				if i%5 == 0 {
					return fmt.Errorf("update %d fails", i)
				}
				if i%7 == 0 {
					panic("boom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		wantErr := i%5 == 0 || i%7 == 0
		if (err != nil) != wantErr {
			t.Errorf("update %d: err = %v, want error %v", i, err, wantErr)
		}
		if err == nil {
			ok++
		}
	}
	if seq, _ := s.Head(); seq != uint64(ok) {
		t.Errorf("Head seq = %d, want %d (only successful updates append)", seq, ok)
	}
	if err := s.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// tamper edits the closed database at path directly through bbolt.
func tamper(t *testing.T, path string, fn func(b *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("events"))) }); err != nil {
		t.Fatal(err)
	}
}

func key(seq uint64) []byte {
	return []byte{byte(seq >> 56), byte(seq >> 48), byte(seq >> 40), byte(seq >> 32), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
}

func TestVerifyCatchesTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(b *bolt.Bucket) error
		wantSeq string
	}{
		{"edited detail", func(b *bolt.Bucket) error {
			v := append([]byte(nil), b.Get(key(5))...)
			return b.Put(key(5), []byte(strings.Replace(string(v), `"n":"5"`, `"n":"6"`, 1)))
		}, "event 5"},
		{"edited and rehashed", func(b *bolt.Bucket) error {
			v := append([]byte(nil), b.Get(key(4))...)
			body := []byte(strings.Replace(string(v[32:]), `"actor":"kilnd"`, `"actor":"uid:0"`, 1))
			sum := sha256sum(body)
			return b.Put(key(4), append(sum, body...))
		}, "event 5"}, // 4 is self-consistent; 5 no longer links to it
		{"deleted middle", func(b *bolt.Bucket) error { return b.Delete(key(3)) }, "event 3"},
		{"deleted last", func(b *bolt.Bucket) error { return b.Delete(key(8)) }, "event 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := storage.Open(dir, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 8; i++ {
				if _, err := s.Append(context.Background(), storage.Event{Kind: "k", Details: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			tamper(t, filepath.Join(dir, "kiln.db"), tt.tamper)
			s = storagetest.OpenAt(t, dir, storage.Options{})
			err = s.Verify(context.Background())
			if !errors.Is(err, storage.ErrChainBroken) || !strings.Contains(err.Error(), tt.wantSeq) {
				t.Errorf("Verify() = %v, want ErrChainBroken naming %q", err, tt.wantSeq)
			}
		})
	}
}

func TestSecondOpenerLocked(t *testing.T) {
	dir := t.TempDir()
	storagetest.OpenAt(t, dir, storage.Options{})
	start := time.Now()
	_, err := storage.Open(dir, storage.Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "kiln.db")) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q should be one line naming the db path", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("gave up after %s, before the lock timeout", took)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Append(context.Background(), storage.Event{Kind: "k"})
	s.Close()
	path := filepath.Join(dir, "kiln.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), key(storage.SchemaVersion+1))
	})
	db.Close()
	before, _ := os.ReadFile(path)
	_, err = storage.Open(dir, storage.Options{})
	if !errors.Is(err, storage.ErrNewerSchema) {
		t.Fatalf("Open = %v, want ErrNewerSchema", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Errorf("refused open changed the database file")
	}
}

func TestStateDirNotWritable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	dir := filepath.Join(f, "state")
	_, err := storage.Open(dir, storage.Options{})
	if err == nil || !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Open(%q) = %v, want a one-line error naming it", dir, err)
	}
}

func TestSubscribeBacklogThenLive(t *testing.T) {
	s := storagetest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 1; i <= 5; i++ {
		s.Append(ctx, storage.Event{Kind: fmt.Sprint("old", i)})
	}
	ch := s.Subscribe(ctx, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= 700; i++ { // more than one page of backlog+live
			if _, err := s.Append(ctx, storage.Event{Kind: fmt.Sprint("new", i)}); err != nil {
				t.Error(err)
			}
		}
	}()
	want := uint64(3)
	timeout := time.After(20 * time.Second)
	for want <= 705 {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed at seq %d", want)
			}
			if e.Seq != want {
				t.Fatalf("got seq %d, want %d", e.Seq, want)
			}
			want++
		case <-timeout:
			t.Fatalf("timed out waiting for seq %d", want)
		}
	}
	wg.Wait()
	cancel()
	for range ch { //nolint:revive // drain until closed
	}
}

func TestEventsFor(t *testing.T) {
	s := storagetest.Open(t)
	ctx := context.Background()
	for _, e := range []storage.Event{
		{Kind: "model.candidate", Refs: []string{"iris/r1", "iris/m1"}},
		{Kind: "run.queued", Refs: []string{"iris/r2"}},
		{Kind: "model.promoted", Refs: []string{"iris/m1", "iris/e1"}},
		{Kind: "model.candidate", Refs: []string{"iris/m10"}}, // a prefix of no interest to iris/m1
	} {
		if _, err := s.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.EventsFor("iris/m1")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Kind)
	}
	if want := []string{"model.candidate", "model.promoted"}; !slices.Equal(kinds, want) {
		t.Errorf("EventsFor(iris/m1) = %v; want %v", kinds, want)
	}
}
