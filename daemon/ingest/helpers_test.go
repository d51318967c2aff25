package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

// spec parses a pipeline spec whose data section is dataYAML (indented under data:).
func spec(t testing.TB, name, dataYAML string, extra ...string) *config.Pipeline {
	t.Helper()
	y := "data:\n" + indent(dataYAML) + "train: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n" + strings.Join(extra, "\n")
	p, err := config.ParsePipeline(name+".yaml", []byte(y))
	if err != nil {
		t.Fatalf("spec %s: %v\n%s", name, err, y)
	}
	return p
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// env is one manager on a real store and real folders, with real inotify.
type env struct {
	t      testing.TB
	root   string
	store  *storage.Store
	m      *Manager
	cancel context.CancelFunc
	done   chan error
	obs    chan Observation
	mu     sync.Mutex
	status []string
}

func (e *env) drop(p string) string       { return filepath.Join(e.root, "drop", p) }
func (e *env) feedback(p string) string   { return filepath.Join(e.root, "feedback", p) }
func (e *env) quarantine(p string) string { return filepath.Join(e.root, "quarantine", p) }

func newEnv(t testing.TB, specs ...*config.Pipeline) *env {
	t.Helper()
	root, err := os.MkdirTemp("", "kin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	e := &env{t: t, root: root}
	e.store = storagetest.OpenAt(t, filepath.Join(root, "state"), storage.Options{})
	e.start(specs...)
	return e
}

func (e *env) start(specs ...*config.Pipeline) {
	e.t.Helper()
	e.obs = make(chan Observation, 1<<17)
	m, err := New(Options{
		Store: e.store, DropDir: filepath.Join(e.root, "drop"), FeedbackDir: filepath.Join(e.root, "feedback"),
		QuarantineDir: filepath.Join(e.root, "quarantine"),
		Log:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Status:        func(s string) { e.mu.Lock(); e.status = append(e.status, s); e.mu.Unlock() },
		Observe: func(o Observation) {
			select {
			case e.obs <- o:
			default:
			}
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	set := map[string]*config.Pipeline{}
	for _, s := range specs {
		set[s.Name] = s
	}
	m.SetPipelines(set)
	ctx, cancel := context.WithCancel(context.Background())
	e.m, e.cancel, e.done = m, cancel, make(chan error, 1)
	go func() { e.done <- m.Run(ctx) }()
	e.t.Cleanup(e.stop)
	// Run creates the folders: wait for them.
	for _, s := range specs {
		e.waitFor("folders of "+s.Name, 5*time.Second, func() bool {
			_, err1 := os.Stat(e.drop(s.Name))
			_, err2 := os.Stat(e.feedback(s.Name))
			return err1 == nil && err2 == nil && slices.Contains(m.Status().Pipelines, s.Name)
		})
	}
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("Run: %v", err)
	}
	e.cancel = nil
}

func (e *env) waitFor(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitProgress waits until cond reports done, failing only when its progress
// count has not moved for stall.
func (e *env) waitProgress(what string, stall time.Duration, cond func() (progress int64, done bool)) {
	e.t.Helper()
	last, moved := int64(-1), time.Now()
	for {
		n, done := cond()
		if done {
			return
		}
		if n != last {
			last, moved = n, time.Now()
		} else if time.Since(moved) > stall {
			e.t.Fatalf("waiting for %s: no progress for %s (at %d)", what, stall, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) datasets(p string) []storage.Dataset {
	e.t.Helper()
	var ds []storage.Dataset
	if err := e.store.View(func(tx *storage.Tx) error {
		var err error
		ds, err = tx.Datasets(p)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func (e *env) waitDatasets(p string, n int, d time.Duration) []storage.Dataset {
	e.t.Helper()
	var ds []storage.Dataset
	e.waitFor(fmt.Sprintf("%d datasets in %s", n, p), d, func() bool {
		ds = e.datasets(p)
		return len(ds) >= n
	})
	return ds
}

func (e *env) events(kind string) []storage.Event {
	e.t.Helper()
	evs, err := e.store.Events(0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []storage.Event
	for _, ev := range evs {
		if kind == "" || ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) blob(ref *storage.BlobRef) string {
	e.t.Helper()
	if ref == nil {
		return ""
	}
	f, err := e.store.OpenBlob(*ref)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) meta(d storage.Dataset) *Meta {
	e.t.Helper()
	m, err := ReadMeta(e.store, d)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// renameIn writes content under a staging name in the same folder (ignored: a dot name) and
// renames it into place, as a careful writer does.
func renameIn(t testing.TB, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".staging")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func entries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// csvRows makes a CSV with n rows of two numeric features and a label.
func csvRows(n, offset int) string {
	var b strings.Builder
	b.WriteString("x,y,label\n")
	for i := range n {
		fmt.Fprintf(&b, "%d,%d.5,%s\n", i+offset, (i+offset)%7, []string{"a", "b"}[(i+offset)%2])
	}
	return b.String()
}
